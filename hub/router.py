"""The router: one inbound envelope in, deliveries or a refusal out, an audit record always.

For each envelope, in order: NATS headers on the allow-list; the sender's rate; framing and
size; header schema; sender binding (the signed sender is the partner whose inbound subject it
came from); signature and signing key; duplicate message id; the created/expires window; the
recipients' encryption keys; the policy decision against the case. Then, for an accepted
message: the case update (compare-and-set: the commit point), one delivery per recipient, the
audit record, the message id remembered; the caller acks the inbound message only after all of
that. A refusal is audited before its notice goes out. Every step after the commit point is
idempotent, so a crash anywhere leads to a redelivery that finishes the work without a second
decision.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import functools
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import structlog

from schakel.bus import TransportError
from schakel.contracts.clock import system_clock
from schakel.contracts.enums import REASON_TEXTS, ReasonCode
from schakel.contracts.errors import ContractError, EnvelopeError, SchakelError
from schakel.contracts.header import EnvelopeHeader, decode_header
from schakel.contracts.ids import MESSAGE_ID_PATTERN, CaseId, KeyId, MessageId, OrgId
from schakel.contracts.notice import (
    RECEIPT_LABEL,
    REFUSAL_LABEL,
    DeliveryState,
    Receipt,
    RefusalNotice,
)
from schakel.contracts.policy import Policy
from schakel.contracts.topology import (
    INBOUND_ALLOWED_HEADERS,
    KIND_ENVELOPE,
    KIND_RECEIPT,
    header_case_id,
    org_of_inbound_subject,
)
from schakel.hub.audit import AuditRecord
from schakel.hub.cases import APPLIED_KEPT, CaseRecord
from schakel.hub.policy import Allow, Context, Refuse, decide, opened_by
from schakel.hub.quota import RateLimiter
from schakel.hub.registry import Registry
from schakel.hub.stores import Backlog, MessageEntry, envelope_digest
from schakel.keys.directory import KeyDirectory
from schakel.keys.envelope import split_envelope, verify
from schakel.keys.errors import KeyDirectoryError
from schakel.keys.identity import PartnerIdentity
from schakel.keys.statement import claimed_statement, sign_statement, verify_statement

__all__ = [
    "REFUSAL_LABEL",
    "AuditSink",
    "CaseCache",
    "CaseStore",
    "Deliverer",
    "HeldBack",
    "Inbound",
    "MessageRegistry",
    "Outcome",
    "RetryLater",
    "Router",
]

_UUID = re.compile(MESSAGE_ID_PATTERN)
_CAS_ATTEMPTS: Final = 8
_MAX_DETAIL: Final = 200
_SETTLED_KEPT: Final = 20_000  # message records remembered for their receipts
_CONFLICT_ROUNDS: Final = 3  # rounds of a batch's case commits before handle() takes over
_log = structlog.get_logger("schakel.router")


class CaseStore(Protocol):
    async def get(self, case_id: CaseId) -> tuple[CaseRecord | None, int]: ...
    async def put(self, record: CaseRecord, revision: int) -> int | None: ...
    async def put_many(
        self, items: Sequence[tuple[CaseRecord, int]]
    ) -> list[int | TransportError | None]: ...


class CaseCache:
    """The case records this hub read or wrote last, in front of the store.

    A read may come from here and be stale (another hub instance changed the case): every
    decision that changes a case is committed by compare-and-set on the revision, which fails
    on a stale one, and the router then reads afresh; a refusal decided on a cached record is
    confirmed on a fresh read before it stands. Batches of several partners may meet on one
    case in one instance too: the compare-and-set decides there the same way (the loser reads
    afresh), so a race costs a read, never a wrong decision. Bounded, least recently used
    first out.
    """

    def __init__(self, store: CaseStore, size: int = 20_000) -> None:
        self._store = store
        self._size = size
        self._entries: collections.OrderedDict[CaseId, tuple[CaseRecord, int]] = (
            collections.OrderedDict()
        )

    async def get(self, case_id: CaseId, *, fresh: bool = False) -> tuple[CaseRecord | None, int]:
        """The record and its revision; from the cache unless ``fresh``."""
        if not fresh and case_id in self._entries:
            self._entries.move_to_end(case_id)
            return self._entries[case_id]
        record, revision = await self._store.get(case_id)
        if record is None:
            self._entries.pop(case_id, None)
        else:
            self._remember(case_id, record, revision)
        return record, revision

    async def put(self, record: CaseRecord, revision: int) -> int | None:
        """Compare-and-set through to the store; the cache follows the outcome."""
        case_id = CaseId(record.case_id)
        new = await self._store.put(record, revision)
        if new is None:
            self._entries.pop(case_id, None)
        else:
            self._remember(case_id, record, new)
        return new

    async def put_many(
        self, items: Sequence[tuple[CaseRecord, int]]
    ) -> list[int | TransportError | None]:
        """:meth:`put` for several cases, pipelined; per item as the store answered."""
        answers = await self._store.put_many(items)
        for (record, _), answer in zip(items, answers, strict=True):
            if isinstance(answer, int):
                self._remember(CaseId(record.case_id), record, answer)
            else:  # a conflict, or unknown (a timeout may have been stored): read it again
                self._entries.pop(CaseId(record.case_id), None)
        return answers

    def _remember(self, case_id: CaseId, record: CaseRecord, revision: int) -> None:
        self._entries[case_id] = (record, revision)
        self._entries.move_to_end(case_id)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


class MessageRegistry(Protocol):
    async def get(self, message_id: MessageId) -> MessageEntry | None: ...
    async def claim(
        self, message_id: MessageId, entry: MessageEntry
    ) -> tuple[MessageEntry | None, int]: ...
    async def settle(self, message_id: MessageId, entry: MessageEntry, revision: int) -> None: ...
    async def claim_many(
        self, items: Sequence[tuple[MessageId, MessageEntry]]
    ) -> list[int | TransportError | None]: ...
    async def write_many(
        self, items: Sequence[tuple[MessageId, MessageEntry, int]]
    ) -> list[int | TransportError | None]: ...
    async def update(
        self, message_id: MessageId, change: Callable[[MessageEntry], MessageEntry]
    ) -> MessageEntry | None: ...


class AuditSink(Protocol):
    async def append(self, record: AuditRecord) -> AuditRecord: ...
    async def append_many(self, records: Sequence[AuditRecord]) -> list[AuditRecord]: ...


class Deliverer(Protocol):
    async def backlog(self, recipient: OrgId, sender: OrgId) -> Backlog: ...
    async def relay(self, org: OrgId, receipt: bytes, dedupe_id: str) -> None: ...
    async def deliver(
        self, recipient: OrgId, sender: OrgId, envelope: bytes, message_id: MessageId
    ) -> None: ...
    async def notify(self, org: OrgId, notice: bytes, dedupe_id: str) -> None: ...
    async def relay_many(
        self, items: Sequence[tuple[OrgId, bytes, str]]
    ) -> list[TransportError | None]: ...
    async def deliver_many(
        self, items: Sequence[tuple[OrgId, OrgId, bytes, MessageId]]
    ) -> list[TransportError | None]: ...


class RetryLater(SchakelError):
    """The message cannot be decided yet; try it again shortly (not a failure)."""


class HeldBack(RetryLater):
    """An earlier message of the same case failed in this batch: try this one again after
    that one, so that a case's messages still apply in order."""


@dataclass(frozen=True, slots=True)
class Inbound:
    """An envelope as it arrived: its bytes, subject, sequence in its sender's inbound stream
    and the NATS header names it carried."""

    data: bytes
    subject: str
    seq: int
    msg_id_hint: str | None = None
    kind: str = KIND_ENVELOPE
    header_names: frozenset[str] = frozenset()
    final_attempt: bool = True


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the router did."""

    accepted: bool
    reason: ReasonCode | None = None
    message_id: MessageId | None = None


@dataclass(slots=True)
class _Receipting:
    """A receipt on the batch path: verified, for a message this hub settled (cached)."""

    index: int
    item: Inbound
    org: OrgId
    message_id: MessageId
    entry: MessageEntry  # with this receipt added
    revision: int


@dataclass(slots=True)
class _Routing:
    """An envelope on the batch path: verified, its id being claimed, its case decided."""

    index: int
    item: Inbound
    sender: OrgId
    header: EnvelopeHeader
    message_id: MessageId
    claim: MessageEntry
    revision: int = 0
    decided: Allow | None = None
    committed: bool = False  # its case records it (the batch's compare-and-set held)


class Router:
    """Routes envelopes by policy. Stateless apart from its collaborators."""

    def __init__(
        self,
        *,
        policy: Policy,
        registry: Registry,
        directory: KeyDirectory,
        cases: CaseStore,
        messages: MessageRegistry,
        audit: AuditSink,
        outbox: Deliverer,
        identity: PartnerIdentity,
        instance: str,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self._policy = policy
        self._registry = registry
        self._directory = directory
        self._cases = CaseCache(cases)
        self._messages = messages
        self._audit = audit
        self._outbox = outbox
        self._identity = identity
        self._instance = instance
        self._clock = clock or system_clock
        limits = policy.limits
        self._rate = RateLimiter(limits.max_inbound_per_second, limits.max_inbound_burst)
        self._refusal_budget = RateLimiter(
            limits.max_refusal_records_per_second, limits.max_refusal_records_burst
        )
        self._uncounted: Counter[tuple[OrgId, ReasonCode]] = Counter()
        # How messages went: "batched" (in the waves), "one_by_one" (through handle()),
        # "conflicts" (a case's compare-and-set lost in a wave). Counters, not log lines.
        self.counts: Counter[str] = Counter()
        # The message records this instance settled, for the receipts that follow: a read
        # that the compare-and-set of the receipt's update confirms (or sends to handle()).
        self._settled: collections.OrderedDict[MessageId, tuple[MessageEntry, int]] = (
            collections.OrderedDict()
        )
        # The receipts (message, recipient) being recorded in this instance now, on either
        # path: a second one for the same pair waits (handle() retries it later) instead of
        # being audited and relayed beside the first. Batches of several partitions run side
        # by side, and a hostile recipient may send one receipt on each.
        self._receipting: set[tuple[MessageId, OrgId]] = set()

    @property
    def registry(self) -> Registry:
        """The partner registry the router decides with."""
        return self._registry

    @registry.setter
    def registry(self, registry: Registry) -> None:
        # Swapped whole (never changed in place): each check reads one published edition.
        self._registry = registry

    async def flush_refusals(self) -> int:
        """Record the refusals counted beyond their senders' budgets: one audit record per
        sender and reason, with the count; return how many were recorded."""
        counted, self._uncounted = self._uncounted, Counter()
        now = self._now()
        done = 0
        try:
            for (sender, reason), count in sorted(counted.items()):
                detail = f"{count} refused beyond the budget"
                record = self._record(
                    None, now, "refused", None, None, sender=sender, reason=reason, detail=detail
                )
                await self._audit.append(record)
                del counted[(sender, reason)]
                done += count
                _log.info("refusals_counted", sender=sender, reason=reason.value, count=count)
        finally:
            self._uncounted.update(counted)  # what was not recorded: at the next flush
        return done

    def _now(self) -> dt.datetime:
        return self._clock().astimezone(dt.UTC).replace(microsecond=0)

    async def handle_batch(self, items: Sequence[Inbound]) -> list[Outcome | Exception]:
        """See :meth:`_handle_batch`; receipts it marked as under way are unmarked however
        it ends."""
        marked: set[tuple[MessageId, OrgId]] = set()
        try:
            return await self._handle_batch(items, marked)
        finally:
            self._receipting -= marked

    async def _handle_batch(
        self, items: Sequence[Inbound], marked: set[tuple[MessageId, OrgId]]
    ) -> list[Outcome | Exception]:
        """Route inbound messages fetched together: per item its outcome, or the exception
        :meth:`handle` raised for it (infrastructure: the caller retries that one).

        The common case goes in waves, each one pipelined round of NATS requests for the
        whole batch, in the order :meth:`handle` keeps per message: verify every envelope;
        claim every message id; decide per case, in batch order, on the cached case record
        (at most as many messages per case as the record remembers); one compare-and-set
        per case; every delivery; the audit records (one group); the message records settled.
        Everything else goes through :meth:`handle`, one message at a time, after the waves:
        receipts, anything refused or unverifiable (a refusal decided on a cached record is
        confirmed there on a fresh read), duplicates and redeliveries, replies, handovers,
        conflicts, and whatever a wave failed for (the steps are idempotent: :meth:`handle`
        finishes the work as after a crash). Once an item of a case leaves the waves, the
        later items of that case follow it, so a case's messages apply in order.
        """
        now = self._now()
        rated: dict[int, bool] = {}  # index -> whether the sender's rate allowed it
        later: set[int] = set()  # indices left to handle()
        left: dict[str, int] = {}  # case -> its first item left to handle()
        work: list[_Routing] = []
        receipts: list[_Receipting] = []
        for index, item in enumerate(items):
            if item.kind == KIND_RECEIPT:
                receipting = self._admit_receipt(index, item, now, rated, receipts)
                if receipting is None:
                    later.add(index)
                else:
                    receipts.append(receipting)
                    marked.add((receipting.message_id, receipting.org))
                    self._receipting.add((receipting.message_id, receipting.org))
                continue
            routing, case = self._admit(index, item, now, rated)
            if routing is None or (case is not None and case in left):
                later.add(index)
                if case is not None:
                    left.setdefault(case, index)
            else:
                work.append(routing)

        def leave(failed: Collection[int]) -> None:
            nonlocal work
            kept = []
            for routing in work:  # in batch order
                case = routing.header.case_id
                if routing.index in failed or (
                    case is not None and left.get(case, routing.index) < routing.index
                ):
                    later.add(routing.index)
                    if case is not None:  # the first of the case that leaves the waves
                        left[case] = min(left.get(case, routing.index), routing.index)
                else:
                    kept.append(routing)
            work = kept

        admitted = list(work)  # with their claims' revisions, for handle()
        if work:
            claims = await self._messages.claim_many([(r.message_id, r.claim) for r in work])
            for routing, claimed in zip(work, claims, strict=True):
                if isinstance(claimed, int):
                    routing.revision = claimed
            leave({r.index for r, c in zip(work, claims, strict=True) if not isinstance(c, int)})
        if work:
            leave(await self._decide_batch(work, now))
        if work or receipts:
            # Receipts: audit and relay first, the record last, as handle() does.
            failed, relayed = await asyncio.gather(
                self._outbox.deliver_many([
                    (OrgId(recipient), r.sender, r.item.data, r.message_id)
                    for r in work
                    for recipient in r.header.recipient_orgs
                ]),
                self._outbox.relay_many([
                    (OrgId(r.entry.sender), r.item.data, f"receipt:{r.message_id}:{r.org}")
                    for r in receipts
                ]),
            )  # fmt: skip
            failures = iter(failed)
            leave({
                r.index for r in work
                if [next(failures) for _ in r.header.recipient_orgs].count(None)
                != len(r.header.recipient_orgs)
            })  # fmt: skip
            receipts = self._drop(receipts, relayed, later)
        if work or receipts:
            records = [
                self._record(r.header, now, "routed", r.decided.state_before if r.decided
                             else None, r.decided.case if r.decided else None, seq=r.item.seq)
                for r in work
            ] + [self._receipt_record(r.entry, r.message_id, r.org, now, r.item.seq)
                 for r in receipts]  # fmt: skip
            try:
                await self._audit.append_many(records)
            except Exception:
                leave({r.index for r in work})
                receipts = self._drop(receipts, [False] * len(receipts), later)
        if work or receipts:
            writes: list[tuple[int, MessageId, MessageEntry, int, Callable[[], Awaitable[object]]]]
            writes = [
                (r.index, r.message_id, entry, r.revision,
                 functools.partial(self._messages.settle, r.message_id, entry, r.revision))
                for r in work
                for entry in [r.claim.model_copy(update={"status": "accepted"})]
            ] + [
                (r.index, r.message_id, r.entry, r.revision,
                 functools.partial(self._messages.update, r.message_id, _receipted_by(r.org)))
                for r in receipts
            ]  # fmt: skip
            written = await self._messages.write_many([w[1:4] for w in writes])
            stuck: set[int] = set()
            for (index, message_id, entry, _, merge), answer in zip(writes, written, strict=True):
                if isinstance(answer, int):
                    self._remember_settled(message_id, entry, answer)
                    continue
                self._settled.pop(message_id, None)
                if answer is not None:  # an error: handle() does it again
                    stuck.add(index)
                    continue
                try:
                    await merge()  # changed meanwhile (a receipt, a dead letter): merge it
                except Exception:
                    stuck.add(index)
            leave(stuck)
            receipts = self._drop(receipts, [r.index not in stuck for r in receipts], later)
        out: list[Outcome | Exception | None] = [None] * len(items)
        for receipting in receipts:
            out[receipting.index] = Outcome(accepted=True, message_id=receipting.message_id)
        for routing in work:
            out[routing.index] = Outcome(accepted=True, message_id=routing.message_id)
            _log.debug("message_routed", message_id=routing.message_id, sender=routing.sender,
                       message_type=routing.header.message_type.value,
                       case_id=routing.header.case_id)  # fmt: skip
        self.counts["batched"] += len(work) + len(receipts)
        self.counts["one_by_one"] += len(later)
        taken = {r.index: (r.revision, r.committed) for r in admitted if r.revision}
        self._receipting -= marked  # (those left to handle() are marked there again)
        marked.clear()
        await self._one_by_one(items, sorted(later), rated, taken, out)
        return [o if o is not None else RuntimeError("not routed") for o in out]

    def _admit_receipt(
        self,
        index: int,
        item: Inbound,
        now: dt.datetime,
        rated: dict[int, bool],
        admitted: list[_Receipting],
    ) -> _Receipting | None:
        """The checks of :meth:`_receipt`, for the batch path: a verified receipt, by one of
        the message's recipients, for a message this instance settled and the recipient has
        not receipted, the first for that message in the batch; or ``None`` (then
        :meth:`handle` does everything, and refuses or retries what it must)."""
        org = org_of_inbound_subject(item.subject)
        if org is None or not item.header_names <= INBOUND_ALLOWED_HEADERS:
            return None
        rated[index] = self._rate.take(org)
        if not rated[index]:
            return None
        try:
            claimed = claimed_statement(item.data, Receipt)
            key = self._directory.signer(org, KeyId(claimed.recipient_kid), claimed.at, now=now)
            receipt = verify_statement(item.data, Receipt, RECEIPT_LABEL, key)
        except (KeyDirectoryError, EnvelopeError):
            return None
        message_id = MessageId(receipt.message_id)
        cached = self._settled.get(message_id)
        if cached is None or receipt.recipient != org:
            return None
        entry, revision = cached
        if (
            entry.status != "accepted"
            or org not in entry.recipients
            or entry.sender != receipt.sender
            or org in entry.receipted_by
            or any(r.message_id == message_id for r in admitted)
            or (message_id, org) in self._receipting
        ):
            return None
        entry = entry.model_copy(update={"receipted_by": (*entry.receipted_by, org)})
        return _Receipting(index, item, org, message_id, entry, revision)

    @staticmethod
    def _drop(
        receipts: list[_Receipting], done: Sequence[object], later: set[int]
    ) -> list[_Receipting]:
        """The receipts whose step went well (``done`` is ``None`` or true for them); the
        others are left to :meth:`handle`."""
        kept = []
        for receipting, ok in zip(receipts, done, strict=True):
            if ok is None or ok is True:
                kept.append(receipting)
            else:
                later.add(receipting.index)
        return kept

    def _remember_settled(self, message_id: MessageId, entry: MessageEntry, revision: int) -> None:
        self._settled[message_id] = (entry, revision)
        self._settled.move_to_end(message_id)
        while len(self._settled) > _SETTLED_KEPT:
            self._settled.popitem(last=False)

    def _receipt_record(
        self, entry: MessageEntry, message_id: MessageId, org: OrgId, now: dt.datetime, seq: int
    ) -> AuditRecord:
        return AuditRecord.model_validate(
            {"index": 0, "prev": "", "at": now, "hub": self._instance, "event": "receipted",
             "sender": entry.sender, "message_id": message_id,
             "message_type": entry.message_type, "recipients": (org,), "inbound_seq": seq}
        )  # fmt: skip

    def _admit(
        self, index: int, item: Inbound, now: dt.datetime, rated: dict[int, bool]
    ) -> tuple[_Routing | None, str | None]:
        """The checks of :meth:`handle` up to the claim, for the batch path: a verified
        envelope that needs nothing but the common case, or ``None`` (then :meth:`handle`
        does everything, and refuses what is to be refused); and the case it verifiably
        concerns."""
        sender = org_of_inbound_subject(item.subject)
        if (
            sender is None
            or item.kind != KIND_ENVELOPE
            or not item.header_names <= INBOUND_ALLOWED_HEADERS
        ):
            return None, None
        rated[index] = self._rate.take(sender)
        if not rated[index]:
            return None, None  # refused as RATE_LIMITED by handle(), which takes no second
        try:
            verified = verify(
                item.data,
                lambda org, kid, at: self._directory.signer(org, kid, at, now=now),
                max_bytes=self._policy.limits.max_envelope_bytes,
            )
        except EnvelopeError:
            return None, None  # refused by handle(): no case changes
        header = verified.header
        if header.sender.org != sender:
            return None, None
        if (
            header.in_reply_to is not None
            or self._time_problem(header, now)
            or self._recipient_key_problem(header, now)
        ):
            return None, header.case_id
        claim = self._claim(item, sender, header)
        routing = _Routing(index, item, sender, header, MessageId(header.message_id), claim)
        return routing, header.case_id

    async def _decide_batch(self, work: list[_Routing], now: dt.datetime) -> set[int]:
        """Decide each message in order on its case as the batch leaves it, and commit each
        case once; the indices of the messages left to :meth:`handle` (and with one, the
        case's later ones, which :meth:`handle_batch` moves along).

        A case whose compare-and-set lost (another instance, or another partner's batch,
        changed it) is read afresh and decided again in another round, its messages still in
        the waves; after ``_CONFLICT_ROUNDS`` they go to :meth:`handle`."""
        ctx = Context(policy=self._policy, registry=self._registry, now=now,
                      replies_to_no_forward=False)  # fmt: skip
        failed: set[int] = set()
        pending: Counter[str] = Counter()  # deliveries allowed in this batch, per recipient
        todo, lost = work, set[str]()
        for _ in range(_CONFLICT_ROUNDS):
            if lost:  # read the lost cases afresh, side by side
                await asyncio.gather(*(self._cases.get(CaseId(c), fresh=True) for c in lost))
            lost, unknown = await self._decide_round(todo, ctx, failed, pending)
            for case_id, intended in unknown.items():
                # No answer to the compare-and-set: stored if the case now is what we wrote.
                current, _ = await self._cases.get(CaseId(case_id), fresh=True)
                if current != intended:
                    lost.add(case_id)
            if not lost:
                break
            self.counts["conflicts"] += len(lost)
            todo = [r for r in work if r.header.case_id in lost and r.index not in failed]
            for routing in todo:
                routing.decided = None
        else:
            failed |= {r.index for r in todo}
        for routing in work:
            routing.committed = routing.decided is not None and routing.index not in failed
        return failed

    async def _decide_round(
        self, todo: list[_Routing], ctx: Context, failed: set[int], pending: Counter[str]
    ) -> tuple[set[str], dict[str, CaseRecord]]:
        """One round of :meth:`_decide_batch`: decide ``todo`` on the cached case records
        (adding to ``failed`` what goes to :meth:`handle`), commit; the cases that lost, and
        those whose commit got no answer (with the record written)."""
        heads: dict[str, tuple[CaseRecord | None, int, int]] = {}  # record, revision, applied
        stopped: set[str] = set()
        for routing in todo:
            header = routing.header
            case_id = header.case_id
            if case_id is not None and case_id in stopped:
                failed.add(routing.index)
                continue
            if case_id is None:
                case, revision, applied = None, 0, 0
            elif case_id in heads:
                case, revision, applied = heads[case_id]
            else:
                case, revision = await self._cases.get(CaseId(case_id))
                applied = 0
            verdict = (
                Refuse(ReasonCode.DUPLICATE, "replay")
                if applied >= APPLIED_KEPT
                or (case is not None and case.has_applied(routing.message_id))
                else decide(header, case, ctx)
            )
            if (
                isinstance(verdict, Refuse)
                or verdict.opened is not None
                or (case_id is not None and verdict.case is None)
                or await self._backlog_full(header, pending) is not None
            ):
                failed.add(routing.index)  # handle() decides it again, and refuses there
                if case_id is not None:
                    stopped.add(case_id)
                continue
            routing.decided = verdict
            pending.update(header.recipient_orgs)
            if case_id is not None and verdict.case is not None:
                heads[case_id] = (verdict.case, revision, applied + 1)
        committing = [c for c, (record, _, applied) in heads.items() if applied and record]
        answers = await self._cases.put_many([
            (record, revision)
            for record, revision, _ in (heads[c] for c in committing)
            if record is not None
        ])  # fmt: skip
        lost = {c for c, a in zip(committing, answers, strict=True) if a is None}
        unknown = {
            c: record
            for c, a in zip(committing, answers, strict=True)
            if isinstance(a, TransportError)
            for record in [heads[c][0]]
            if record is not None
        }
        return lost, unknown

    async def _one_by_one(
        self,
        items: Sequence[Inbound],
        indices: list[int],
        rated: dict[int, bool],
        claims: dict[int, tuple[int, bool]],
        out: list[Outcome | Exception | None],
    ) -> None:
        """:meth:`handle` the items at ``indices``: those of one case one after the other in
        batch order (and all receipts, and all that claim one message id), the lanes side by
        side. ``rated``: what the sender's rate said at admission (it is not taken again);
        ``claims``: the claims the waves took (see :meth:`handle`)."""
        lanes: dict[str, list[int]] = {}
        by_id: dict[str, str] = {}
        for index in indices:
            item = items[index]
            # Receipts in one lane (two for one message must meet in order), envelopes by
            # case, and envelopes that claim one message id together (whatever their cases).
            key = "receipts" if item.kind == KIND_RECEIPT else header_case_id(item.data)
            key = key or f"#{index}"
            message_id = _claimed_message_id(item.data) if item.kind != KIND_RECEIPT else None
            if message_id is not None:
                key = by_id.setdefault(message_id, key)
            lanes.setdefault(key, []).append(index)

        async def lane(queue: list[int]) -> None:
            failed = False
            for index in queue:
                item = items[index]
                if failed and not item.final_attempt:  # after the one that failed
                    out[index] = HeldBack("an earlier message of its case failed")
                    continue
                try:
                    out[index] = await self.handle(
                        item, rated=rated.get(index), batch_claim=claims.get(index)
                    )
                except Exception as exc:  # the caller retries this one
                    out[index] = exc
                    failed = not isinstance(exc, RetryLater)

        if len(lanes) == 1:
            await lane(next(iter(lanes.values())))
        elif lanes:
            await asyncio.gather(*(lane(queue) for queue in lanes.values()))

    async def handle(
        self,
        item: Inbound,
        *,
        rated: bool | None = None,
        batch_claim: tuple[int, bool] | None = None,
    ) -> Outcome:
        """Route one inbound envelope. Raises only on infrastructure failure (then retry).

        From the batch path: ``rated`` is what the sender's rate said for it there (taken
        once, never again); ``batch_claim`` the revision of the claim the batch took for this
        very message and whether the batch committed it to its case. Not committed, it is
        decided as new (never as the resumption of an unfinished message, which would skip
        the policy for an id its case has applied); committed, the rest is finished."""
        now = self._now()
        sender = org_of_inbound_subject(item.subject)
        if sender is None:
            return Outcome(accepted=False, reason=ReasonCode.SENDER_MISMATCH)
        if not item.header_names <= INBOUND_ALLOWED_HEADERS:
            # JetStream acted on any Nats-* header before the hub saw the message; within
            # the sender's own stream that can hurt nobody else, but it is not ours to accept.
            return await self._refuse(
                item, sender, now, ReasonCode.HEADER_NOT_ALLOWED, "header not allowed", None
            )
        if not (self._rate.take(sender) if rated is None else rated):
            return await self._refuse(
                item, sender, now, ReasonCode.RATE_LIMITED, "above the sender's rate", None
            )
        if item.kind == KIND_RECEIPT:
            return await self._receipt(item, sender, now)
        try:
            # A revoked key is refused from the revocation on, whatever created_at claims.
            verified = verify(
                item.data,
                lambda org, kid, at: self._directory.signer(org, kid, at, now=now),
                max_bytes=self._policy.limits.max_envelope_bytes,
            )
        except EnvelopeError as exc:
            code = exc.code
            claimed = _claimed_message_id(item.data)
            if claimed is not None:
                item = dataclasses.replace(item, msg_id_hint=claimed)
            return await self._refuse(item, sender, now, code, exc.reason, None)
        header = verified.header
        if header.sender.org != sender:
            return await self._refuse(
                item, sender, now, ReasonCode.SENDER_MISMATCH, "signed sender differs", header
            )
        message_id = MessageId(header.message_id)
        claim = self._claim(item, sender, header)
        resumed = False
        if batch_claim is not None:  # taken by the batch path for this very message
            (revision, resumed), seen = batch_claim, None
        else:
            seen, revision = await self._messages.claim(message_id, claim)
        if seen is not None:
            own = seen.sender == sender
            if own and seen.status != "claimed" and seen.inbound_seq == item.seq:
                # our own redelivery after a crash: done already
                return Outcome(accepted=seen.status == "accepted", message_id=message_id)
            same = not seen.digest or seen.digest == claim.digest  # ("": recorded before digests)
            if not own or seen.status != "claimed" or not same:
                return await self._refuse(item, sender, now, ReasonCode.DUPLICATE, "replay", header)
            # The sender's own claim for these very bytes, the work unfinished: a crash, or the
            # operator replaying a quarantined message. Every step is idempotent; carry on.
            claim = seen
        decided = await self._decide(header, now, resumed=resumed or seen is not None)
        if isinstance(decided, Refuse):
            outcome = await self._refuse(
                item, sender, now, decided.reason, decided.detail, header,
                case_exists=decided.case_exists, fields=decided.fields,
            )  # fmt: skip
            refused = claim.model_copy(update={"status": "refused"})
            await self._messages.settle(message_id, refused, revision)
            return outcome
        await asyncio.gather(
            *(
                self._outbox.deliver(OrgId(r), sender, item.data, message_id)
                for r in header.recipient_orgs
            )
        )
        await self._audit.append(
            self._record(header, now, "routed", decided.state_before, decided.case, seq=item.seq)
        )
        if decided.opened is not None:  # the opened case's history starts with this message
            await self._audit.append(
                self._record(header, now, "routed", None, decided.opened, seq=item.seq)
            )
        accepted = claim.model_copy(update={"status": "accepted"})
        await self._messages.settle(message_id, accepted, revision)
        # Debug, not info: one line per message costs the hot path (the status answer counts).
        _log.debug(
            "message_routed",
            message_id=message_id,
            message_type=header.message_type.value,
            sender=sender,
            recipients=list(header.recipient_orgs),
            case_id=header.case_id,
            state_before=decided.state_before,
            state_after=decided.case.state if decided.case else None,
        )
        return Outcome(accepted=True, message_id=message_id)

    def _claim(self, item: Inbound, sender: OrgId, header: EnvelopeHeader) -> MessageEntry:
        """The record that claims a verified envelope's message id for its sender."""
        registered = self._registry.partners()
        return MessageEntry(
            status="claimed",
            inbound_seq=item.seq,
            message_type=header.message_type,
            no_forward=header.no_forward,
            sender=sender,
            # registered organisations only: another name in a header is the sender's text
            recipients=tuple(o for o in header.recipient_orgs if o in registered),
            digest=envelope_digest(item.data),
        )

    async def _decide(
        self, header: EnvelopeHeader, now: dt.datetime, *, resumed: bool
    ) -> Allow | Refuse:
        """Time window, recipient keys, then the policy against the case (and its commit).
        ``resumed``: this message's own unfinished claim was taken over (a redelivery)."""
        problem = self._time_problem(header, now) or self._recipient_key_problem(header, now)
        if problem:
            return Refuse(problem[0], problem[1])
        replies_to_no_forward = False
        if header.in_reply_to is not None:
            original = await self._messages.get(MessageId(header.in_reply_to))
            replies_to_no_forward = (
                original is not None and original.status == "accepted" and original.no_forward
            )
        ctx = Context(
            policy=self._policy,
            registry=self._registry,
            now=now,
            replies_to_no_forward=replies_to_no_forward,
        )
        return await self._decide_and_commit(header, ctx, resumed=resumed)

    async def _receipt(self, item: Inbound, org: OrgId, now: dt.datetime) -> Outcome:
        """A recipient's signed receipt: record it, audit it, pass it on to the sender."""
        try:
            claimed = claimed_statement(item.data, Receipt)
            key = self._directory.signer(org, KeyId(claimed.recipient_kid), claimed.at, now=now)
            receipt = verify_statement(item.data, Receipt, RECEIPT_LABEL, key)
        except (KeyDirectoryError, EnvelopeError):
            return await self._refuse(
                item, org, now, ReasonCode.MALFORMED, "not a valid signed receipt", None
            )
        message_id = MessageId(receipt.message_id)
        pair = (message_id, org)
        if pair in self._receipting:
            raise RetryLater("a receipt for this message and recipient is being recorded")
        self._receipting.add(pair)
        try:
            return await self._record_receipt(item, org, now, receipt, message_id)
        finally:
            self._receipting.discard(pair)

    async def _record_receipt(
        self, item: Inbound, org: OrgId, now: dt.datetime, receipt: Receipt, message_id: MessageId
    ) -> Outcome:
        current = await self._messages.get(message_id) if receipt.recipient == org else None
        if (current is None or current.status == "claimed") and not item.final_attempt:
            # The recipient may acknowledge before the hub has finished the message (its record
            # is settled last, after the deliveries and the audit record): look again shortly.
            raise RetryLater("receipt before its message's record")
        if (
            current is None
            or current.status != "accepted"
            or org not in current.recipients
            or current.sender != receipt.sender
        ):
            return await self._refuse(
                item, org, now, ReasonCode.NOT_PERMITTED, "receipt for no message of ours", None
            )
        if org in current.receipted_by:  # a replay: relayed and audited once only
            return await self._refuse(
                item, org, now, ReasonCode.DUPLICATE, "receipt already recorded", None
            )
        # Audit and relay first, record last (as for a routed message): a crash in between
        # means a redelivery that finishes the work; the relay is deduplicated by its id.
        await self._audit.append(self._receipt_record(current, message_id, org, now, item.seq))
        await self._outbox.relay(OrgId(current.sender), item.data, f"receipt:{message_id}:{org}")
        await self._messages.update(message_id, _receipted_by(org))
        self._settled.pop(message_id, None)  # (the batch path's copy is stale now)
        _log.info("message_receipted", message_id=message_id, sender=current.sender, recipient=org)
        return Outcome(accepted=True, message_id=message_id)

    async def state(self, asker: OrgId, message_id: MessageId) -> DeliveryState:
        """What the hub knows about one of ``asker``'s own messages (nothing about others')."""
        entry = await self._messages.get(message_id)
        if entry is None or entry.sender != asker or entry.status != "accepted":
            return DeliveryState(message_id=message_id, known=False)
        done = set(entry.receipted_by) >= set(entry.recipients)
        return DeliveryState(
            message_id=message_id,
            known=True,
            state="receipted" if done else "accepted",
            recipients=entry.recipients,
            receipted_by=entry.receipted_by,
            dead_lettered_for=entry.dead_lettered_for,
            expired_for=entry.expired_for,
        )

    async def expired(self, envelope: bytes, recipient: OrgId) -> None:
        """Record that ``envelope`` expired before ``recipient`` took it and tell the sender
        (the caller removed it from the delivery stream)."""
        detail = f"{recipient} did not take it before it expired"
        await self._undelivered(
            envelope, recipient, "expired", ReasonCode.UNDELIVERED_EXPIRED, detail
        )

    async def dead_letter(self, envelope: bytes, recipient: OrgId, deliveries: int) -> None:
        """Record that ``recipient`` never accepted ``envelope`` and tell the sender (the
        message itself was moved to the dead-letter stream by the caller)."""
        detail = f"{recipient} did not accept it after {deliveries} deliveries"
        await self._undelivered(
            envelope, recipient, "dead-lettered", ReasonCode.UNDELIVERABLE, detail
        )

    def replay_problem(self, data: bytes, recipient: OrgId) -> str | None:
        """Why a dead-lettered delivery to ``recipient`` may not go out again today, or
        ``None``: the envelope expired, the recipient is no longer a registered partner, or
        the key it was sealed to is no longer usable (revoked, expired). Notices and receipts
        (not envelopes) carry no such header and may go."""
        try:
            header = decode_header(split_envelope(data)[0])
        except (EnvelopeError, ContractError):
            return None  # a notice or a receipt, signed by the hub or the recipient
        now = self._now()
        if now >= header.expires_at:
            return "expired"
        if recipient not in self._registry.partners() or recipient not in self._directory:
            return "recipient-not-registered"
        mine = [r for r in header.recipients if r.org == recipient]
        for entry in mine:
            try:
                self._directory.encryption_key(recipient, entry.kid, now)
            except KeyDirectoryError:
                return "recipient-key-stale"
        return None

    async def replayed(
        self, data: bytes, recipient: OrgId | None, sender: OrgId | None, seq: int
    ) -> None:
        """Record that the operator had dead letter ``seq`` delivered again: to ``recipient``
        (a delivery) or back to the hub from ``sender`` (a quarantined inbound message)."""
        header = None
        with contextlib.suppress(EnvelopeError, ContractError):
            header = decode_header(split_envelope(data)[0])
        detail = f"dead letter {seq} replayed by the operator"
        if recipient is not None:
            record = self._record(header, self._now(), "replayed", None, None,
                                  sender=None if header else self._identity.org,
                                  detail=detail)  # fmt: skip
            record = record.model_copy(update={"recipients": (recipient,)})
        else:
            record = self._record(None, self._now(), "replayed", None, None, sender=sender,
                                  detail=detail, message_id=_claimed_message_id(data))  # fmt: skip
        await self._audit.append(record)
        _log.info("dead_letter_replayed", seq=seq, recipient=recipient, sender=sender)

    async def quarantined(self, sender: OrgId, seq: int, attempts: int, data: bytes) -> None:
        """Record that the hub set aside ``sender``'s inbound message ``seq`` after
        ``attempts`` failed attempts (the caller moved it to quarantine) and tell the sender,
        naming the message id it claims (its own, for its own message)."""
        now = self._now()
        message_id = _claimed_message_id(data)
        await self._audit.append(
            self._record(
                None,
                now,
                "quarantined",
                None,
                None,
                sender=sender,
                reason=ReasonCode.PROCESSING_FAILED,
                detail=f"set aside after {attempts} attempts",
                message_id=message_id,
                seq=seq,
            )
        )
        await self._notify(
            sender,
            now,
            ReasonCode.PROCESSING_FAILED,
            MessageId(message_id) if message_id else None,
            f"quarantine:{sender}:{seq}",
        )
        _log.error("message_quarantined", sender=sender, inbound_seq=seq, attempts=attempts)

    async def _undelivered(
        self, envelope: bytes, recipient: OrgId, event: str, reason: ReasonCode, detail: str
    ) -> None:
        now = self._now()
        try:
            header = decode_header(split_envelope(envelope)[0])
        except (EnvelopeError, ContractError):
            return
        sender = OrgId(header.sender.org)
        field = "dead_lettered_for" if event == "dead-lettered" else "expired_for"
        await self._messages.update(
            MessageId(header.message_id),
            lambda e: e.model_copy(update={field: (*getattr(e, field), recipient)}),
        )
        record = self._record(header, now, event, None, None, reason=reason, detail=detail)
        await self._audit.append(record.model_copy(update={"recipients": (recipient,)}))
        await self._notify(
            sender,
            now,
            reason,
            MessageId(header.message_id),
            dedupe_id=f"{event}:{header.message_id}:{recipient}",
        )
        _log.warning(
            "message_undelivered",
            kind=event,
            message_id=header.message_id,
            sender=sender,
            recipient=recipient,
        )

    async def _notify(
        self,
        sender: OrgId,
        now: dt.datetime,
        reason: ReasonCode,
        message_id: MessageId | None,
        dedupe_id: str,
        fields: tuple[str, ...] = (),
    ) -> None:
        notice = RefusalNotice(
            message_id=message_id,
            recipient=sender,
            reason=reason,
            # the fields at fault by their names in the spec (a closed set), in the text: the
            # notice's format stays as every SDK version reads it
            text=REASON_TEXTS[reason] + (f" (fields: {', '.join(fields)})" if fields else ""),
            at=now,
            hub=self._identity.org,
            hub_kid=self._identity.signing_kid,
        )
        hub = self._identity.org
        waiting = await self._outbox.backlog(sender, hub)
        if waiting.from_sender >= self._policy.limits.max_backlog_per_sender:
            return  # it does not take its notices: more of them would only fill the store
        if sender in self._directory:
            await self._outbox.notify(
                sender,
                sign_statement(notice, self._identity.signing_key, REFUSAL_LABEL),
                dedupe_id=dedupe_id,
            )

    async def _decide_and_commit(
        self, header: EnvelopeHeader, ctx: Context, *, resumed: bool
    ) -> Allow | Refuse:
        if header.case_id is None:
            verdict = decide(header, None, ctx)
            if isinstance(verdict, Refuse):
                return verdict
            return (await self._backlog_full(header)) or verdict
        fresh = False  # the first read may come from the cache; a refusal needs a fresh one
        for _ in range(_CAS_ATTEMPTS):
            case, revision = await self._cases.get(CaseId(header.case_id), fresh=fresh)
            if case is not None and case.has_applied(MessageId(header.message_id)):
                if not resumed:
                    # The case applied this id, but this is no redelivery of ours: the id was
                    # used before (its registry entry has since expired). Never skip the policy.
                    return Refuse(ReasonCode.DUPLICATE, "replay", case_exists=True)
                # committed before a crash: finish what followed the commit
                opened = opened_by(header, ctx)
                if opened is not None:
                    await self._open(opened, header)
                return Allow(case=case, state_before=None, opened=opened)
            verdict = decide(header, case, ctx)
            if isinstance(verdict, Refuse):
                if not fresh:  # decided on a cached record: it stands only on a fresh one
                    fresh = True
                    continue
                # A refusal about an existing case names it in the audit trail (the privacy
                # officer sees every attempt on the case); one about a case that does not
                # exist does not: that id is the sender's text, not a case.
                return dataclasses.replace(verdict, case_exists=case is not None)
            # Back-pressure before the commit: a refused message never changes the case.
            full = await self._backlog_full(header)
            if full is not None:
                return dataclasses.replace(full, case_exists=case is not None)
            if verdict.case is None or await self._cases.put(verdict.case, revision):
                if verdict.opened is not None:
                    await self._open(verdict.opened, header)
                return verdict
            fresh = True  # someone else changed the case: read it again
        return Refuse(ReasonCode.CONFLICT, "case kept changing", case_exists=True)

    async def _open(self, opened: CaseRecord, header: EnvelopeHeader) -> None:
        """Create the case a message opens, once the case it comes from is committed (a crash
        in between is finished by the redelivery: the old case has applied the message, and
        the creation is idempotent)."""
        if await self._cases.put(opened, 0):
            return
        existing, _ = await self._cases.get(CaseId(opened.case_id), fresh=True)
        if existing is None or not existing.has_applied(MessageId(header.message_id)):
            # Its id is derived from this message's (claimed, unique) id: only a hash
            # collision gets here. Fail the message rather than merge two cases.
            raise SchakelError("the case this message opens exists already")

    async def _backlog_full(
        self, header: EnvelopeHeader, pending: Counter[str] | None = None
    ) -> Refuse | None:
        """Whether a recipient's backlog (plus ``pending``: deliveries this batch has
        allowed and not yet made, per recipient) is at its limit, in all or for the sender."""
        limits = self._policy.limits
        sender = OrgId(header.sender.org)
        for org in header.recipient_orgs:
            backlog = await self._outbox.backlog(OrgId(org), sender)
            extra = pending[org] if pending else 0  # also against the sender's share: at most
            if backlog.total + extra >= limits.max_backlog:
                return Refuse(ReasonCode.BACKLOG_FULL, "recipient backlog at its limit")
            if backlog.from_sender + extra >= limits.max_backlog_per_sender:
                return Refuse(ReasonCode.SENDER_QUOTA, "sender's share of a backlog used up")
        return None

    def _time_problem(
        self, header: EnvelopeHeader, now: dt.datetime
    ) -> tuple[ReasonCode, str] | None:
        limits = self._policy.limits
        if now >= header.expires_at:
            return ReasonCode.EXPIRED, "expired before routing"
        if header.created_at > now + dt.timedelta(seconds=limits.max_clock_skew_seconds):
            return ReasonCode.NOT_YET_VALID, "created in the future"
        if header.expires_at - header.created_at > dt.timedelta(days=limits.max_lifetime_days):
            return ReasonCode.LIFETIME_TOO_LONG, "lifetime above the limit"
        return None

    def _recipient_key_problem(
        self, header: EnvelopeHeader, now: dt.datetime
    ) -> tuple[ReasonCode, str] | None:
        for recipient in header.recipients:
            try:
                self._directory.encryption_key(OrgId(recipient.org), recipient.kid, now)
            except KeyDirectoryError as exc:  # unknown, revoked or expired: nobody could open it
                # not the message: it names the organisation the sender wrote
                return ReasonCode.RECIPIENT_KEY_STALE, f"a recipient's key: {exc.code.value}"
        return None

    def _record(
        self,
        header: EnvelopeHeader | None,
        now: dt.datetime,
        event: str,
        state_before: object,
        case: CaseRecord | None,
        *,
        sender: OrgId | None = None,
        reason: ReasonCode | None = None,
        detail: str | None = None,
        message_id: str | None = None,
        seq: int | None = None,
        case_exists: bool = True,
    ) -> AuditRecord:
        fields: dict[str, object] = {}
        if header is not None:
            registered = self._registry.partners()
            fields = {
                "message_id": header.message_id,
                "message_type": header.message_type,
                # Only what is known to be a case, and only registered organisations: anything
                # else in a refused header is the sender's text.
                "case_id": case.case_id if case else header.case_id if case_exists else None,
                "recipients": tuple(o for o in header.recipient_orgs if o in registered),
                "purpose": header.purpose,
                "legal_basis": header.legal_basis,
                "categories": header.categories,
            }
        elif message_id is not None:
            fields["message_id"] = message_id
        return AuditRecord.model_validate(
            {
                "index": 0,
                "prev": "",
                "at": now,
                "hub": self._instance,
                "event": event,
                "sender": sender or (header.sender.org if header else ""),
                "state_before": state_before,
                "state_after": case.state if case else None,
                "reason": reason,
                # Details are the hub's own words; the bound is a second line of defence.
                "detail": detail[:_MAX_DETAIL] if detail else detail,
                "inbound_seq": seq,
                **fields,
            }
        )

    async def _refuse(
        self,
        item: Inbound,
        sender: OrgId,
        now: dt.datetime,
        reason: ReasonCode,
        detail: str,
        header: EnvelopeHeader | None,
        *,
        case_exists: bool = False,
        fields: tuple[str, ...] = (),
    ) -> Outcome:
        hint = item.msg_id_hint if item.msg_id_hint and _UUID.match(item.msg_id_hint) else None
        message_id = MessageId(header.message_id) if header else MessageId(hint) if hint else None
        if not self._refusal_budget.take(sender):
            # Beyond its budget a sender's refusals are counted, and recorded together by
            # flush_refusals(): junk cannot grow the audit trail faster than the budget.
            self._uncounted[(sender, reason)] += 1
            return Outcome(accepted=False, reason=reason, message_id=message_id)
        # The audit record is stored before the notice goes out, as for a routed message: a
        # sender never learns of a refusal the trail does not hold.
        await self._audit.append(
            self._record(
                header,
                now,
                "refused",
                None,
                None,
                sender=sender,
                reason=reason,
                detail=detail,
                message_id=message_id,
                seq=item.seq,
                case_exists=case_exists,
            )
        )
        await self._notify(
            sender, now, reason, message_id, dedupe_id=f"refusal:{sender}:{item.seq}",
            fields=fields,
        )  # fmt: skip
        _log.info(
            "message_refused",
            message_id=message_id,
            message_type=header.message_type.value if header else None,
            sender=sender,
            case_id=header.case_id if header and case_exists else None,
            reason=reason.value,
            detail=detail,
        )
        return Outcome(accepted=False, reason=reason, message_id=message_id)


def _receipted_by(org: OrgId) -> Callable[[MessageEntry], MessageEntry]:
    """The change that records ``org``'s receipt in a message record (once)."""

    def add(entry: MessageEntry) -> MessageEntry:
        if org in entry.receipted_by:
            return entry
        return entry.model_copy(update={"receipted_by": (*entry.receipted_by, org)})

    return add


def _claimed_message_id(data: bytes) -> str | None:
    """The message id an unverifiable envelope claims, to echo to its own publisher only."""
    try:
        header_bytes, _, _ = split_envelope(data)
        return decode_header(header_bytes).message_id
    except (EnvelopeError, ContractError):
        return None
