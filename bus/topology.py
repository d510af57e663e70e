"""Topology as code: every stream, bucket and consumer of Schakel, created and kept by the hub.

Everything the hub keeps lives in JetStream, in the hub's own NATS account:

- ``SCHAKEL_IN_<org>`` (work queue, one per partner) what ``org`` publishes to
  ``schakel.in.<org>.<partition>``, bounded in count and bytes; the hub's durable consumer
  ``hub-p<partition>`` of each partition (shared by the hub instances that own it) retries a
  message a limited number of times, then the hub quarantines it;
- ``SCHAKEL_HUBS`` the hub instances alive (each says so every few seconds; kept seconds);
- ``SCHAKEL_OUT_<org>`` (work queue, one per partner) one delivery per recipient on
  ``schakel.out.<recipient>.<sender>``, read by the partner's durable consumer
  ``deliver-<org>``; refusal notices and receipts travel the same way;
- ``SCHAKEL_AUDIT`` the hash-chained audit trail (``hub/audit.py``);
- KV ``schakel-cases`` (case metadata), ``schakel-messages`` (message ids seen, for duplicates
  and no_forward);
- ``SCHAKEL_REGISTRY`` the partner registry's editions, signed by the directory authority;
- ``SCHAKEL_KEYLOG`` the key directory (signed key events), ``SCHAKEL_DLQ`` dead letters
  (deliveries nobody took) and quarantined inbound messages (that the hub could not process).

Only the hub creates or changes these; partners are never given the rights to.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Final

import nats.js.errors
from nats.js import api

from schakel.bus.connection import Bus, Puller
from schakel.bus.errors import TransportError, mapped
from schakel.contracts.ids import OrgId
from schakel.contracts.policy import Limits
from schakel.contracts.topology import (
    AUDIT_STREAM,
    AUDIT_SUBJECT,
    CASES_BUCKET,
    DLQ_PREFIX,
    DLQ_STREAM,
    HUB_CONSUMER,
    HUB_INSTANCES_STREAM,
    HUB_INSTANCES_SUBJECT,
    INBOUND_PARTITIONS,
    INBOUND_STREAM_PREFIX,
    KEYLOG_STREAM,
    KEYLOG_SUBJECT,
    LEGACY_DELIVERY_STREAM,
    LEGACY_INBOUND_STREAM,
    MESSAGES_BUCKET,
    QUARANTINE_PREFIX,
    REGISTRY_STREAM,
    REGISTRY_SUBJECT,
    delivery_consumer,
    delivery_filter,
    delivery_stream,
    hub_consumer,
    inbound_filter,
    inbound_stream,
    inbound_subjects,
    org_of_inbound_subject,
)
from schakel.keys.keylog import MAX_EVENT_BYTES

__all__ = [
    "ACK_WAIT",
    "HUB_ALIVE_KEPT",
    "INBOUND_ATTEMPTS",
    "INBOUND_DELIVERIES",
    "MAX_DELIVERIES_ADVISORY",
    "MAX_REGISTRY_BYTES",
    "REDELIVERY",
    "Topology",
]

DUPLICATE_WINDOW: Final = 300.0
# Bounds of the two streams the security officer's user may append to (partners cannot): an
# entry larger than one event or edition can be is refused by JetStream, and the streams stop
# taking entries when full (nothing old is ever discarded: a reader must see the newest genuine
# edition, and the key log is a chain).
MAX_REGISTRY_BYTES: Final = 512 * 1024  # every gemeente of the Netherlands: some tens of KiB
REGISTRY_STREAM_BYTES: Final = 64 * 1024 * 1024
KEYLOG_STREAM_BYTES: Final = 256 * 1024 * 1024
# How long a hub instance may hold an inbound message before JetStream hands it to another:
# a crashed hub's unfinished messages come back after this.
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
# Inbound messages of one partner's partition handed out to the hub and not yet acknowledged
# (per partner: INBOUND_PARTITIONS times this).
INBOUND_ACK_PENDING: Final = 256
_MAX_WAITING_PULLS: Final = 16
_ENSURE_AT_ONCE: Final = 8  # partners whose streams and consumers are made side by side
# How long a hub instance's "alive" is kept: one that stopped saying so for this long has its
# partitions taken over by the others.
HUB_ALIVE_KEPT: Final = 6.0
# The server's word that a consumer gave up on a message after its last delivery.
MAX_DELIVERIES_ADVISORY: Final = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.*.*"


class Topology:
    """Creates and updates Schakel's streams, buckets and consumers (idempotent), with the
    limits of the running hub's policy."""

    def __init__(
        self,
        bus: Bus,
        limits: Limits,
        *,
        replicas: int = 1,
        ack_wait: float = ACK_WAIT,
        redelivery: tuple[float, ...] = REDELIVERY,
        inbound_attempts: int = INBOUND_ATTEMPTS,
    ) -> None:
        self._bus = bus
        self._limits = limits
        self._replicas = replicas
        self._ack_wait = ack_wait
        self._redelivery = redelivery
        self._inbound_attempts = inbound_attempts

    async def ensure(self) -> None:
        """The hub's own streams and buckets."""
        lifetime = self._limits.max_lifetime_days * 86400.0
        for legacy in (LEGACY_INBOUND_STREAM, LEGACY_DELIVERY_STREAM):
            await self._retire_legacy(legacy)
        streams = [
            api.StreamConfig(
                name=KEYLOG_STREAM,
                subjects=[KEYLOG_SUBJECT],
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE,
                allow_direct=True,  # partners read it by direct get only
                max_msg_size=MAX_EVENT_BYTES,
                max_bytes=KEYLOG_STREAM_BYTES,
                discard=api.DiscardPolicy.NEW,
                deny_delete=True,
                deny_purge=True,
                num_replicas=self._replicas,
            ),
            api.StreamConfig(
                name=REGISTRY_STREAM,
                subjects=[REGISTRY_SUBJECT],
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE,
                allow_direct=True,  # read by direct get (the security officer's user)
                max_msg_size=MAX_REGISTRY_BYTES,
                max_bytes=REGISTRY_STREAM_BYTES,
                discard=api.DiscardPolicy.NEW,  # never drop an edition: no rollback by flood
                deny_delete=True,
                deny_purge=True,
                num_replicas=self._replicas,
            ),
            api.StreamConfig(
                name=DLQ_STREAM,
                subjects=[DLQ_PREFIX + ">", QUARANTINE_PREFIX + ">"],
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE,
                allow_direct=True,  # the operator's user reads it by direct get only
                max_age=lifetime,
                num_replicas=self._replicas,
            ),
            api.StreamConfig(
                name=HUB_INSTANCES_STREAM,
                subjects=[HUB_INSTANCES_SUBJECT + ".*"],
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.MEMORY,
                max_msgs_per_subject=1,
                max_age=HUB_ALIVE_KEPT,
                max_msg_size=64,
                num_replicas=self._replicas,
            ),
            api.StreamConfig(
                name=AUDIT_STREAM,
                subjects=[AUDIT_SUBJECT],
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE,
                allow_direct=True,  # the operator's user reads it by direct get only
                duplicate_window=DUPLICATE_WINDOW,
                deny_delete=True,
                deny_purge=True,
                num_replicas=self._replicas,
            ),
        ]
        for config in streams:
            await self._ensure_stream(config)
        for bucket, ttl in ((CASES_BUCKET, None), (MESSAGES_BUCKET, lifetime + 86400)):
            bucket_config = api.KeyValueConfig(
                bucket=bucket,
                history=1,
                ttl=ttl,
                storage=api.StorageType.FILE,
                replicas=self._replicas,
                direct=True,  # reads answered by the stream itself, not JetStream's API
            )
            try:
                with mapped("create bucket"):
                    await self._bus.js.create_key_value(bucket_config)
            except TransportError as exc:
                if not isinstance(exc.__cause__, nats.js.errors.BadRequestError):
                    raise
                await self._allow_direct(f"KV_{bucket}")  # a bucket of an earlier version

    async def _allow_direct(self, stream: str) -> None:
        """Turn on direct gets for an existing stream (buckets made before they were used)."""
        with mapped("stream info"):
            info = await self._bus.js.stream_info(stream)
        if not info.config.allow_direct:
            info.config.allow_direct = True
            with mapped("update stream"):
                await self._bus.js.update_stream(info.config)

    async def _ensure_stream(self, config: api.StreamConfig) -> None:
        """Create the stream, or bring an existing one to ``config``."""
        js = self._bus.js
        with mapped("ensure stream"):
            try:
                await js.add_stream(config)
            except nats.js.errors.BadRequestError:
                await js.update_stream(config)

    async def _retire_legacy(self, name: str) -> None:
        """Delete a stream shared by all partners in earlier versions if it is empty; its
        subjects overlap the per-partner streams. One that still holds messages stops the
        start-up: let the previous version (and its partners) finish them first."""
        if not await self._bus.exists(name):
            return
        _, _, messages = await self._bus.state(name)
        if messages:
            raise TransportError(
                f"the shared stream {name} of an earlier version still holds "
                f"{messages} message(s): let the previous version finish them"
            )
        with mapped("delete stream"):
            await self._bus.js.delete_stream(name)

    async def ensure_partners(self, orgs: Iterable[OrgId]) -> None:
        """Create each partner's inbound stream with the hub's consumers on it, and its
        durable delivery consumer (partners never create their own); the partners side by
        side, a few at a time (several JetStream API round trips each; a registry may hold
        hundreds of partners)."""
        lane = asyncio.Semaphore(_ENSURE_AT_ONCE)

        async def ensure(org: OrgId) -> None:
            async with lane:
                await self._ensure_partner(org)

        await asyncio.gather(*(ensure(org) for org in orgs))

    async def _ensure_partner(self, org: OrgId) -> None:
        limits = self._limits
        js = self._bus.js
        inbound = api.StreamConfig(
            name=inbound_stream(org),
            subjects=inbound_subjects(org),
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
        # The one consumer of earlier versions overlaps the partitions' (a work queue
        # allows no overlap): it goes; what it had handed out and not finished stays in
        # the stream and comes to the partitions' consumers.
        with mapped("retire consumer"), contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_consumer(inbound_stream(org), HUB_CONSUMER)
        with mapped("ensure consumer"):
            await asyncio.gather(*(
                js.add_consumer(
                    inbound_stream(org),
                    api.ConsumerConfig(
                        durable_name=hub_consumer(partition),
                        filter_subjects=inbound_filter(org, partition),
                        ack_policy=api.AckPolicy.EXPLICIT,
                        ack_wait=self._ack_wait,
                        max_deliver=max(INBOUND_DELIVERIES, self._inbound_attempts),
                        max_ack_pending=INBOUND_ACK_PENDING,
                    ),
                )
                for partition in range(INBOUND_PARTITIONS)
            ))  # fmt: skip
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
        with mapped("ensure consumer"):
            await js.add_consumer(
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
            with mapped("list streams"):
                infos = await self._bus.js.streams_info(offset=offset)
            for info in infos:
                subjects = info.config.subjects or []
                name = info.config.name or ""
                if name.startswith(INBOUND_STREAM_PREFIX) and subjects:
                    org = org_of_inbound_subject(subjects[0])
                    if org is not None:
                        names.append(org)
            if len(infos) < 256:  # the server's page size
                return sorted(names)
            offset += len(infos)

    async def pull_inbound(self, org: OrgId, partition: int) -> Puller:
        """Bind to the hub's durable consumer of ``partition`` on ``org``'s inbound stream
        (shared by the hub instances that own the partition)."""
        return await self._bus.pull(inbound_stream(org), hub_consumer(partition))
