"""The stores the router works through, on the bus: case records, message ids, the outbox.

Each is the NATS implementation of one of the router's protocols (``hub/router.py``); the
in-memory ones for tests of the router's rules are in ``hub/memory.py``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

from schakel.bus import Bus, Kv, TransportError
from schakel.contracts.enums import MessageType
from schakel.contracts.ids import CaseId, MessageId, OrgId
from schakel.contracts.topology import (
    HEADER_KIND,
    HEADER_MSG_ID,
    KIND_ENVELOPE,
    KIND_RECEIPT,
    KIND_REFUSAL,
    delivery_filter,
    delivery_stream,
    delivery_subject,
)
from schakel.hub.cases import CaseRecord

__all__ = [
    "Backlog",
    "KvCaseStore",
    "KvMessageRegistry",
    "MessageEntry",
    "Outbox",
    "envelope_digest",
]


class MessageEntry(BaseModel):
    """What the hub remembers about a message id: metadata only.

    ``claimed``: the id is taken by this sender and inbound message, the work is under way;
    ``refused`` or ``accepted``: the work is done.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Literal["claimed", "refused", "accepted"]
    inbound_seq: int
    message_type: MessageType
    no_forward: bool
    sender: str = ""
    recipients: tuple[str, ...] = ()
    receipted_by: tuple[str, ...] = ()
    dead_lettered_for: tuple[str, ...] = ()
    expired_for: tuple[str, ...] = ()
    # Which bytes claimed the id (:func:`envelope_digest`): an unfinished claim is taken over
    # only by the same envelope (a redelivery, an operator's replay), never by another one
    # that reuses the id. Empty in records written before it existed.
    digest: str = ""


class KvCaseStore:
    """Case records in KV, changed only by compare-and-set on the revision."""

    def __init__(self, kv: Kv) -> None:
        self._kv = kv

    async def get(self, case_id: CaseId) -> tuple[CaseRecord | None, int]:
        """The record and its revision (``None`` and 0 when there is none)."""
        entry = await self._kv.get(case_id)
        if entry is None:
            return None, 0
        return CaseRecord.model_validate_json(entry.value), entry.revision

    async def put(self, record: CaseRecord, revision: int) -> int | None:
        """Write ``record`` if the case is still at ``revision``: its new revision, or
        ``None`` on a conflict."""
        value = record.model_dump_json().encode()
        if revision == 0:
            return await self._kv.create(record.case_id, value)
        return await self._kv.update(record.case_id, value, revision)

    async def put_many(
        self, items: Sequence[tuple[CaseRecord, int]]
    ) -> list[int | TransportError | None]:
        """:meth:`put` for each ``(record, revision)``, pipelined; per item the new revision,
        ``None`` on a conflict, or the error."""
        return await self._kv.write_many(
            [(r.case_id, r.model_dump_json().encode(), revision or None) for r, revision in items]
        )


class KvMessageRegistry:
    """Message ids the hub has accepted, kept for the longest message lifetime."""

    def __init__(self, kv: Kv) -> None:
        self._kv = kv

    async def get(self, message_id: MessageId) -> MessageEntry | None:
        """What is known about ``message_id``."""
        entry = await self._kv.get(message_id)
        return None if entry is None else MessageEntry.model_validate_json(entry.value)

    async def claim(
        self, message_id: MessageId, entry: MessageEntry
    ) -> tuple[MessageEntry | None, int]:
        """Take ``message_id`` for ``entry`` unless it is taken: ``(None, revision)`` when this
        call took it, else ``(the existing entry, its revision)``.

        The id is taken before anything is delivered, so that nobody who sees a delivery (a
        co-recipient) can take the id of a message still being routed.
        """
        value = entry.model_dump_json().encode()
        for _ in range(5):
            revision = await self._kv.create(message_id, value)
            if revision is not None:
                return None, revision
            current = await self._kv.get(message_id)
            if current is None:
                continue  # removed meanwhile (its lifetime ended): take it again
            return MessageEntry.model_validate_json(current.value), current.revision
        raise TransportError("message id could not be claimed")

    async def claim_many(
        self, items: Sequence[tuple[MessageId, MessageEntry]]
    ) -> list[int | TransportError | None]:
        """Take each id, pipelined: per item the revision when this call took it, ``None``
        when it is taken (:meth:`claim` says by whom), or the error."""
        return await self._kv.write_many(
            [(m, entry.model_dump_json().encode(), None) for m, entry in items]
        )

    async def write_many(
        self, items: Sequence[tuple[MessageId, MessageEntry, int]]
    ) -> list[int | TransportError | None]:
        """Replace each entry if still at its revision, pipelined: per item the new
        revision, ``None`` when it changed meanwhile, or the error."""
        return await self._kv.write_many(
            [(m, entry.model_dump_json().encode(), revision) for m, entry, revision in items]
        )

    async def settle(self, message_id: MessageId, entry: MessageEntry, revision: int) -> None:
        """Replace the claimed ``entry`` (at ``revision``) by its final form."""
        if await self._kv.update(message_id, entry.model_dump_json().encode(), revision) is None:
            # changed meanwhile (a receipt, a dead letter): merge the status
            await self.update(message_id, lambda e: e.model_copy(update={"status": entry.status}))

    async def update(
        self, message_id: MessageId, change: Callable[[MessageEntry], MessageEntry]
    ) -> MessageEntry | None:
        """Apply ``change`` with compare-and-set (receipts from several recipients may race)."""
        for _ in range(20):
            current = await self._kv.get(message_id)
            if current is None:
                return None
            entry = change(MessageEntry.model_validate_json(current.value))
            if (
                await self._kv.update(
                    message_id, entry.model_dump_json().encode(), current.revision
                )
                is not None
            ):
                return entry
        return None


@dataclass(frozen=True, slots=True)
class Backlog:
    """Deliveries waiting for one recipient: in all, and from one sender."""

    total: int
    from_sender: int


class Outbox:
    """Publishes deliveries and notices to partners' delivery subjects, deduplicated."""

    def __init__(self, bus: Bus, hub: OrgId, *, cache_seconds: float = 0.5) -> None:
        self._bus = bus
        self._hub = hub
        self._cache_seconds = cache_seconds
        self._backlogs: dict[OrgId, tuple[float, dict[str, int]]] = {}

    async def backlog(self, recipient: OrgId, sender: OrgId) -> Backlog:
        """Messages waiting for ``recipient`` (stored in the work queue: pending plus
        unacknowledged), in all and from ``sender``; cached briefly.

        A soft limit: concurrent workers may each pass the check before their deliveries are
        counted, so the backlog can exceed the limit by up to the number of workers.
        """
        now = time.monotonic()
        cached = self._backlogs.get(recipient)
        if cached is None or now - cached[0] >= self._cache_seconds:
            counts = await self._bus.counts(delivery_stream(recipient), delivery_filter(recipient))
            cached = (now, counts)
            self._backlogs[recipient] = cached
        counts = cached[1]
        return Backlog(sum(counts.values()), counts.get(delivery_subject(recipient, sender), 0))

    async def deliver(
        self, recipient: OrgId, sender: OrgId, envelope: bytes, message_id: MessageId
    ) -> None:
        """One copy of an envelope for one recipient (idempotent per message and recipient)."""
        subject = delivery_subject(recipient, sender)
        cached = self._backlogs.get(recipient)
        if cached is not None:  # count our own deliveries into the cached backlog
            cached[1][subject] = cached[1].get(subject, 0) + 1
        await self._bus.publish(
            subject,
            envelope,
            {HEADER_MSG_ID: f"{message_id}:{recipient}", HEADER_KIND: KIND_ENVELOPE},
        )

    async def deliver_many(
        self, items: Sequence[tuple[OrgId, OrgId, bytes, MessageId]]
    ) -> list[TransportError | None]:
        """:meth:`deliver` for each ``(recipient, sender, envelope, message id)``,
        pipelined: per item ``None`` when stored, or the error."""
        for recipient, sender, _, _ in items:
            cached = self._backlogs.get(recipient)
            if cached is not None:
                subject = delivery_subject(recipient, sender)
                cached[1][subject] = cached[1].get(subject, 0) + 1
        answers = await self._bus.publish_many(
            [
                (
                    delivery_subject(recipient, sender),
                    envelope,
                    {HEADER_MSG_ID: f"{message_id}:{recipient}", HEADER_KIND: KIND_ENVELOPE},
                )
                for recipient, sender, envelope, message_id in items
            ]
        )
        return [a if isinstance(a, TransportError) else None for a in answers]

    async def relay_many(
        self, items: Sequence[tuple[OrgId, bytes, str]]
    ) -> list[TransportError | None]:
        """:meth:`relay` for each ``(org, receipt, dedupe id)``, pipelined: per item ``None``
        when stored, or the error."""
        answers = await self._bus.publish_many(
            [
                (delivery_subject(org, self._hub), receipt,
                 {HEADER_MSG_ID: dedupe_id, HEADER_KIND: KIND_RECEIPT})
                for org, receipt, dedupe_id in items
            ]
        )  # fmt: skip
        return [a if isinstance(a, TransportError) else None for a in answers]

    async def relay(self, org: OrgId, receipt: bytes, dedupe_id: str) -> None:
        """Pass a recipient's signed receipt on to the message's sender."""
        await self._bus.publish(
            delivery_subject(org, self._hub),
            receipt,
            {HEADER_MSG_ID: dedupe_id, HEADER_KIND: KIND_RECEIPT},
        )

    async def notify(self, org: OrgId, notice: bytes, dedupe_id: str) -> None:
        """A signed refusal notice for the sender."""
        await self._bus.publish(
            delivery_subject(org, self._hub),
            notice,
            {HEADER_MSG_ID: dedupe_id, HEADER_KIND: KIND_REFUSAL},
        )


def envelope_digest(raw: bytes) -> str:
    """A short digest of an envelope's bytes (which envelope claimed a message id)."""
    return hashlib.blake2b(raw, digest_size=16).hexdigest()
