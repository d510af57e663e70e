"""The batch path against one message at a time, where a hostile partner would push on it
(the review of issue 13 found each of these): a message id reused after the registry forgot
it, one id on two cases in one batch, a case's messages around a failed claim, and the
sender's rate. In each, ``handle_batch`` must end as ``handle`` one by one does."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from schakel.contracts.enums import CaseState, MessageType, ReasonCode
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.ids import CaseId, MessageId, OrgId, case_id_for, new_message_id
from schakel.contracts.notice import RECEIPT_LABEL, Receipt
from schakel.contracts.topology import HEADER_KIND, HEADER_MSG_ID, KIND_RECEIPT
from schakel.harness.scenarios import GEM, KMAR, OM, POL, ZVH
from schakel.hub.quota import RateLimiter
from schakel.hub.router import Inbound, Outcome, RetryLater
from schakel.keys.envelope import seal
from schakel.keys.statement import sign_statement
from tests.hub.test_router_rules import Rig, _escalation, _message_id, _twin, rig

__all__ = ["rig"]  # the fixture, shared with test_router_rules


async def _two_cases(rig: Rig, twin: Rig | None = None) -> list[CaseId]:
    """Two cases at CASUSOVERLEG (in ``twin``'s stores too)."""
    cases = []
    for _ in range(2):
        signal = rig.envelope(POL, (GEM, ZVH))
        case = case_id_for(_message_id(signal))
        steps = [(POL, signal), (ZVH, rig.envelope(ZVH, (OM,), MessageType.M3, case_id=case)),
                 (GEM, _escalation(rig, case))]  # fmt: skip
        for system in (rig, twin) if twin else (rig,):
            for sender, raw in steps:
                assert (await system.router.handle(system.inbound(sender, raw))).accepted
        cases.append(case)
    return cases


def _info(rig: Rig, case: CaseId, *, message_id: MessageId | None = None,
          in_reply_to: MessageId | None = None,
          step: CaseState = CaseState.CASUSOVERLEG) -> bytes:  # fmt: skip
    body = example_body(MessageType.M7)
    update: dict[str, object] = {"step": step}
    if in_reply_to is not None:
        update["in_reply_to"] = in_reply_to
    draft = example_draft(MessageType.M7, body, case_id=case).model_copy(update=update)
    return seal(body, draft, sender=rig.ids[GEM], now=rig.now,
                recipients=[rig.directory.record(OrgId(ZVH))],
                message_id=message_id or new_message_id())  # fmt: skip


@pytest.mark.parametrize(("sender", "kind"), [(OM, MessageType.M3), (KMAR, MessageType.M7)])
async def test_a_forgotten_id_reused_on_its_case_is_a_replay_in_a_batch_too(
    rig: Rig, sender: str, kind: MessageType
) -> None:
    """An id the registry forgot but the case applied is a replay (DUPLICATE), also when the
    batch path claimed it afresh: never the resumption of an unfinished message, which would
    skip the policy (here for a party the matrix does not even allow to send)."""
    first = await rig.router.handle(rig.inbound(POL, rig.envelope(POL, (GEM, ZVH))))
    assert first.message_id is not None
    del rig.messages.entries[first.message_id]  # the registry's lifetime ended
    rig.journal.entries.clear()
    reused = rig.envelope(sender, (ZVH,), kind, message_id=first.message_id,
                          case_id=case_id_for(first.message_id))  # fmt: skip
    [outcome] = await rig.router.handle_batch([rig.inbound(sender, reused)])
    assert isinstance(outcome, Outcome) and outcome.reason in (
        ReasonCode.DUPLICATE, ReasonCode.NOT_PERMITTED,
    )  # fmt: skip
    assert "outbox.deliver" not in rig.journal.actions()


@pytest.mark.parametrize("refused_first", [1, 3])
async def test_one_id_on_two_cases_in_one_batch_is_one_message(
    rig: Rig, refused_first: int
) -> None:
    """A sender that puts one message id on two cases in one batch (behind refusals that
    send the first case out of the waves) gets one of them routed and the other refused as a
    replay, as one at a time: never both, never an acknowledged message left unrouted."""
    twin = _twin(rig)
    a, b = await _two_cases(rig, twin)
    x = new_message_id()
    refused = [_info(rig, a, step=CaseState.WEGING) for _ in range(refused_first)]
    batch = [rig.inbound(GEM, m) for m in (*refused, _info(rig, a, message_id=x),
                                           _info(rig, b, message_id=x))]  # fmt: skip
    expected = [await twin.router.handle(item) for item in batch]
    assert await rig.router.handle_batch(batch) == expected
    for case in (a, b):
        assert (x in rig.cases.records[case][0].applied) == (
            x in twin.cases.records[case][0].applied
        )
    routed = [r.case_id for r in rig.audit.records if r.event == "routed" and r.message_id == x]
    assert len(routed) == 1


async def test_a_failed_claim_keeps_its_case_in_order(rig: Rig) -> None:
    """m1's claim fails in the wave; m3 (a reply, later in the batch) left the waves at
    admission; m2 between them must not be applied before m1."""
    [case, _] = await _two_cases(rig)
    m1, m2 = _info(rig, case), _info(rig, case)
    m3 = _info(rig, case, in_reply_to=_message_id(m1))
    rig.journal.fail_after[("messages", "claim")] = 0  # the first claim fails, once
    outcomes = await rig.router.handle_batch([rig.inbound(GEM, m) for m in (m1, m2, m3)])
    names = {_message_id(m): n for n, m in (("m1", m1), ("m2", m2), ("m3", m3))}
    applied = [names[a] for a in rig.cases.records[case][0].applied if a in names]
    done = [n for n, o in zip(("m1", "m2", "m3"), outcomes, strict=True)
            if isinstance(o, Outcome) and o.accepted]  # fmt: skip
    assert applied == done  # in batch order, whatever was retried


async def test_the_senders_rate_is_taken_once_and_its_answer_stands(rig: Rig) -> None:
    """The rate decided at admission is the one that counts: a message over the rate there
    is refused RATE_LIMITED, not let through later by a bucket refilled meanwhile (which
    would put it after a later message of its case)."""
    [case, _] = await _two_cases(rig)
    times = iter([0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    rig.router._rate = RateLimiter(1.0, 1, clock=lambda: next(times))
    rig.router._rate.take(OrgId(GEM))  # the bucket empty
    m1, m2 = _info(rig, case), _info(rig, case)
    outcomes = await rig.router.handle_batch([rig.inbound(GEM, m) for m in (m1, m2)])
    assert isinstance(outcomes[0], Outcome) and outcomes[0].reason is ReasonCode.RATE_LIMITED
    assert _message_id(m1) not in rig.cases.records[case][0].applied


async def test_a_commit_stored_without_an_answer_is_finished_not_refused(rig: Rig) -> None:
    """The compare-and-set of a case is stored but its answer lost (a timeout): the batch
    sees its own record on a fresh read and finishes the messages (delivered once, one
    "routed" record each), neither refusing them as replays nor applying them twice."""
    [case, _] = await _two_cases(rig)
    messages = [_info(rig, case) for _ in range(3)]
    rig.journal.lose_answer.add(("cases", "put"))
    outcomes = await rig.router.handle_batch([rig.inbound(GEM, m) for m in messages])
    assert all(isinstance(o, Outcome) and o.accepted for o in outcomes), outcomes
    ids = [_message_id(m) for m in messages]
    assert list(rig.cases.records[case][0].applied[-3:]) == ids
    routed = [r.message_id for r in rig.audit.records if r.event == "routed"]
    assert [routed.count(m) for m in ids] == [1, 1, 1]
    copies = [d for q in rig.outbox.waiting.values() for d, _ in q]
    assert [sum(d.startswith(m) for d in copies) for m in ids] == [1, 1, 1]


@pytest.mark.parametrize("settled_by", ["batch", "handle"])
async def test_one_receipt_on_several_partitions_at_once_is_recorded_once(
    rig: Rig, settled_by: str
) -> None:
    """A recipient that sends its receipt (and copies of it) on several partitions at once:
    batches of different partitions run side by side in one instance, on the batch path
    and through handle(), whoever settled the message. Exactly one is audited and relayed;
    the others are refused as duplicates or retried later (and then refused)."""
    signal = rig.envelope(POL, (GEM, ZVH))
    if settled_by == "batch":
        [routed] = await rig.router.handle_batch([rig.inbound(POL, signal)])
    else:
        routed = await rig.router.handle(rig.inbound(POL, signal))
    assert isinstance(routed, Outcome) and routed.accepted
    message_id = _message_id(signal)
    receipt = Receipt(message_id=message_id, recipient=GEM,
                      recipient_kid=rig.ids[GEM].signing_kid, sender=POL, at=rig.now)  # fmt: skip
    raw = sign_statement(receipt, rig.ids[GEM].signing_key, RECEIPT_LABEL)

    def copy() -> Inbound:
        item = rig.inbound(GEM, raw, headers=frozenset({HEADER_MSG_ID, HEADER_KIND}))
        return dataclasses.replace(item, kind=KIND_RECEIPT)

    answers: list[object] = []
    for _ in range(3):  # retried later until none is left over
        results = await asyncio.gather(
            rig.router.handle_batch([copy()]), rig.router.handle_batch([copy(), copy()]),
            rig.router.handle(copy()), rig.router.handle_batch([copy()]),
            return_exceptions=True,
        )  # fmt: skip
        for result in results:
            answers += result if isinstance(result, list) else [result]
    accepted = [a for a in answers if isinstance(a, Outcome) and a.accepted]
    refused = [a for a in answers if isinstance(a, Outcome) and not a.accepted]
    assert len(accepted) == 1
    assert {a.reason for a in refused} <= {ReasonCode.DUPLICATE}
    assert all(isinstance(a, Outcome | RetryLater) for a in answers), answers
    receipted = [r for r in rig.audit.records if r.event == "receipted"]
    assert len(receipted) == 1
    assert rig.journal.actions().count("outbox.relay") == 1
