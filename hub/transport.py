"""The hub's NATS layer: topology as code, and the stores the router works through.

Everything the hub keeps lives in JetStream, in the hub's own NATS account:

- ``SCHAKEL_IN_<org>`` (work queue, one per partner) what ``org`` publishes to
  ``schakel.in.<org>``, bounded in count and bytes; the hub's durable consumer ``hub`` on each
  one retries a message a limited number of times, then the hub quarantines it;
- ``SCHAKEL_OUT_<org>`` (work queue, one per partner) one delivery per recipient on
  ``schakel.out.<recipient>.<sender>``, read by the partner's durable consumer
  ``deliver-<org>``; refusal notices and receipts travel the same way;
- ``SCHAKEL_AUDIT`` the hash-chained audit trail (``hub/audit.py``);
- KV ``schakel-cases`` (case metadata), ``schakel-messages`` (message ids seen, for duplicates
  and no_forward);
- ``SCHAKEL_KEYLOG`` the key directory (signed key events), ``SCHAKEL_DLQ`` dead letters
  (deliveries nobody took) and quarantined inbound messages (that the hub could not process).

Only the hub creates or changes these; partners are never given the rights to.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Literal, Self

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict

from bus import Credentials, connect
from contracts.enums import MessageType
from contracts.errors import SchakelError
from contracts.ids import CaseId, MessageId, OrgId
from contracts.policy import Policy
from contracts.topology import (
    AUDIT_STREAM,
    AUDIT_SUBJECT,
    CASES_BUCKET,
    DLQ_PREFIX,
    DLQ_STREAM,
    HEADER_KIND,
    HEADER_MSG_ID,
    HUB_CONSUMER,
    INBOUND_PREFIX,
    INBOUND_STREAM_PREFIX,
    KEYLOG_STREAM,
    KEYLOG_SUBJECT,
    KIND_ENVELOPE,
    KIND_RECEIPT,
    KIND_REFUSAL,
    LEGACY_DELIVERY_STREAM,
    LEGACY_INBOUND_STREAM,
    MESSAGES_BUCKET,
    QUARANTINE_PREFIX,
    delivery_consumer,
    delivery_filter,
    delivery_stream,
    delivery_subject,
    inbound_stream,
    inbound_subject,
)
from hub.cases import CaseRecord

__all__ = [
    "INBOUND_ATTEMPTS",
    "INBOUND_DELIVERIES",
    "Backlog",
    "KvCaseStore",
    "KvMessageRegistry",
    "MessageEntry",
    "Outbox",
    "Transport",
    "TransportError",
    "is_transient",
]

DUPLICATE_WINDOW: Final = 300.0
ACK_WAIT: Final = 30.0
# Retry schedule of a delivery a partner does not acknowledge; after the last one the message
# goes to the dead-letter stream and its sender is told.
REDELIVERY: Final = (30.0, 60.0, 300.0, 900.0, 3600.0, 3600.0, 3600.0)
# How often the hub tries an inbound message before it quarantines it: a message that makes
# the hub fail (a bug, a poison input) must never be retried for ever nor block the others.
INBOUND_ATTEMPTS: Final = 5
# Deliveries of an inbound message JetStream makes at most. Failures of the connection (not of
# the message) are retried up to here, riding out an outage of the order of an hour; a hub
# that crashes on a message each time also ends here. Then the hub quarantines it (advisory).
INBOUND_DELIVERIES: Final = 60
# Inbound messages of one partner handed out to the hub and not yet acknowledged.
INBOUND_ACK_PENDING: Final = 256
_MAX_WAITING_PULLS: Final = 16


class TransportError(SchakelError):
    """NATS could not do what the hub asked."""


# Failures of the connection rather than of the message: while NATS is unreachable every
# message fails alike, and none of them should be set aside as poison for it.
_TRANSIENT: Final = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoRespondersError,
    nats.errors.NoServersError,
    nats.errors.StaleConnectionError,
    nats.errors.TimeoutError,
    nats.errors.FlushTimeoutError,
    nats.js.errors.ServiceUnavailableError,
    TimeoutError,
    ConnectionError,
)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` says NATS was unreachable or slow (try again), not that the message is
    one the hub cannot process."""
    return isinstance(exc, _TRANSIENT) or (
        isinstance(exc, TransportError) and isinstance(exc.__cause__, _TRANSIENT)
    )


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


class KvCaseStore:
    """Case records in KV, changed only by compare-and-set on the revision."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def get(self, case_id: CaseId) -> tuple[CaseRecord | None, int]:
        """The record and its revision (``None`` and 0 when there is none)."""
        try:
            entry = await self._kv.get(case_id)
        except nats.js.errors.KeyNotFoundError:
            return None, 0
        if entry.value is None or entry.operation in ("DEL", "PURGE"):
            return None, 0
        return CaseRecord.model_validate_json(entry.value), int(entry.revision or 0)

    async def put(self, record: CaseRecord, revision: int) -> bool:
        """Write ``record`` if the case is still at ``revision``; ``False`` on a conflict."""
        value = record.model_dump_json().encode()
        try:
            if revision == 0:
                await self._kv.create(record.case_id, value)
            else:
                await self._kv.update(record.case_id, value, last=revision)
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.BadRequestError):
            return False
        return True


class KvMessageRegistry:
    """Message ids the hub has accepted, kept for the longest message lifetime."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def get(self, message_id: MessageId) -> MessageEntry | None:
        """What is known about ``message_id``."""
        try:
            entry = await self._kv.get(message_id)
        except nats.js.errors.KeyNotFoundError:
            return None
        return MessageEntry.model_validate_json(entry.value) if entry.value else None

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
            try:
                return None, await self._kv.create(message_id, value)
            except nats.js.errors.KeyWrongLastSequenceError:
                try:
                    current = await self._kv.get(message_id)
                except nats.js.errors.KeyNotFoundError:
                    continue  # removed meanwhile (its lifetime ended): take it again
                if current.value:
                    existing = MessageEntry.model_validate_json(current.value)
                    return existing, int(current.revision or 0)
        raise TransportError("message id could not be claimed")

    async def settle(self, message_id: MessageId, entry: MessageEntry, revision: int) -> None:
        """Replace the claimed ``entry`` (at ``revision``) by its final form."""
        try:
            await self._kv.update(message_id, entry.model_dump_json().encode(), last=revision)
        except nats.js.errors.KeyWrongLastSequenceError:  # changed meanwhile: merge the status
            await self.update(message_id, lambda e: e.model_copy(update={"status": entry.status}))

    async def update(
        self, message_id: MessageId, change: Callable[[MessageEntry], MessageEntry]
    ) -> MessageEntry | None:
        """Apply ``change`` with compare-and-set (receipts from several recipients may race)."""
        for _ in range(20):
            try:
                current = await self._kv.get(message_id)
            except nats.js.errors.KeyNotFoundError:
                return None
            if not current.value:
                return None
            entry = change(MessageEntry.model_validate_json(current.value))
            try:
                await self._kv.update(
                    message_id, entry.model_dump_json().encode(), last=current.revision
                )
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
            return entry
        return None


@dataclass(frozen=True, slots=True)
class Backlog:
    """Deliveries waiting for one recipient: in all, and from one sender."""

    total: int
    from_sender: int


class Outbox:
    """Publishes deliveries and notices to partners' delivery subjects, deduplicated."""

    def __init__(self, js: JetStreamContext, hub: OrgId, *, cache_seconds: float = 0.5) -> None:
        self._js = js
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
            info = await self._js.stream_info(
                delivery_stream(recipient), subjects_filter=delivery_filter(recipient)
            )
            cached = (now, dict(info.state.subjects or {}))
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
        await self._js.publish(
            subject,
            envelope,
            headers={HEADER_MSG_ID: f"{message_id}:{recipient}", HEADER_KIND: KIND_ENVELOPE},
        )

    async def relay(self, org: OrgId, receipt: bytes, dedupe_id: str) -> None:
        """Pass a recipient's signed receipt on to the message's sender."""
        await self._js.publish(
            delivery_subject(org, self._hub),
            receipt,
            headers={HEADER_MSG_ID: dedupe_id, HEADER_KIND: KIND_RECEIPT},
        )

    async def notify(self, org: OrgId, notice: bytes, dedupe_id: str) -> None:
        """A signed refusal notice for the sender."""
        await self._js.publish(
            delivery_subject(org, self._hub),
            notice,
            headers={HEADER_MSG_ID: dedupe_id, HEADER_KIND: KIND_REFUSAL},
        )


class Transport:
    """The hub's connection to NATS; an async context manager that drains on exit."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "schakel-hub",
        replicas: int = 1,
        credentials: Credentials | None = None,
        ack_wait: float = ACK_WAIT,
        redelivery: tuple[float, ...] = REDELIVERY,
        inbound_attempts: int = INBOUND_ATTEMPTS,
    ) -> None:
        self.url = url
        self._inbound_attempts = inbound_attempts
        self._policy: Policy | None = None
        self._name = name
        self._replicas = replicas
        self._credentials = credentials
        self._ack_wait = ack_wait
        self._redelivery = redelivery
        self._nc: Client | None = None

    @property
    def nc(self) -> Client:
        """The NATS connection."""
        if self._nc is None:
            raise TransportError("transport is not open")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context."""
        return self.nc.jetstream()

    async def __aenter__(self) -> Self:
        try:
            self._nc = await connect(self.url, self._name, self._credentials)
        except Exception as exc:
            raise TransportError(f"cannot connect to {self.url}: {exc}") from exc
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            try:
                await nc.drain()
            except Exception:
                await nc.close()

    async def ensure_topology(self, policy: Policy) -> None:
        """Create or update every stream, bucket and the hub's consumer (idempotent)."""
        self._policy = policy
        lifetime = policy.limits.max_lifetime_days * 86400.0
        for legacy in (LEGACY_INBOUND_STREAM, LEGACY_DELIVERY_STREAM):
            await self._retire_legacy(legacy)
        streams = [
            api.StreamConfig(
                name=KEYLOG_STREAM,
                subjects=[KEYLOG_SUBJECT],
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE,
                allow_direct=True,  # partners read it by direct get only
                deny_delete=True,
                deny_purge=True,
                num_replicas=self._replicas,
            ),
            api.StreamConfig(
                name=DLQ_STREAM,
                subjects=[DLQ_PREFIX + ">", QUARANTINE_PREFIX + ">"],
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE,
                max_age=lifetime,
                num_replicas=self._replicas,
            ),
            api.StreamConfig(
                name=AUDIT_STREAM,
                subjects=[AUDIT_SUBJECT],
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE,
                duplicate_window=DUPLICATE_WINDOW,
                deny_delete=True,
                deny_purge=True,
                num_replicas=self._replicas,
            ),
        ]
        for config in streams:
            await self._ensure_stream(config)
        for bucket, ttl in ((CASES_BUCKET, None), (MESSAGES_BUCKET, lifetime + 86400)):
            await self.js.create_key_value(
                api.KeyValueConfig(
                    bucket=bucket,
                    history=1,
                    ttl=ttl,
                    storage=api.StorageType.FILE,
                    replicas=self._replicas,
                )
            )

    async def _ensure_stream(self, config: api.StreamConfig) -> None:
        """Create the stream, or bring an existing one to ``config``."""
        try:
            await self.js.add_stream(config)
        except nats.js.errors.BadRequestError:
            await self.js.update_stream(config)

    async def _retire_legacy(self, name: str) -> None:
        """Delete a stream shared by all partners in earlier versions if it is empty; its
        subjects overlap the per-partner streams. One that still holds messages stops the
        start-up: let the previous version (and its partners) finish them first."""
        try:
            info = await self.js.stream_info(name)
        except nats.js.errors.NotFoundError:
            return
        if info.state.messages:
            raise TransportError(
                f"the shared stream {name} of an earlier version still holds "
                f"{info.state.messages} message(s): let the previous version finish them"
            )
        await self.js.delete_stream(name)

    async def ensure_partners(self, orgs: Iterable[OrgId]) -> None:
        """Create each partner's inbound stream with the hub's consumer on it, and its durable
        delivery consumer (partners never create their own)."""
        if self._policy is None:
            raise TransportError("ensure_topology first")
        limits = self._policy.limits
        for org in orgs:
            inbound = api.StreamConfig(
                name=inbound_stream(org),
                subjects=[inbound_subject(org)],
                retention=api.RetentionPolicy.WORK_QUEUE,
                storage=api.StorageType.FILE,
                # Bounded per partner: beyond these JetStream refuses the publish, so one
                # partner's flood can fill only its own stream. No per-message limit below
                # the server's max_payload: the hub refuses oversized envelopes itself
                # (TOO_LARGE), so the sender is told and the attempt recorded.
                max_msgs=limits.max_inbound_pending,
                max_bytes=limits.max_inbound_bytes,
                discard=api.DiscardPolicy.NEW,
                duplicate_window=DUPLICATE_WINDOW,
                num_replicas=self._replicas,
            )
            await self._ensure_stream(inbound)
            await self.js.add_consumer(
                inbound_stream(org),
                api.ConsumerConfig(
                    durable_name=HUB_CONSUMER,
                    ack_policy=api.AckPolicy.EXPLICIT,
                    ack_wait=self._ack_wait,
                    max_deliver=max(INBOUND_DELIVERIES, self._inbound_attempts),
                    max_ack_pending=INBOUND_ACK_PENDING,
                ),
            )
            delivery = api.StreamConfig(
                name=delivery_stream(org),
                subjects=[delivery_filter(org)],
                retention=api.RetentionPolicy.WORK_QUEUE,
                storage=api.StorageType.FILE,
                max_age=limits.max_lifetime_days * 86400.0,
                duplicate_window=DUPLICATE_WINDOW,
                num_replicas=self._replicas,
            )
            await self._ensure_stream(delivery)
            await self.js.add_consumer(
                delivery_stream(org),
                api.ConsumerConfig(
                    durable_name=delivery_consumer(org),
                    # A partner pulls one batch at a time; a few waiting pulls are plenty.
                    max_waiting=_MAX_WAITING_PULLS,
                    ack_policy=api.AckPolicy.EXPLICIT,
                    ack_wait=self._redelivery[0],
                    backoff=list(self._redelivery),
                    max_deliver=len(self._redelivery) + 1,
                ),
            )

    async def partners(self) -> list[OrgId]:
        """The partners whose streams exist (the hub reads and sweeps each one's)."""
        names: list[OrgId] = []
        offset = 0
        while True:
            infos = await self.js.streams_info(offset=offset)
            for info in infos:
                subjects = info.config.subjects or []
                name = info.config.name or ""
                if name.startswith(INBOUND_STREAM_PREFIX) and len(subjects) == 1:
                    names.append(OrgId(subjects[0].removeprefix(INBOUND_PREFIX)))
            if len(infos) < 256:  # the server's page size
                return sorted(names)
            offset += len(infos)

    async def kv(self, bucket: str) -> KeyValue:
        """A KV bucket handle."""
        return await self.js.key_value(bucket)

    async def pull_inbound(self, org: OrgId) -> JetStreamContext.PullSubscription:
        """Bind to the hub's durable consumer on ``org``'s inbound stream (shared by every
        hub instance)."""
        return await self.js.pull_subscribe_bind(HUB_CONSUMER, stream=inbound_stream(org))


def header_case_id(raw: bytes) -> str:
    """A cheap look at an envelope's case id, for sharding only (never trusted)."""
    try:
        start = raw.index(b'"case_id":"') + 11
        return raw[start : start + 31].decode("ascii", "replace")
    except ValueError:
        return ""
