"""The router's four stores in memory: the same contracts as ``hub/stores.py`` and the audit
trail, without NATS. For tests of the router's rules (what it stores, in which order) and for
simulations; not for production (nothing survives the process).

Every store writes what it does into one shared :class:`Journal`, so a test can assert the
order of the router's steps across stores.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from schakel.bus import TransportError
from schakel.contracts.ids import CaseId, MessageId, OrgId
from schakel.contracts.topology import delivery_subject
from schakel.hub.audit import GENESIS, AuditRecord
from schakel.hub.cases import CaseRecord
from schakel.hub.stores import Backlog, MessageEntry

_T = TypeVar("_T")

__all__ = [
    "Journal",
    "MemoryAudit",
    "MemoryCaseStore",
    "MemoryMessageRegistry",
    "MemoryOutbox",
    "StoreFailure",
]


class StoreFailure(TransportError):
    """A store that was told to fail (as a NATS store does when NATS is unreachable)."""


@dataclass
class Journal:
    """What the stores did, in order: ``(store, action, subject)`` entries."""

    entries: list[tuple[str, str, str]] = field(default_factory=list)
    fail_on: set[tuple[str, str]] = field(default_factory=set)
    # (store, action) -> how many more times it succeeds before it fails
    fail_after: dict[tuple[str, str], int] = field(default_factory=dict)
    # (store, action) done, and then answered with a failure (a timeout after the write)
    lose_answer: set[tuple[str, str]] = field(default_factory=set)

    def answer(self, store: str, action: str) -> None:
        """After an action was done: fail it all the same if told to (its answer is lost)."""
        if (store, action) in self.lose_answer:
            raise StoreFailure(f"{store} {action}: no answer")

    def write(self, store: str, action: str, subject: str) -> None:
        """Record an action, or fail it if told to."""
        if (store, action) in self.fail_on:
            raise StoreFailure(f"{store} {action} failed")
        left = self.fail_after.get((store, action))
        if left is not None:
            if left == 0:
                del self.fail_after[(store, action)]
                raise StoreFailure(f"{store} {action} failed")
            self.fail_after[(store, action)] = left - 1
        self.entries.append((store, action, subject))

    def actions(self) -> list[str]:
        """``store.action`` of every entry, in order."""
        return [f"{store}.{action}" for store, action, _ in self.entries]


class MemoryCaseStore:
    """Case records with compare-and-set on a revision."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self.records: dict[CaseId, tuple[CaseRecord, int]] = {}

    async def get(self, case_id: CaseId) -> tuple[CaseRecord | None, int]:
        """The record and its revision (``None`` and 0 when there is none)."""
        await asyncio.sleep(0)  # a store answers later, as over the network
        record, revision = self.records.get(case_id, (None, 0))
        return record, revision

    async def put(self, record: CaseRecord, revision: int) -> int | None:
        """Write ``record`` if the case is still at ``revision``: its new revision."""
        await asyncio.sleep(0)
        current = self.records.get(record.case_id, (None, 0))[1]
        if current != revision:
            return None
        self._journal.write("cases", "put", record.case_id)
        self.records[record.case_id] = (record, revision + 1)
        self._journal.answer("cases", "put")
        return revision + 1

    async def put_many(
        self, items: Sequence[tuple[CaseRecord, int]]
    ) -> list[int | TransportError | None]:
        """:meth:`put` for each, an error per item as the KV store gives it."""
        return [await _or_error(self.put(record, revision)) for record, revision in items]


class MemoryMessageRegistry:
    """Message ids with the claim / settle / update semantics of the KV registry."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self.entries: dict[MessageId, tuple[MessageEntry, int]] = {}

    async def get(self, message_id: MessageId) -> MessageEntry | None:
        """What is known about ``message_id``."""
        await asyncio.sleep(0)
        found = self.entries.get(message_id)
        return None if found is None else found[0]

    async def claim(
        self, message_id: MessageId, entry: MessageEntry
    ) -> tuple[MessageEntry | None, int]:
        """Take ``message_id`` unless taken; else the existing entry and its revision."""
        await asyncio.sleep(0)
        if message_id in self.entries:
            return self.entries[message_id]
        self._journal.write("messages", "claim", message_id)
        self.entries[message_id] = (entry, 1)
        return None, 1

    async def claim_many(
        self, items: Sequence[tuple[MessageId, MessageEntry]]
    ) -> list[int | TransportError | None]:
        """Take each id: its revision, ``None`` when taken, or the error."""
        out: list[int | TransportError | None] = []
        for message_id, entry in items:
            try:
                seen, revision = await self.claim(message_id, entry)
                out.append(None if seen is not None else revision)
            except TransportError as exc:
                out.append(exc)
        return out

    async def write_many(
        self, items: Sequence[tuple[MessageId, MessageEntry, int]]
    ) -> list[int | TransportError | None]:
        """Replace each entry if still at its revision: the new revision, ``None``, or the
        error."""
        out: list[int | TransportError | None] = []
        for message_id, entry, revision in items:
            await asyncio.sleep(0)
            current = self.entries.get(message_id)
            if current is None or current[1] != revision:
                out.append(None)
                continue
            try:
                self._journal.write("messages", "settle", f"{message_id} {entry.status}")
            except TransportError as exc:
                out.append(exc)
                continue
            self.entries[message_id] = (entry, revision + 1)
            out.append(revision + 1)
        return out

    async def settle(self, message_id: MessageId, entry: MessageEntry, revision: int) -> None:
        """Replace the claimed entry by its final form (merging the status on a conflict)."""
        await asyncio.sleep(0)
        if message_id not in self.entries:  # gone meanwhile (its lifetime ended): as the KV
            return
        current, current_revision = self.entries[message_id]
        if current_revision != revision:
            entry = current.model_copy(update={"status": entry.status})
        self._journal.write("messages", "settle", f"{message_id} {entry.status}")
        self.entries[message_id] = (entry, current_revision + 1)

    async def update(
        self, message_id: MessageId, change: Callable[[MessageEntry], MessageEntry]
    ) -> MessageEntry | None:
        """Apply ``change``."""
        await asyncio.sleep(0)
        found = self.entries.get(message_id)
        if found is None:
            return None
        entry = change(found[0])
        self._journal.write("messages", "update", message_id)
        self.entries[message_id] = (entry, found[1] + 1)
        return entry


class MemoryAudit:
    """A hash-chained audit trail in a list."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self.records: list[AuditRecord] = []

    async def append(self, record: AuditRecord) -> AuditRecord:
        """Chain and store ``record``."""
        for _ in range(3):  # the real trail is slower: it stores a group, then answers
            await asyncio.sleep(0)
        prev = self.records[-1].hash if self.records else GENESIS
        sealed = record.sealed(len(self.records), prev)
        self._journal.write("audit", "append", sealed.event)
        self.records.append(sealed)
        return sealed

    async def append_many(self, records: Sequence[AuditRecord]) -> list[AuditRecord]:
        """:meth:`append` each, in order."""
        return [await self.append(record) for record in records]


class MemoryOutbox:
    """Deliveries, relayed receipts and notices, kept per recipient."""

    def __init__(self, journal: Journal, hub: OrgId) -> None:
        self._journal = journal
        self._hub = hub
        self.waiting: dict[str, list[tuple[str, bytes]]] = {}  # subject -> (dedupe id, data)

    def _put(self, subject: str, dedupe_id: str, data: bytes) -> None:
        queue = self.waiting.setdefault(subject, [])
        if all(existing != dedupe_id for existing, _ in queue):  # deduplicated by id
            queue.append((dedupe_id, data))

    async def backlog(self, recipient: OrgId, sender: OrgId) -> Backlog:
        """Deliveries waiting for ``recipient``, in all and from ``sender``."""
        await asyncio.sleep(0)
        prefix = delivery_subject(recipient, sender).rsplit(".", 1)[0] + "."
        counts = {s: len(q) for s, q in self.waiting.items() if s.startswith(prefix)}
        return Backlog(sum(counts.values()), counts.get(delivery_subject(recipient, sender), 0))

    async def deliver(
        self, recipient: OrgId, sender: OrgId, envelope: bytes, message_id: MessageId
    ) -> None:
        """One copy of an envelope for one recipient."""
        await asyncio.sleep(0)
        self._journal.write("outbox", "deliver", recipient)
        self._put(delivery_subject(recipient, sender), f"{message_id}:{recipient}", envelope)

    async def deliver_many(
        self, items: Sequence[tuple[OrgId, OrgId, bytes, MessageId]]
    ) -> list[TransportError | None]:
        """:meth:`deliver` for each: ``None`` when stored, or the error."""
        return [
            e if isinstance(e, TransportError) else None
            for e in [await _or_error(self.deliver(*item)) for item in items]
        ]

    async def relay_many(
        self, items: Sequence[tuple[OrgId, bytes, str]]
    ) -> list[TransportError | None]:
        """:meth:`relay` for each: ``None`` when stored, or the error."""
        return [
            e if isinstance(e, TransportError) else None
            for e in [await _or_error(self.relay(*item)) for item in items]
        ]

    async def relay(self, org: OrgId, receipt: bytes, dedupe_id: str) -> None:
        """A receipt passed on to ``org``."""
        await asyncio.sleep(0)
        self._journal.write("outbox", "relay", org)
        self._put(delivery_subject(org, self._hub), dedupe_id, receipt)

    async def notify(self, org: OrgId, notice: bytes, dedupe_id: str) -> None:
        """A refusal notice for ``org``."""
        await asyncio.sleep(0)
        self._journal.write("outbox", "notify", org)
        self._put(delivery_subject(org, self._hub), dedupe_id, notice)


async def _or_error(step: Awaitable[_T]) -> _T | TransportError:
    """What ``step`` gives, or the store's error (as the pipelined stores answer per item)."""
    try:
        return await step
    except TransportError as exc:
        return exc
