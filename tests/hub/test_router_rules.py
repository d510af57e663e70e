"""The router's ordering rules, on the in-memory stores (no NATS): what it stores, in which
order, and what it does when a store fails in between.

- A routed message: its id is claimed, then the case is committed, the copies delivered, the
  audit record stored, and only then the message record settled. A crash anywhere leaves the
  sender's own claim, which the redelivery takes over and finishes (every step idempotent).
- A refused message: the audit record is stored before the notice goes out; if the record
  cannot be stored, no notice goes out (the message is retried).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass

import pytest

from schakel.contracts.clock import system_clock, whole_seconds
from schakel.contracts.enums import CaseState, MessageType, ReasonCode
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.ids import (
    CaseId,
    MessageId,
    OrgId,
    case_id_for,
    new_case_id,
    new_message_id,
)
from schakel.contracts.notice import RECEIPT_LABEL, Receipt
from schakel.contracts.policy import default_policy
from schakel.contracts.topology import HEADER_KIND, HEADER_MSG_ID, KIND_RECEIPT, inbound_subject
from schakel.harness.scenarios import GEM, KMAR, OM, POL, ZVH
from schakel.hub.cases import CaseRecord
from schakel.hub.memory import (
    Journal,
    MemoryAudit,
    MemoryCaseStore,
    MemoryMessageRegistry,
    MemoryOutbox,
    StoreFailure,
)
from schakel.hub.registry import default_registry
from schakel.hub.router import Inbound, Outcome, Router
from schakel.keys.directory import KeyDirectory
from schakel.keys.envelope import seal, split_envelope
from schakel.keys.identity import PartnerIdentity
from schakel.keys.statement import sign_statement

HUB = OrgId("HUB.rules")
NEW_KERN = ("GEM.oosterdorp", "ZVH.oost", "POL.oost", "OM.oost")


@dataclass
class Rig:
    router: Router
    journal: Journal
    cases: MemoryCaseStore
    messages: MemoryMessageRegistry
    audit: MemoryAudit
    outbox: MemoryOutbox
    ids: dict[str, PartnerIdentity]
    directory: KeyDirectory
    now: dt.datetime
    seq: int = 0

    def envelope(self, sender: str, to: tuple[str, ...], kind: MessageType = MessageType.M1,
                 message_id: MessageId | None = None,
                 case_id: CaseId | None = None) -> bytes:  # fmt: skip
        body = example_body(kind)
        # A signal's case id is derived from its message id when it is sealed.
        if case_id is None and kind is not MessageType.M1:
            case_id = new_case_id()
        draft = example_draft(kind, body, case_id=case_id)
        return seal(body, draft, sender=self.ids[sender],
                    recipients=[self.directory.record(OrgId(o)) for o in to],
                    now=self.now, message_id=message_id or new_message_id())  # fmt: skip

    def inbound(self, sender: str, data: bytes, *, seq: int | None = None,
                headers: frozenset[str] = frozenset({HEADER_MSG_ID})) -> Inbound:  # fmt: skip
        if seq is None:
            self.seq += 1
            seq = self.seq
        return Inbound(data=data, subject=inbound_subject(OrgId(sender)), seq=seq,
                       header_names=headers)  # fmt: skip


@pytest.fixture
def rig() -> Rig:
    # A clock of its own: the router reads no other time (its window checks use this one).
    now = whole_seconds(system_clock) - dt.timedelta(days=3)
    ids = {
        org: PartnerIdentity.generate(OrgId(org), now=now - dt.timedelta(days=1))
        for org in (POL, GEM, ZVH, OM, KMAR, HUB, *NEW_KERN)
    }
    directory = KeyDirectory(i.public_record() for i in ids.values())
    journal = Journal()
    messages, audit = MemoryMessageRegistry(journal), MemoryAudit(journal)
    outbox = MemoryOutbox(journal, HUB)
    cases = MemoryCaseStore(journal)
    router = Router(
        policy=default_policy(), registry=default_registry(), directory=directory,
        cases=cases, messages=messages, audit=audit, outbox=outbox,
        identity=ids[HUB], instance="hub-rules", clock=lambda: now,
    )  # fmt: skip
    return Rig(router, journal, cases, messages, audit, outbox, ids, directory, now)


def _positions(journal: Journal, action: str) -> list[int]:
    return [n for n, name in enumerate(journal.actions()) if name == action]


async def test_a_routed_message_is_claimed_committed_delivered_audited_then_settled(
    rig: Rig,
) -> None:
    outcome = await rig.router.handle(rig.inbound(POL, rig.envelope(POL, (GEM, ZVH))))
    assert outcome.accepted
    assert rig.journal.actions() == [
        "messages.claim", "cases.put", "outbox.deliver", "outbox.deliver", "audit.append",
        "messages.settle",
    ]  # fmt: skip
    assert rig.audit.records[0].event == "routed"
    assert rig.audit.records[0].at == rig.now  # the injected clock's time


@pytest.mark.parametrize(
    "attack",
    ["foreign header", "not an envelope", "not permitted", "someone else's id", "forged sender"],
)
async def test_every_refusal_is_audited_before_its_notice(rig: Rig, attack: str) -> None:
    if attack == "foreign header":
        item = rig.inbound(POL, rig.envelope(POL, (GEM, ZVH)),
                           headers=frozenset({"Nats-Expected-Stream"}))  # fmt: skip
    elif attack == "not an envelope":
        item = rig.inbound(POL, b"\x00 not an envelope")
    elif attack == "not permitted":  # KMar was never invited and may not open a case
        item = rig.inbound(KMAR, rig.envelope(KMAR, (ZVH,), MessageType.M7))
    elif attack == "someone else's id":
        taken = new_message_id()
        await rig.router.handle(rig.inbound(POL, rig.envelope(POL, (GEM, ZVH), message_id=taken)))
        rig.journal.entries.clear()
        item = rig.inbound(OM, rig.envelope(OM, (ZVH,), message_id=taken))
    else:  # an envelope of POL's, published on GEM's subject
        item = rig.inbound(GEM, rig.envelope(POL, (GEM, ZVH)))
    outcome = await rig.router.handle(item)
    assert not outcome.accepted
    audits = _positions(rig.journal, "audit.append")
    notices = _positions(rig.journal, "outbox.notify")
    assert len(audits) == 1 and len(notices) == 1, rig.journal.actions()
    assert audits[0] < notices[0]
    assert "outbox.deliver" not in rig.journal.actions()
    assert rig.audit.records[-1].event == "refused"
    assert rig.audit.records[-1].reason is outcome.reason


async def test_no_notice_goes_out_for_a_refusal_the_trail_does_not_hold(rig: Rig) -> None:
    rig.journal.fail_on.add(("audit", "append"))
    with pytest.raises(StoreFailure):
        await rig.router.handle(rig.inbound(POL, b"\x00 not an envelope"))
    assert "outbox.notify" not in rig.journal.actions()
    rig.journal.fail_on.clear()  # the redelivery, once the store is back
    outcome = await rig.router.handle(rig.inbound(POL, b"\x00 not an envelope", seq=rig.seq))
    assert outcome.reason is ReasonCode.MALFORMED
    assert rig.journal.actions() == ["audit.append", "outbox.notify"]


@pytest.mark.parametrize("failing", [("outbox", "deliver"), ("audit", "append")])
async def test_a_crash_mid_route_is_finished_by_the_redelivery(
    rig: Rig, failing: tuple[str, str]
) -> None:
    data = rig.envelope(POL, (GEM, ZVH))
    rig.journal.fail_on.add(failing)
    with pytest.raises(StoreFailure):
        await rig.router.handle(rig.inbound(POL, data))
    [(entry, _)] = rig.messages.entries.values()
    assert entry.status == "claimed"  # not settled: the work is unfinished
    assert not rig.audit.records or rig.audit.records[-1].event != "routed"
    rig.journal.fail_on.clear()
    outcome = await rig.router.handle(rig.inbound(POL, data, seq=rig.seq))
    assert outcome.accepted
    [(entry, _)] = rig.messages.entries.values()
    assert entry.status == "accepted"
    assert [r.event for r in rig.audit.records] == ["routed"]
    assert sorted(len(q) for q in rig.outbox.waiting.values()) == [1, 1]  # one copy each


async def test_a_finished_message_redelivered_changes_nothing(rig: Rig) -> None:
    item = rig.inbound(POL, rig.envelope(POL, (GEM, ZVH)))
    assert (await rig.router.handle(item)).accepted
    before = list(rig.journal.entries)
    assert (await rig.router.handle(item)).accepted
    assert rig.journal.entries == before


def _handover(rig: Rig) -> tuple[bytes, CaseId]:
    """A case at CASUSOVERLEG in the west, and its regie's handover to the oost."""
    record = CaseRecord(
        case_id=new_case_id(), state=CaseState.CASUSOVERLEG, regie_gemeente=OrgId(GEM),
        melder=OrgId(POL), created_at=rig.now, updated_at=rig.now,
    )  # fmt: skip
    rig.cases.records[CaseId(record.case_id)] = (record, 1)
    body = example_body(MessageType.M16).model_copy(update={"nieuwe_gemeente": NEW_KERN[0]})
    draft = example_draft(MessageType.M16, body, case_id=CaseId(record.case_id)).model_copy(
        update={"handover_to": NEW_KERN[0], "step": CaseState.CASUSOVERLEG}
    )
    raw = seal(body, draft, sender=rig.ids[GEM], now=rig.now,
               recipients=[rig.directory.record(OrgId(o)) for o in NEW_KERN])  # fmt: skip
    return raw, CaseId(record.case_id)


async def test_a_handover_commits_the_old_case_before_it_opens_the_new_one(rig: Rig) -> None:
    raw, old = _handover(rig)
    outcome = await rig.router.handle(rig.inbound(GEM, raw))
    assert outcome.accepted
    assert rig.journal.actions() == [
        "messages.claim", "cases.put", "cases.put", *["outbox.deliver"] * 4,
        "audit.append", "audit.append", "messages.settle",
    ]  # fmt: skip
    new = case_id_for(outcome.message_id or "")
    assert [e[2] for e in rig.journal.entries if e[:2] == ("cases", "put")] == [old, new]
    assert [r.case_id for r in rig.audit.records] == [old, new]


async def test_a_crash_between_the_two_cases_is_finished_by_the_redelivery(rig: Rig) -> None:
    raw, old = _handover(rig)
    rig.journal.fail_after[("cases", "put")] = 1  # the old case is committed, then a crash
    with pytest.raises(StoreFailure):
        await rig.router.handle(rig.inbound(GEM, raw))
    assert rig.cases.records[old][0].state is CaseState.AFGESLOTEN
    outcome = await rig.router.handle(rig.inbound(GEM, raw, seq=rig.seq))
    assert outcome.accepted
    new = case_id_for(outcome.message_id or "")
    assert rig.cases.records[new][0].state is CaseState.INTAKE
    assert sorted(len(q) for q in rig.outbox.waiting.values()) == [1, 1, 1, 1]


async def test_an_old_message_id_on_its_case_is_a_replay_not_a_pass(rig: Rig) -> None:
    """The case remembers the ids it applied longer than the registry remembers ids: a party
    that saw a message may not reuse its id, once forgotten, to skip the policy."""
    first = await rig.router.handle(rig.inbound(POL, rig.envelope(POL, (GEM, ZVH))))
    assert first.accepted and first.message_id is not None
    del rig.messages.entries[first.message_id]  # the registry's lifetime ended
    rig.journal.entries.clear()
    reused = rig.envelope(OM, (ZVH,), MessageType.M3, message_id=first.message_id,
                          case_id=case_id_for(first.message_id))  # fmt: skip
    outcome = await rig.router.handle(rig.inbound(OM, reused))
    assert outcome.reason is ReasonCode.DUPLICATE
    assert "outbox.deliver" not in rig.journal.actions()


async def test_a_second_instance_sees_past_its_stale_case_cache(rig: Rig) -> None:
    """Two hub instances share the stores. Instance A caches the case it opened; instance B
    moves the case on; a message A then handles that the new state allows (and the old one
    refuses) is routed: A's refusal on its cached record is confirmed on a fresh read, which
    allows it. A message the old state allowed but whose commit meets B's newer revision is
    committed after a fresh read, not refused."""
    other = Router(
        policy=default_policy(), registry=default_registry(), directory=rig.directory,
        cases=rig.cases, messages=rig.messages, audit=rig.audit, outbox=rig.outbox,
        identity=rig.ids[HUB], instance="hub-other", clock=lambda: rig.now,
    )  # fmt: skip
    signal = rig.envelope(POL, (GEM, ZVH))
    assert (await rig.router.handle(rig.inbound(POL, signal))).accepted
    case_id = next(iter(rig.cases.records))
    weging = rig.envelope(ZVH, (OM,), MessageType.M3, case_id=case_id)
    assert (await other.handle(rig.inbound(ZVH, weging))).accepted  # B moves the case on
    decision = rig.envelope(GEM, (ZVH, POL, OM), MessageType.M5, case_id=case_id)
    outcome = await rig.router.handle(rig.inbound(GEM, decision))  # A, on its stale cache
    assert outcome.accepted, outcome


async def test_a_dead_letter_is_replayed_only_if_it_could_be_routed_today(rig: Rig) -> None:
    """The operator's replay of a delivery is checked against today: not after the envelope
    expired, not to an organisation that is no longer a registered partner, not sealed to a
    key the recipient no longer has (the review found replay skipped these)."""
    data = rig.envelope(POL, (GEM, ZVH))
    assert rig.router.replay_problem(data, OrgId(ZVH)) is None

    def router(directory: KeyDirectory, later: dt.timedelta = dt.timedelta()) -> Router:
        return Router(
            policy=default_policy(), registry=default_registry(), directory=directory,
            cases=rig.cases, messages=rig.messages, audit=rig.audit, outbox=rig.outbox,
            identity=rig.ids[HUB], instance="hub-replay", clock=lambda: rig.now + later,
        )  # fmt: skip

    assert router(rig.directory, dt.timedelta(days=400)).replay_problem(
        data, OrgId(ZVH)) == "expired"  # fmt: skip
    to_hub = rig.envelope(POL, (HUB,))  # keys in the directory, but no partner
    assert rig.router.replay_problem(to_hub, HUB) == "recipient-not-registered"
    rekeyed = PartnerIdentity.generate(OrgId(ZVH), now=rig.now - dt.timedelta(days=1))
    others = [i.public_record() for o, i in rig.ids.items() if o != ZVH]
    directory = KeyDirectory([*others, rekeyed.public_record()])
    assert router(directory).replay_problem(data, OrgId(ZVH)) == "recipient-key-stale"
    assert rig.router.replay_problem(b"a signed notice, not an envelope", OrgId(ZVH)) is None


def _twin(rig: Rig) -> Rig:
    """A second router with the same partners and keys and stores of its own."""
    journal = Journal()
    messages, audit = MemoryMessageRegistry(journal), MemoryAudit(journal)
    outbox, cases = MemoryOutbox(journal, HUB), MemoryCaseStore(journal)
    router = Router(
        policy=default_policy(), registry=default_registry(), directory=rig.directory,
        cases=cases, messages=messages, audit=audit, outbox=outbox,
        identity=rig.ids[HUB], instance="hub-twin", clock=lambda: rig.now,
    )  # fmt: skip
    return Rig(router, journal, cases, messages, audit, outbox, rig.ids, rig.directory, rig.now)


def _mixed_batch(rig: Rig) -> tuple[list[Inbound], list[Inbound]]:
    """A signal routed first, then one batch: its case taken from weging to casusoverleg and
    on (several messages for one case that depend on each other), a refusal in between, a
    duplicate, junk, a receipt and a message of a second case."""
    signal = rig.envelope(POL, (GEM, ZVH))
    first = [rig.inbound(POL, signal)]
    case = case_id_for(_message_id(signal))
    other_signal = rig.envelope(POL, (GEM, ZVH))
    other = case_id_for(_message_id(other_signal))
    weging = rig.envelope(ZVH, (OM,), MessageType.M3, case_id=case)
    escalate = _escalation(rig, case)
    info = [_casusinformatie(rig, case) for _ in range(3)]
    receipt = Receipt(message_id=_message_id(signal), recipient=GEM,
                      recipient_kid=rig.ids[GEM].signing_kid, sender=POL, at=rig.now)  # fmt: skip
    batch = [
        rig.inbound(ZVH, weging),
        rig.inbound(GEM, escalate),
        rig.inbound(KMAR, rig.envelope(KMAR, (ZVH,), MessageType.M7, case_id=case)),  # refused
        rig.inbound(GEM, info[0]),
        rig.inbound(
            GEM,
            sign_statement(receipt, rig.ids[GEM].signing_key, RECEIPT_LABEL),
            headers=frozenset({HEADER_MSG_ID, HEADER_KIND}),
        ),
        rig.inbound(GEM, info[1]),
        rig.inbound(
            GEM,
            sign_statement(receipt, rig.ids[GEM].signing_key, RECEIPT_LABEL),
            headers=frozenset({HEADER_MSG_ID, HEADER_KIND}),
        ),  # the receipt again
        rig.inbound(POL, other_signal),
        rig.inbound(GEM, info[1]),  # the same envelope again, a new inbound message: a replay
        rig.inbound(POL, b"\x00 junk"),
        rig.inbound(ZVH, rig.envelope(ZVH, (OM,), MessageType.M3, case_id=other)),
        rig.inbound(GEM, info[2]),
    ]
    for n, item in enumerate(batch):
        if item.header_names == frozenset({HEADER_MSG_ID, HEADER_KIND}):
            batch[n] = dataclasses.replace(item, kind=KIND_RECEIPT)
    return first, batch


def _message_id(raw: bytes) -> MessageId:
    return MessageId(json.loads(split_envelope(raw)[0])["message_id"])


def _escalation(rig: Rig, case: CaseId) -> bytes:
    body = example_body(MessageType.M5)
    draft = example_draft(MessageType.M5, body, case_id=case)
    return seal(body, draft, sender=rig.ids[GEM], now=rig.now,
                recipients=[rig.directory.record(OrgId(o)) for o in (ZVH, POL, OM)])  # fmt: skip


def _casusinformatie(rig: Rig, case: CaseId) -> bytes:
    body = example_body(MessageType.M7)
    draft = example_draft(MessageType.M7, body, case_id=case).model_copy(
        update={"step": CaseState.CASUSOVERLEG}
    )
    return seal(body, draft, sender=rig.ids[GEM], now=rig.now,
                recipients=[rig.directory.record(OrgId(o)) for o in (ZVH,)])  # fmt: skip


def _state(rig: Rig) -> tuple[object, ...]:
    """What the stores hold, without store-assigned revisions and instance names."""
    return (
        sorted((str(c), r.state, r.applied) for c, (r, _) in rig.cases.records.items()),
        sorted((str(m), e.status, e.receipted_by) for m, (e, _) in rig.messages.entries.items()),
        sorted(
            (r.event, r.message_id or "", r.reason or "", r.state_after or "")
            for r in rig.audit.records
        ),
        sorted((s, [i for i, _ in q]) for s, q in rig.outbox.waiting.items()),
    )


async def test_a_mixed_batch_ends_as_one_message_at_a_time_would(rig: Rig) -> None:
    """Several messages for one case that build on each other, a refusal between them,
    a duplicate, junk, a receipt and a second case, in one batch: the same outcomes, case
    records, message records, audit events and deliveries as one message at a time."""
    twin = _twin(rig)
    first, batch = _mixed_batch(rig)
    assert (await rig.router.handle_batch(first)) == [await twin.router.handle(first[0])]
    batched = await rig.router.handle_batch(batch)
    one_by_one = [await twin.router.handle(item) for item in batch]
    assert batched == one_by_one
    assert [o.reason for o in one_by_one if not o.accepted] == [
        ReasonCode.NOT_PERMITTED, ReasonCode.DUPLICATE, ReasonCode.DUPLICATE,
        ReasonCode.MALFORMED,
    ]  # fmt: skip
    assert rig.router.counts["batched"] >= 4  # the receipt among them
    assert _state(rig) == _state(twin)
    cases = {r.state for r, _ in rig.cases.records.values()}
    assert cases == {CaseState.CASUSOVERLEG, CaseState.WEGING}


async def test_a_batch_routes_the_common_case_in_waves(rig: Rig) -> None:
    """Messages that need nothing special go in waves: every claim, one commit per case,
    every delivery, the audit records, every settle; nothing one message at a time."""
    signal = rig.envelope(POL, (GEM, ZVH))
    assert (await rig.router.handle(rig.inbound(POL, signal))).accepted
    case = case_id_for(_message_id(signal))
    for raw in (rig.envelope(ZVH, (OM,), MessageType.M3, case_id=case), _escalation(rig, case)):
        assert (await rig.router.handle(rig.inbound(ZVH if b'"M3"' in raw else GEM, raw))).accepted
    rig.journal.entries.clear()
    outcomes = await rig.router.handle_batch(
        [rig.inbound(GEM, _casusinformatie(rig, case)) for _ in range(5)]
    )
    assert all(isinstance(o, Outcome) and o.accepted for o in outcomes)
    assert rig.journal.actions() == [
        *["messages.claim"] * 5, "cases.put", *["outbox.deliver"] * 5, *["audit.append"] * 5,
        *["messages.settle"] * 5,
    ]  # fmt: skip


@pytest.mark.parametrize(
    "failing",
    [("messages", "claim"), ("cases", "put"), ("outbox", "deliver"), ("audit", "append"),
     ("messages", "settle")],
)  # fmt: skip
async def test_a_batch_cut_short_is_finished_by_the_redelivery(
    rig: Rig, failing: tuple[str, str]
) -> None:
    """A store that fails in the middle of a batch (as a hub killed there): what failed is
    retried by the caller, and the redelivery of the whole batch ends with every message
    routed once: one copy per recipient, one "routed" record, the case as one at a time."""
    twin = _twin(rig)
    first, batch = _mixed_batch(rig)
    assert (await rig.router.handle_batch(first)) == [await twin.router.handle(first[0])]
    one_by_one = [await twin.router.handle(item) for item in batch]
    rig.journal.fail_after[failing] = 2  # two succeed, then every later one fails
    rig.journal.fail_on.add(failing)
    # first attempts (a message held back behind a failed one is retried, not routed)
    cut = await rig.router.handle_batch(
        [dataclasses.replace(item, final_attempt=False) for item in batch]
    )
    assert any(isinstance(o, Exception) for o in cut)
    rig.journal.fail_on.clear()
    rig.journal.fail_after.clear()
    retried = [n for n, o in enumerate(cut) if isinstance(o, Exception)]  # not acknowledged
    again = await rig.router.handle_batch([batch[n] for n in retried])  # redelivered
    final = [*cut]
    for n, outcome in zip(retried, again, strict=True):
        final[n] = outcome
    assert final == one_by_one
    routed = {str(r.message_id) for r in rig.audit.records if r.event == "routed"}
    assert routed == {str(r.message_id) for r in twin.audit.records if r.event == "routed"}
    assert _state(rig)[0] == _state(twin)[0]  # the cases
    assert _state(rig)[3] == _state(twin)[3]  # one copy per recipient
