"""The policy engine as pure functions: rules the end-to-end scenarios do not reach."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from schakel.contracts.enums import (
    CaseState,
    Decision,
    InvitationScope,
    LegalBasis,
    MessageType,
    Purpose,
    ReasonCode,
)
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.header import EnvelopeHeader, InvitationRef, decode_header
from schakel.contracts.ids import CaseId, OrgId, case_id_for, new_case_id, new_message_id
from schakel.contracts.policy import ClosureReason, Policy, default_policy
from schakel.hub.cases import CaseRecord, Invitation, InvitationStatus
from schakel.hub.policy import Allow, Context, Refuse, decide
from schakel.hub.registry import default_registry
from schakel.keys.envelope import seal, split_envelope
from schakel.keys.identity import PartnerIdentity

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
ORGS = ("GEM.westerstad", "GEM.oosterdorp", "GEM.zeedorp", "ZVH.west", "ZVH.oost", "POL.west",
        "POL.oost", "OM.west", "OM.oost", "NCTV.nl", "LIV.landelijk", "IND.landelijk")  # fmt: skip
IDS = {o: PartnerIdentity.generate(OrgId(o), now=NOW - dt.timedelta(days=1)) for o in ORGS}


def header(
    sender: str, mt: MessageType, to: tuple[str, ...], case: CaseId | None, **fields: Any
) -> EnvelopeHeader:
    body_args = {k: fields.pop(k) for k in ("decision", "scope", "plan_for") if k in fields}
    body = example_body(mt, **body_args)
    if mt is MessageType.M16:
        body = body.model_copy(update={"nieuwe_gemeente": fields.get("handover_to")})
    draft = example_draft(mt, body, case_id=case).model_copy(update=fields)
    raw = seal(
        body, draft, sender=IDS[sender], recipients=[IDS[o].public_record() for o in to], now=NOW
    )
    return decode_header(split_envelope(raw)[0])


def case(state: CaseState, **changes: Any) -> CaseRecord:
    base = CaseRecord(
        case_id=new_case_id(),
        state=state,
        regie_gemeente=OrgId("GEM.westerstad"),
        melder=OrgId("POL.west"),
        participants=(OrgId("POL.west"), OrgId("ZVH.west")),
        created_at=NOW,
        updated_at=NOW,
    )
    return base.model_copy(update=changes)


def ctx(policy: Policy | None = None) -> Context:
    return Context(policy=policy or default_policy(), registry=default_registry(), now=NOW)


def with_flags(**flags: bool) -> Policy:
    policy = default_policy()
    return policy.model_copy(update={"flags": policy.flags.model_copy(update=flags)})


def test_nctv_invited_only_with_coordination_flag() -> None:
    """c5: an invitation to NCTV is refused unless the coordination-law flag is on."""
    record = case(CaseState.CASUSOVERLEG)
    ref = InvitationRef(id=new_message_id(), scope=InvitationScope.CASUSOVERLEG)
    invite = header(
        "ZVH.west", MessageType.M6, ("NCTV.nl",), CaseId(record.case_id), invitation=ref
    )
    assert isinstance(decide(invite, record, ctx()), Refuse)
    assert isinstance(decide(invite, record, ctx(with_flags(nctv_coordination_law=True))), Allow)


def test_zvh_gets_veiligheidsmelding_only_as_meldpunt() -> None:
    """c8: the ZVH receives M11 only when mandated as meldpunt."""
    melding = header("LIV.landelijk", MessageType.M11, ("ZVH.west",), None)
    assert decide(melding, None, ctx()) == Refuse(
        ReasonCode.NOT_PERMITTED, "ZVH.west may not receive"
    )
    assert isinstance(decide(melding, None, ctx(with_flags(zvh_meldpunt_mandate=True))), Allow)


def test_handover_closes_the_case_and_opens_one_for_the_new_gemeente() -> None:
    """c12: the regie hands over to a gemeente in another region and that region's kern; the
    old case ends (overgedragen), the new one starts with nothing but the handover."""
    record = case(CaseState.UITVOERING)
    to = ("GEM.oosterdorp", "POL.oost", "OM.oost")
    handover = header(
        "GEM.westerstad", MessageType.M16, to, CaseId(record.case_id), handover_to="GEM.oosterdorp"
    )
    verdict = decide(handover, record, ctx())
    assert isinstance(verdict, Allow)
    assert verdict.case is not None and verdict.opened is not None
    assert verdict.case.state is CaseState.AFGESLOTEN
    assert verdict.case.closure is ClosureReason.OVERGEDRAGEN
    assert verdict.case.participants == ()
    assert verdict.opened.case_id == case_id_for(handover.message_id)
    assert verdict.opened.regie_gemeente == "GEM.oosterdorp"
    assert verdict.opened.state is CaseState.INTAKE
    assert (verdict.opened.participants, verdict.opened.invitations) == ((), ())
    for stray_to in (
        ("GEM.oosterdorp", "POL.west", "GEM.zeedorp"),  # the old region's police
        ("POL.oost", "OM.oost"),  # without the new gemeente
    ):
        stray = header("GEM.westerstad", MessageType.M16, stray_to, CaseId(record.case_id),
                       handover_to="GEM.oosterdorp")  # fmt: skip
        assert isinstance(decide(stray, record, ctx()), Refuse)


def test_only_the_regie_decides() -> None:
    """A gemeente that is not the case's regie cannot make a regie-only decision."""
    record = case(CaseState.WEGING, participants=(OrgId("GEM.zeedorp"), OrgId("ZVH.west")))
    m5 = header(
        "GEM.zeedorp",
        MessageType.M5,
        ("ZVH.west",),
        CaseId(record.case_id),
        decision=Decision.OPSCHALEN,
    )
    assert decide(m5, record, ctx()) == Refuse(
        ReasonCode.NOT_PERMITTED, "only the regie-gemeente decides this"
    )


def test_withdrawn_invitation_cannot_be_accepted() -> None:
    """An invitation withdrawn with M6 INTREKKEN can no longer be accepted."""
    ref = InvitationRef(id=new_message_id(), scope=InvitationScope.CASUSOVERLEG)
    open_invitation = Invitation(
        id=ref.id, org=OrgId("IND.landelijk"), scope=ref.scope, status=InvitationStatus.OPEN, at=NOW
    )
    record = case(CaseState.CASUSOVERLEG, invitations=(open_invitation,))
    withdraw = header(
        "ZVH.west",
        MessageType.M6,
        ("IND.landelijk",),
        CaseId(record.case_id),
        invitation=ref,
        decision=Decision.INTREKKEN,
    )
    verdict = decide(withdraw, record, ctx())
    assert isinstance(verdict, Allow)
    assert verdict.case is not None
    accept = header(
        "IND.landelijk", MessageType.M6R, ("ZVH.west",), CaseId(record.case_id), invitation=ref
    )
    assert decide(accept, verdict.case, ctx()) == Refuse(
        ReasonCode.NOT_PERMITTED, "sender has no access to the case"
    )
    assert decide(accept, record, ctx()).__class__ is Allow


def test_closure_starts_retention_and_new_signal_reopens() -> None:
    """Closing sets the purge date 5 years on; a new signal within retention re-opens INTAKE."""
    record = case(CaseState.PLAN_VAN_AANPAK)
    close = header(
        "GEM.westerstad",
        MessageType.M10,
        ("ZVH.west",),
        CaseId(record.case_id),
        decision=Decision.AFSLUITEN,
    )
    closed = decide(close, record, ctx())
    assert isinstance(closed, Allow)
    assert closed.case is not None
    assert closed.case.purge_after == NOW.replace(year=2031)
    signal = header("POL.west", MessageType.M1, ("ZVH.west",), CaseId(record.case_id))
    reopened = decide(signal, closed.case, ctx())
    assert isinstance(reopened, Allow)
    assert reopened.case is not None
    assert reopened.case.state is CaseState.INTAKE
    assert reopened.case.purge_after is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"purpose": Purpose.ADVIES}, ReasonCode.PURPOSE_NOT_ALLOWED),
        ({"legal_basis": LegalBasis.WIV2017_AMBTSBERICHT}, ReasonCode.LEGAL_BASIS_NOT_ALLOWED),
        ({"legal_basis": LegalBasis.BW1_KINDERBESCHERMING}, ReasonCode.LEGAL_BASIS_NOT_ALLOWED),
    ],
)
def test_purpose_and_legal_basis_allow_lists(change: dict[str, Any], reason: ReasonCode) -> None:
    """Unknown purpose or legal-basis combinations are refused, not just logged."""
    record = case(CaseState.CASUSOVERLEG)
    m7 = header("POL.west", MessageType.M7, ("ZVH.west",), CaseId(record.case_id), **change)
    verdict = decide(m7, record, ctx())
    assert isinstance(verdict, Refuse)
    assert verdict.reason is reason


def test_new_signal_only_to_the_regies_kern() -> None:
    """A new case's signal may go only to the kern of the gemeente that will hold regie."""
    signal = header("POL.west", MessageType.M1, ("POL.oost",), None)
    assert isinstance(decide(signal, None, ctx()), Refuse)


def test_repeated_invitations_keep_the_case_record_bounded() -> None:
    """An invitation sent again and again (new ids, same organisations and scope) replaces the
    earlier one: the case record grows with the organisations, not with the messages."""
    record = case(CaseState.CASUSOVERLEG)
    invitees = ("IND.landelijk", "LIV.landelijk")
    sizes = []
    for _ in range(50):
        ref = InvitationRef(id=new_message_id(), scope=InvitationScope.CASUSOVERLEG)
        invite = header("ZVH.west", MessageType.M6, invitees, CaseId(record.case_id),
                        invitation=ref)  # fmt: skip
        verdict = decide(invite, record, ctx())
        assert isinstance(verdict, Allow)
        assert verdict.case is not None
        record = verdict.case
        sizes.append(len(record.model_dump_json()))
    assert len(record.invitations) == len(invitees)
    assert sizes[-1] == sizes[40]  # the applied-id memory (32 ids) is full by then
    assert {i.id for i in record.invitations} == {ref.id}
