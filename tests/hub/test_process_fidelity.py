"""PROCESS.md's rules beyond the seven scenarios, played through the SDK against a real hub.

Each test quotes the rule it plays; the steps are written from PROCESS.md's words.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog

from schakel.adapters.client import Delivery, PartnerClient, Refusal
from schakel.contracts.enums import (
    CaseState,
    DataCategory,
    Decision,
    InvitationScope,
    MessageType,
    ReasonCode,
)
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.ids import (
    CaseId,
    OrgId,
    case_id_for,
    new_case_id,
    new_message_id,
    org_type_of,
)
from schakel.contracts.policy import ClosureReason, default_policy
from schakel.contracts.topology import CASES_BUCKET, MESSAGES_BUCKET
from schakel.harness.local import LocalHub, local_hub
from schakel.harness.simulation import ScenarioRunner, Step
from schakel.hub.audit import read_trail
from schakel.hub.logconfig import configure_logging
from schakel.hub.stores import KvCaseStore
from schakel.keys.envelope import frame, seal, split_envelope
from schakel.keys.identity import PartnerIdentity, PublicKeyRecord

M = MessageType
R = ReasonCode
GEM, ZVH, POL, OM = "GEM.westerstad", "ZVH.west", "POL.west", "OM.west"
GEM_O, ZVH_O, POL_O, OM_O = "GEM.oosterdorp", "ZVH.oost", "POL.oost", "OM.oost"
IND, KMAR, RVDK = "IND.landelijk", "KMAR.landelijk", "RVDK.noord"
DJI, RN = "DJI.vught", "RN.ter"
UNREGISTERED = "EXT.keys-only"  # keys in the directory, not in the partner registry
ORGS = (GEM, ZVH, POL, OM, GEM_O, ZVH_O, POL_O, OM_O, IND, KMAR, RVDK, DJI, RN, UNREGISTERED)
KERN = (ZVH, POL, OM)
CANARY = "jansenpiet"  # as a person's name would sit in an identifier


@pytest.fixture(scope="module")
def identities() -> dict[str, PartnerIdentity]:
    yesterday = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    return {org: PartnerIdentity.generate(OrgId(org), now=yesterday) for org in ORGS}


@pytest.fixture
async def system(tmp_path: Path, identities: dict[str, PartnerIdentity]) -> AsyncIterator[LocalHub]:
    async with local_hub(identities, data_dir=tmp_path) as running:
        yield running


def _runner(system: LocalHub) -> ScenarioRunner:
    return ScenarioRunner(system.clients, default_policy())


def _escalate(case: str = "A") -> list[Step]:
    return [
        Step(POL, M.M1, (GEM, ZVH), case=case),
        Step(ZVH, M.M3, (OM,), case=case, expect_state=CaseState.WEGING),
        Step(GEM, M.M5, KERN, case=case, decision=Decision.OPSCHALEN,
             expect_state=CaseState.CASUSOVERLEG),
        Step(ZVH, M.M6, (IND,), case=case, invitation=f"{case}-co"),
        Step(IND, M.M6R, (ZVH,), case=case, invitation=f"{case}-co"),
        Step(IND, M.M7, (ZVH,), case=case, topic=DataCategory.VERBLIJFSRECHTELIJK),
    ]  # fmt: skip


async def _case(system: LocalHub, case_id: CaseId) -> tuple[CaseState | None, object]:
    assert system.hub is not None and system.hub.bus is not None
    record, _ = await KvCaseStore(await system.hub.bus.kv(CASES_BUCKET)).get(case_id)
    return (record.state, record) if record else (None, None)


async def test_invitations_and_participation_end_at_closure(system: LocalHub) -> None:
    """ "Invitations ... end when the case closes. After closure a former invitee is denied."
    Also on the case re-opened by a new signal ("a new signal about a closed case within
    retention re-opens INTAKE"): the invitee is neither asked nor heard at its weging."""
    await _runner(system).run([
        *_escalate(),
        Step(GEM, M.M10, (ZVH, POL, OM, IND), decision=Decision.AFSLUITEN,
             expect_state=CaseState.AFGESLOTEN),
        Step(IND, M.M7, (ZVH,), expect=R.NOT_PERMITTED, note="former invitee, closed case"),
        Step(IND, M.M1, (GEM, ZVH), expect=R.NOT_PERMITTED, note="former invitee re-opens"),
        Step(POL, M.M1, (GEM, ZVH), note="a new signal re-opens the case",
             expect_state=CaseState.INTAKE),
        Step(IND, M.M7, (ZVH,), expect=R.NOT_PERMITTED, note="former invitee, re-opened"),
        Step(ZVH, M.M3, (IND,), expect=R.NOT_PERMITTED, note="weging question to it"),
        Step(IND, M.M4, (ZVH,), expect=R.NOT_PERMITTED, note="its weging answer"),
        Step(ZVH, M.M3, (POL,), note="the kern goes on", expect_state=CaseState.WEGING),
    ])  # fmt: skip


async def test_a_revoked_invitation_ends_participation(system: LocalHub) -> None:
    """Invitations are "revocable": a revoked invitee may no longer act on the case, not even
    through a message that needs no invitation (DJI's MAR input, which moves the case)."""
    await _runner(system).run([
        *_escalate(),
        Step(ZVH, M.M6, (DJI,), invitation="A-mar", scope=InvitationScope.MAR),
        Step(DJI, M.M6R, (ZVH,), invitation="A-mar", scope=InvitationScope.MAR),
        Step(ZVH, M.M6, (DJI,), invitation="A-mar", scope=InvitationScope.MAR,
             decision=Decision.INTREKKEN, note="revoked"),
        Step(DJI, M.M13, (GEM,), expect=R.NOT_PERMITTED, note="MAR input after revocation"),
        Step(DJI, M.M14, (GEM,), expect=R.NOT_PERMITTED, note="uitstroom after revocation"),
    ])  # fmt: skip


async def test_a_re_opened_case_keeps_its_regie(system: LocalHub) -> None:
    """ "A new signal about a closed case within retention re-opens INTAKE": the same case,
    under the same regie-gemeente, which a signal cannot change."""
    await _runner(system).run([
        *_escalate(),
        Step(GEM, M.M10, (ZVH, POL, OM), decision=Decision.AFSLUITEN),
        Step(POL, M.M1, (GEM, ZVH), regie="GEM.zeedorp", expect=R.HEADER_FIELDS_INVALID,
             note="re-opening under another regie"),
    ])  # fmt: skip


async def test_a_handover_closes_the_case_and_opens_one_for_the_new_region(
    system: LocalHub,
) -> None:
    """M16 "(person moves)", c12 "the new gemeente and its region's kern": they receive it; the
    old case is closed as handed over and its kern refused afterwards; the new case inherits
    nothing but the handover, so a former invitee needs a new invitation."""
    runner = _runner(system)
    await runner.run([
        *_escalate(),
        Step(GEM, M.M16, (GEM_O, POL), handover_to=GEM_O, expect=R.NOT_PERMITTED,
             note="to the old region's police"),
        Step(POL, M.M16, (GEM_O, ZVH_O, POL_O, OM_O), handover_to=GEM_O,
             expect=R.NOT_PERMITTED, note="police may not hand over"),
        Step(GEM, M.M16, (GEM_O, ZVH_O, POL_O, OM_O), handover_to=GEM_O, opens="B",
             note="handover to the new gemeente and its kern",
             expect_state=CaseState.AFGESLOTEN),
        Step(POL, M.M7, (ZVH,), expect=R.STATE_NOT_ALLOWED, note="old kern, old case"),
        Step(POL, M.M1, (GEM, ZVH), expect=R.STATE_NOT_ALLOWED,
             note="the handed-over case is not re-opened"),
        Step(IND, M.M7, (ZVH_O,), case="B", expect=R.NOT_PERMITTED,
             note="former invitee, new case"),
        Step(POL, M.M7, (ZVH_O,), case="B", expect=R.NOT_PERMITTED, note="old kern, new case"),
        Step(GEM, M.M7, (ZVH_O,), case="B", expect=R.NOT_PERMITTED,
             note="old gemeente, new case"),
        Step(ZVH_O, M.M3, (POL_O,), case="B", regie=GEM_O, expect_state=CaseState.WEGING,
             note="the new region's weging"),
        Step(GEM_O, M.M5, (ZVH_O, POL_O, OM_O), case="B", regie=GEM_O,
             decision=Decision.OPSCHALEN, expect_state=CaseState.CASUSOVERLEG),
        Step(ZVH_O, M.M6, (IND,), case="B", invitation="B-co", note="invited anew"),
        Step(IND, M.M6R, (ZVH_O,), case="B", invitation="B-co"),
        Step(IND, M.M7, (ZVH_O,), case="B", topic=DataCategory.VERBLIJFSRECHTELIJK),
    ])  # fmt: skip
    old_state, old = await _case(system, runner.case_id("A"))
    assert old_state is CaseState.AFGESLOTEN
    assert getattr(old, "closure", None) is ClosureReason.OVERGEDRAGEN
    new_state, new = await _case(system, runner.case_id("B"))
    assert new_state is CaseState.CASUSOVERLEG
    assert getattr(new, "regie_gemeente", None) == GEM_O


async def test_recipients_must_be_registered_partners(system: LocalHub) -> None:
    """ "Every recipient must be a registered partner": keys in the directory are not enough,
    neither to be invited nor to send."""
    await _runner(system).run([
        *_escalate(),
        Step(ZVH, M.M6, (UNREGISTERED,), invitation="x", expect=R.NOT_PERMITTED,
             note="invitation to an organisation with keys only"),
        Step(UNREGISTERED, M.M1, (GEM, ZVH), case="U", expect=R.NOT_PERMITTED,
             note="signal from it"),
        Step(ZVH, M.M8, (IND,), plan_for=UNREGISTERED, expect=R.NOT_PERMITTED,
             note="a plan part named for it"),
    ])  # fmt: skip


async def test_only_the_regie_moves_the_case_through_intake_and_weging(system: LocalHub) -> None:
    """ "INTAKE -> WEGING / AFGESLOTEN_ZONDER_PGA ... regie-gemeente": the police's question
    does not register the weging; WEGING <-> MEER_INFORMATIE goes both ways."""
    runner = _runner(system)
    await runner.run([
        Step(RVDK, M.M1, (ZVH,)),
        Step(ZVH, M.M2, (RVDK,), expect_state=CaseState.INTAKE),
        Step(POL, M.M3, (OM,), note="the police asks", expect_state=CaseState.INTAKE),
    ])  # fmt: skip
    assert (await _case(system, runner.case_id("A")))[0] is CaseState.INTAKE
    await runner.run([
        Step(GEM, M.M5, KERN, decision=Decision.OPSCHALEN, expect=R.STATE_NOT_ALLOWED,
             note="no escalation from INTAKE"),
        Step(GEM, M.M3, (POL, OM), expect_state=CaseState.WEGING),
        Step(GEM, M.M5, KERN, decision=Decision.MEER_INFORMATIE,
             expect_state=CaseState.MEER_INFORMATIE),
        Step(POL, M.M3, (OM,), expect_state=CaseState.MEER_INFORMATIE),
    ])  # fmt: skip
    assert (await _case(system, runner.case_id("A")))[0] is CaseState.MEER_INFORMATIE
    await runner.run([Step(ZVH, M.M3, (POL,), expect_state=CaseState.WEGING)])
    assert (await _case(system, runner.case_id("A")))[0] is CaseState.WEGING


async def _notice(client: PartnerClient) -> Refusal:
    item = await client.receive(timeout=30)
    assert isinstance(item, Refusal), item
    await item.ack()
    return item


async def test_case_ids_are_not_the_senders_choice(system: LocalHub) -> None:
    """ "The case id is an opaque random token": a new signal's id follows from the signal
    itself; an id the sender makes up opens nothing and is refused as a case without access
    is ("no access" and "no such case" look the same), for every message type."""
    pol, zvh = system.client(POL), system.client(ZVH)
    body = example_body(M.M1)
    sent = await pol.send(body, example_draft(M.M1, body), [OrgId(ZVH)])
    item = await zvh.receive(timeout=30)
    assert isinstance(item, Delivery)
    assert item.header.case_id == case_id_for(sent)
    await item.ack()
    chosen = CaseId("case-" + CANARY + "a" * 16)
    await pol.send(body, example_draft(M.M1, body, case_id=chosen), [OrgId(ZVH)])
    assert (await _notice(pol)).notice.reason is R.NOT_PERMITTED
    assert (await _case(system, chosen))[0] is None
    existing = case_id_for(sent)
    policy = default_policy()
    involved = {GEM, ZVH, POL, OM}  # the case's kern (the signal went to ZVH)
    compared = []
    for message_type in M:
        rule = policy.rule(message_type)
        if rule.case != "required":
            continue
        # a sender the matrix lets send this type, with no access to the case; a recipient
        # the matrix lets receive it: so that the refusal comes from the case, not the matrix
        senders = [o for o in ORGS if o not in involved and o != UNREGISTERED
                   and (c := policy.cell(message_type, org_type_of(o))) and c.send]  # fmt: skip
        receivers = [o for o in (ZVH, GEM, POL, OM, IND) if (c := policy.cell(
            message_type, org_type_of(o))) and c.receive]  # fmt: skip
        if not senders or not receivers:
            continue
        sender = system.client(senders[0])
        answers = []
        for case_id in (existing, new_case_id()):
            body = example_body(message_type)
            draft = example_draft(message_type, body, case_id=case_id)
            if message_type is M.M16:
                draft = draft.model_copy(update={"handover_to": GEM_O})
                body = body.model_copy(update={"nieuwe_gemeente": GEM_O})
            await sender.send(body, draft, [OrgId(receivers[0])])
            notice = (await _notice(sender)).notice
            answers.append((notice.reason, notice.text))
        assert answers[0] == answers[1], message_type
        compared.append(message_type)
    assert len(compared) >= 12, compared  # every case-bound type has an outside sender


def _forged(identity: PartnerIdentity, raw: bytes, **changes: object) -> bytes:
    """``raw`` with its header changed and signed again by ``identity`` (a partner may sign
    anything it likes with its own key)."""
    header_bytes, ciphertext, _ = split_envelope(raw)
    header = json.loads(header_bytes)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(header.get(key), dict):
            header[key] = {**header[key], **value}
        else:
            header[key] = value
    canonical = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return frame(canonical.encode("ascii"), ciphertext, identity.signing_key)


async def test_refused_input_leaves_no_trace_in_the_metadata(
    tmp_path: Path, identities: dict[str, PartnerIdentity]
) -> None:
    """ "No names, BSN or birth dates in subjects, headers, logs or the audit trail": a name
    (or a BSN-shaped number) in a refused header appears nowhere in the hub's records, logs,
    notices or storage, in any of the fields below. (Not covered: the hex digits of the UUIDs a
    sender chooses, its message and invitation ids; see THREAT_MODEL.md.)"""
    log = io.StringIO()
    configure_logging(json=True, stream=log)
    try:
        async with local_hub(identities, data_dir=tmp_path) as system:
            assert system.hub is not None and system.hub.bus is not None
            pol = system.client(POL)
            records = [identities[o].public_record() for o in (GEM, ZVH)]
            stranger = PartnerIdentity.generate(OrgId("EXT." + CANARY)).public_record()
            body = example_body(M.M1)

            def signal(to: list[PublicKeyRecord], **draft: object) -> bytes:
                base = example_draft(M.M1, body).model_copy(update=draft)
                return seal(body, base, sender=identities[POL], recipients=to)

            bsn = 123456782
            attacks = [
                _forged(identities[POL], signal(records), **{f"{CANARY}_naam": 1}),
                _forged(identities[POL], signal(records), contract_version=bsn),
                _forged(identities[POL], signal(records), sender={"org": "EXT." + CANARY}),
                signal(records, case_id=CaseId("case-" + CANARY + "b" * 16)),
                signal([*records, stranger]),
            ]
            for raw in attacks:
                await pol.publish_raw(raw, new_message_id())
                notice = await _notice(pol)
                assert CANARY not in notice.notice.text
                assert str(bsn) not in notice.notice.text
            trail = [raw async for _, raw in read_trail(system.hub.bus)]
            refused = [json.loads(r) for r in trail if r and b'"refused"' in r]
            assert len(refused) >= len(attacks)
            stored: list[bytes] = list(trail)
            for bucket in (CASES_BUCKET, MESSAGES_BUCKET):
                kv = await system.hub.bus.kv(bucket)
                for key in await kv.keys():
                    entry = await kv.get(key)
                    stored.append(key.encode() + (entry.value if entry else b""))
            await system.hub.bus.flush()
            assert system.server is not None
            for path in (system.server.data_dir / "jetstream").rglob("*"):
                # the partners' own inbound streams hold what they uploaded until the hub
                # has taken it; everything else is the hub's
                if path.is_file() and "SCHAKEL_IN_" not in str(path):
                    stored.append(path.read_bytes())
    finally:
        structlog.reset_defaults()
    for blob in stored:
        assert CANARY.encode() not in blob
        assert str(bsn).encode() not in blob
    assert CANARY not in log.getvalue()
    assert str(bsn) not in log.getvalue()
