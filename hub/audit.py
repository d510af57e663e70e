"""The audit trail: metadata of every routed and refused message, hash-chained.

Each record holds who sent which message type to whom, when, for which pseudonymous case and
state, and why it was refused; never content. ``hash`` is SHA-256 over the record's canonical
JSON without ``hash``; ``prev`` is the previous record's hash (64 zeros for the first), so
changing, removing or reordering any record breaks every link after it. Records are appended
to the ``SCHAKEL_AUDIT`` stream in groups (one stream message holds one or more records, one
per line) with an expected-last-sequence check, so several hub instances extend one chain
instead of forking it. The stream denies deletes and purges.

Only the hub's user can write to the stream (the hub's own account). Should anything else land
there all the same, every reader skips an entry that is not an audit record at all and reports
it (``ChainReport.foreign``, the ``audit_entry_skipped`` alarm); the writer continues the
chain from the last record whose own hash holds. A record that parses but does not fit the
chain is tampering, and :func:`verify_chain` names it as the break.

A hub that crashes after storing a record but before acknowledging the inbound message
records that message again when it is redelivered; both records carry the same
``inbound_seq``, so a reader can tell a re-processing from a second message.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import structlog
from pydantic import BaseModel, ConfigDict, ValidationError

from schakel.bus import Bus, stop
from schakel.contracts.canonical import canonical_dumps, canonical_json
from schakel.contracts.enums import (
    CaseState,
    DataCategory,
    LegalBasis,
    MessageType,
    Purpose,
    ReasonCode,
)
from schakel.contracts.errors import SchakelError
from schakel.contracts.header import Timestamp
from schakel.contracts.ids import CaseIdField, MessageIdField, OrgIdField
from schakel.contracts.topology import AUDIT_STREAM, AUDIT_SUBJECT

__all__ = [
    "GENESIS",
    "MAX_GROUP_BYTES",
    "MAX_RECORD_BYTES",
    "AuditError",
    "AuditRecord",
    "AuditTrail",
    "ChainReport",
    "format_record",
    "parse_record",
    "read_trail",
    "verify_chain",
]

GENESIS: Final = "0" * 64
# A record holds header metadata (the header is at most 16 KiB) and the hub's own words: far
# below this. The writer refuses to store a record readers would not accept.
MAX_RECORD_BYTES: Final = 64 * 1024
# One stream message holds a group of records; stay well below the server's max_payload.
MAX_GROUP_BYTES: Final = 512 * 1024
_log = structlog.get_logger("schakel.audit")


class AuditRecord(BaseModel):
    """One audit record. Metadata only."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int
    prev: str
    hash: str = ""
    at: Timestamp
    hub: str
    event: Literal[
        "routed", "refused", "dead-lettered", "receipted", "expired", "quarantined", "replayed"
    ]
    sender: OrgIdField
    message_id: MessageIdField | None = None
    message_type: MessageType | None = None
    case_id: CaseIdField | None = None
    state_before: CaseState | None = None
    state_after: CaseState | None = None
    recipients: tuple[OrgIdField, ...] = ()
    purpose: Purpose | None = None
    legal_basis: LegalBasis | None = None
    categories: tuple[DataCategory, ...] = ()
    reason: ReasonCode | None = None
    detail: str | None = None
    inbound_seq: int | None = None

    def compute_hash(self) -> str:
        """SHA-256 (hex) of the canonical record without its ``hash`` field."""
        return hashlib.sha256(canonical_json(self.model_copy(update={"hash": ""}))).hexdigest()

    def sealed(self, index: int, prev: str) -> AuditRecord:
        """This record placed in the chain after ``prev``."""
        return self.placed(index, prev)[0]

    def placed(self, index: int, prev: str) -> tuple[AuditRecord, bytes]:
        """This record placed in the chain after ``prev``, and its canonical line: one dump
        for both the hash and the line (what :meth:`compute_hash` and ``canonical_json``
        would give, at half the cost; the writer seals every record on the hot path)."""
        fields = self.model_dump(mode="json", exclude_none=True)
        fields.update(index=index, prev=prev, hash="")
        digest = hashlib.sha256(canonical_dumps(fields)).hexdigest()
        fields["hash"] = digest
        placed = self.model_copy(update={"index": index, "prev": prev, "hash": digest})
        return placed, canonical_dumps(fields)


class AuditError(SchakelError):
    """The audit trail could not store a record."""


def _size_hint(record: AuditRecord) -> int:
    """Roughly the stored size of ``record`` (recipients and detail are what vary)."""
    return 600 + 40 * len(record.recipients) + len(record.detail or "")


def parse_record(raw: bytes) -> AuditRecord | None:
    """The audit record ``raw`` holds, or ``None`` when it is not one (bounded: size first,
    then pydantic's depth-limited parser)."""
    if not raw or len(raw) > MAX_RECORD_BYTES:
        return None
    try:
        return AuditRecord.model_validate_json(raw)
    except ValidationError:
        return None


class AuditTrail:
    """Appends records to the chain in the audit stream, in groups (group commit).

    Callers await :meth:`append`; a single writer task takes every record waiting at that
    moment, chains them and stores them as one stream message (JSON Lines, one canonical record
    per line) with an expected-last-sequence check, then wakes the callers. Under load this
    turns one JetStream round trip per message into one per group.
    """

    def __init__(self, bus: Bus, *, max_group: int = 512) -> None:
        self._bus = bus
        self._max_group = max_group
        self._queue: asyncio.Queue[tuple[AuditRecord, asyncio.Future[AuditRecord]]] = (
            asyncio.Queue()
        )
        self._tail: tuple[int, int, str] | None = None  # stream seq, index, hash
        self._writer: asyncio.Task[None] | None = None

    async def _load_tail(self) -> tuple[int, int, str]:
        """The stream's last sequence and the last sound record (walking back over foreign
        entries)."""
        last = await self._bus.last(AUDIT_STREAM, AUDIT_SUBJECT)
        if last is None:
            return 0, -1, GENESIS
        last_seq = seq = last.seq
        message = last
        while True:
            for line in reversed(message.data.split(b"\n")):
                record = parse_record(line)
                if record is not None and record.compute_hash() == record.hash:
                    return last_seq, record.index, record.hash
            _log.error("audit_entry_skipped", seq=seq)
            seq -= 1
            if seq < 1:
                return last_seq, -1, GENESIS
            found = await self._bus.get(AUDIT_STREAM, seq)
            if found is not None:
                message = found

    async def append(self, record: AuditRecord) -> AuditRecord:
        """Append ``record`` (index, prev and hash are filled in); return it once stored."""
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="audit-writer")
        done: asyncio.Future[AuditRecord] = asyncio.get_running_loop().create_future()
        await self._queue.put((record, done))
        return await done

    async def append_many(self, records: Sequence[AuditRecord]) -> list[AuditRecord]:
        """:meth:`append` each record (they join one group, in order); return them stored.

        Raises:
            AuditError: (or the transport's error) when any of them was not stored.
        """
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="audit-writer")
        loop = asyncio.get_running_loop()
        waiting: list[asyncio.Future[AuditRecord]] = []
        for record in records:
            done: asyncio.Future[AuditRecord] = loop.create_future()
            self._queue.put_nowait((record, done))
            waiting.append(done)
        return list(await asyncio.gather(*waiting))

    async def close(self) -> None:
        """Stop the writer (after the callers it serves have finished)."""
        if self._writer is not None:
            await stop(self._writer)

    async def _write(self) -> None:
        while True:
            group = [await self._queue.get()]
            size = 0
            while len(group) < self._max_group and not self._queue.empty():
                size += _size_hint(group[-1][0])
                if size > MAX_GROUP_BYTES // 2:
                    break
                group.append(self._queue.get_nowait())
            try:
                placed = await self._store([record for record, _ in group])
            except Exception as exc:
                for _, done in group:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for (_, done), record in zip(group, placed, strict=True):
                if not done.done():
                    done.set_result(record)

    async def _store(self, records: list[AuditRecord]) -> list[AuditRecord]:
        for _ in range(50):
            if self._tail is None:
                self._tail = await self._load_tail()
            seq, index, prev = self._tail
            placed, lines = [], []
            for record in records:
                index += 1
                record, line = record.placed(index, prev)
                prev = record.hash
                placed.append(record)
                lines.append(line)
            if any(len(line) > MAX_RECORD_BYTES for line in lines):
                raise AuditError("an audit record is larger than readers accept")
            stored = await self._bus.append(AUDIT_SUBJECT, b"\n".join(lines), after=seq)
            if stored is None:
                self._tail = None  # another hub appended: re-read the tail and retry
                continue
            self._tail = (stored, placed[-1].index, placed[-1].hash)
            return placed
        raise AuditError("audit chain: too much contention")


async def read_trail(bus: Bus) -> AsyncIterator[tuple[int, bytes]]:
    """Every audit record as stored (its stream message's sequence, raw bytes), in order; a
    missing stream message (the stream denies deletes, so it should never be) as ``b""``.

    Read with batched direct gets, which a user of another account (the operator's) can be
    granted on this one stream without any other JetStream right.
    """
    expected = 1
    async for message in bus.scan_direct(AUDIT_STREAM):
        for missing in range(expected, message.seq):
            yield missing, b""
        expected = message.seq + 1
        for line in message.data.split(b"\n"):
            yield message.seq, line


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The outcome of verifying the chain."""

    records: int
    broken_at: int | None
    problem: str | None
    foreign: tuple[int, ...] = ()  # stream sequences of entries that are not audit records

    @property
    def ok(self) -> bool:
        """Whether every link holds."""
        return self.broken_at is None


def verify_chain(raw_records: list[tuple[int, bytes]]) -> ChainReport:
    """Recompute the chain; report the first stream sequence whose link is broken, and every
    entry skipped because it is not an audit record at all."""
    prev, expected_index = GENESIS, 0
    foreign: list[int] = []
    count = 0
    for seq, raw in raw_records:
        record = parse_record(raw)
        if record is None:
            foreign.append(seq)
            continue
        problem = None
        if canonical_json(record) != raw:
            problem = "record is not in canonical form"
        elif record.index != expected_index:
            problem = f"index {record.index}, expected {expected_index}"
        elif record.prev != prev:
            problem = "prev does not match the previous record's hash"
        elif record.compute_hash() != record.hash:
            problem = "hash does not match the record"
        if problem is not None:
            return ChainReport(count, seq, problem, tuple(foreign))
        prev, expected_index = record.hash, expected_index + 1
        count += 1
    return ChainReport(count, None, None, tuple(foreign))


def format_record(record: AuditRecord) -> str:
    """One audit record as a line for people."""
    what = f"{record.message_type or '?':<4}"
    who = f"{record.sender} -> {', '.join(record.recipients) or '-'}"
    if record.event == "routed":
        state = f"{record.state_before or 'new'} -> {record.state_after}"
        outcome = f"routed    {state}"
    elif record.event == "refused":
        outcome = f"REFUSED   {record.reason}"
    else:  # receipted, dead-lettered, expired, quarantined, replayed
        outcome = f"{record.event:<9} {record.reason or ''}".rstrip()
    return f"  #{record.index:<3} {record.at:%H:%M:%S}  {what} {who:<58} {outcome}"
