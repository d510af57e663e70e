"""The hub service: NATS, topology, key directory, router and workers, as one context manager.

Shutdown order (``__aexit__``): stop fetching, let workers finish what they hold (bounded by
``shutdown_timeout``), then drain the NATS connection. Messages not finished are not acked and
are redelivered to this or another hub instance: nothing accepted is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from adapters.transport import (
    Credentials,
    DirectoryFollower,
    append_key_event,
    follow_directory,
)
from contracts.enums import OrgType
from contracts.errors import ContractError, EnvelopeError, SchakelError
from contracts.header import decode_header
from contracts.ids import MessageId, OrgId, org_type_of
from contracts.keyevents import KeyEventKind, KeyEventRequest
from contracts.policy import Policy, default_policy
from contracts.topology import (
    DELIVERY_PREFIX,
    DELIVERY_STREAM,
    DLQ_PREFIX,
    HEADER_KIND,
    KIND_ENVELOPE,
    STATUS_PREFIX,
)
from hub.audit import AuditTrail
from hub.natsserver import NatsServer
from hub.registry import Registry, default_registry
from hub.router import Inbound, Router
from hub.transport import (
    REDELIVERY,
    KvCaseStore,
    KvMessageRegistry,
    Outbox,
    Transport,
    header_case_id,
)
from keys.crypto import SigningKey, VerifyKey
from keys.directory import KeyDirectory
from keys.envelope import split_envelope
from keys.identity import PartnerIdentity
from keys.keylog import register_request, sign_request

__all__ = ["Hub", "HubSettings", "provision", "registration"]

_log = structlog.get_logger("schakel.hub")


@dataclass(frozen=True, slots=True)
class HubSettings:
    """Everything the hub is configured with; built once at the edge (CLI, tests)."""

    nats_url: str | None = None
    data_dir: Path = Path("schakel-data")
    workers: int = 32
    fetch_batch: int = 64
    shutdown_timeout: float = 10.0
    replicas: int = 1
    partners: tuple[OrgId, ...] = ()
    policy: Policy = field(default_factory=default_policy)
    registry: Registry = field(default_factory=default_registry)
    instance: str = field(default_factory=lambda: f"hub-{uuid.uuid4().hex[:8]}")
    credentials: Credentials | None = None
    authority: VerifyKey | None = None
    ack_wait: float = 30.0  # a crashed hub's unfinished messages come back after this
    redelivery: tuple[float, ...] = REDELIVERY  # retries of an unacknowledged delivery
    expiry_sweep: float = 60.0  # seconds between sweeps for expired, undelivered messages
    expiry_warning: dt.timedelta = dt.timedelta(days=30)
    clock: Callable[[], dt.datetime] | None = None


class Hub:
    """A running hub instance."""

    def __init__(self, settings: HubSettings, identity: PartnerIdentity) -> None:
        self.settings = settings
        self.identity = identity
        self.directory = KeyDirectory()
        self._stack = contextlib.AsyncExitStack()
        self._stop = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._state = "unopened"
        self.url = ""
        self.transport: Transport | None = None
        self.directory_follower: DirectoryFollower | None = None
        self.processed = 0

    async def __aenter__(self) -> Self:
        if self._state != "unopened":
            raise RuntimeError("a Hub can be opened only once")
        self._state = "open"
        try:
            await self._open()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def _open(self) -> None:
        settings = self.settings
        url = settings.nats_url
        if url is None:
            server = NatsServer(settings.data_dir / "nats")
            url = (await self._stack.enter_async_context(server)).url
        self.url = url
        transport = await self._stack.enter_async_context(
            Transport(
                url,
                name=settings.instance,
                replicas=settings.replicas,
                credentials=settings.credentials,
                ack_wait=settings.ack_wait,
                redelivery=settings.redelivery,
            )
        )
        self.transport = transport
        if settings.authority is None:
            raise SchakelError("no directory authority key configured: the hub cannot trust keys")
        await transport.ensure_topology(settings.policy)
        self.directory_follower = await self._stack.enter_async_context(
            follow_directory(
                transport.nc, self.directory, settings.authority, on_change=self._warn_expiring
            )
        )
        self._warn_expiring(None)
        if self.identity.org not in self.directory:
            _log.warning(
                "hub_identity_not_registered",
                org=self.identity.org,
                hint="partners cannot verify refusal notices until the authority registers it",
            )
        await transport.ensure_partners(settings.partners)
        audit = AuditTrail(transport.js)
        self._stack.push_async_callback(audit.close)
        router = Router(
            policy=settings.policy,
            registry=settings.registry,
            directory=self.directory,
            cases=KvCaseStore(await transport.kv("schakel-cases")),
            messages=KvMessageRegistry(await transport.kv("schakel-messages")),
            audit=audit,
            outbox=Outbox(transport.js),
            identity=self.identity,
            instance=settings.instance,
            clock=settings.clock,
        )
        await self._watch_dead_letters(router, transport)
        await self._answer_status(router, transport)
        sweeper = asyncio.create_task(self._sweep_expired(router, transport), name="expiry")
        self._stack.push_async_callback(_cancel, sweeper)
        self._runner = asyncio.create_task(self._run(router, transport), name="hub-runner")
        _log.info("hub_started", instance=settings.instance, nats=url)

    async def _sweep_expired(self, router: Router, transport: Transport) -> None:
        """Remove deliveries whose envelope expired before the recipient took them; tell the
        sender. The delivery stream is a work queue, so it holds only what is still waiting
        (bounded by the backlog limits); one pass reads it once."""
        js = transport.js
        while True:
            await asyncio.sleep(self.settings.expiry_sweep)
            try:
                info = await js.stream_info(DELIVERY_STREAM)
                now = dt.datetime.now(dt.UTC)
                for seq in range(int(info.state.first_seq or 1), int(info.state.last_seq or 0) + 1):
                    await self._expire_one(router, js, seq, now)
            except Exception as exc:
                _log.warning("expiry_sweep_failed", error=type(exc).__name__)

    @staticmethod
    async def _expire_one(router: Router, js: JetStreamContext, seq: int, now: dt.datetime) -> None:
        try:
            msg = await js.get_msg(DELIVERY_STREAM, seq)
        except nats.js.errors.NotFoundError:
            return
        if (msg.headers or {}).get(HEADER_KIND, KIND_ENVELOPE) != KIND_ENVELOPE:
            return
        try:
            header = decode_header(split_envelope(msg.data or b"")[0])
        except (EnvelopeError, ContractError):
            return
        if header.expires_at > now:
            return
        await js.delete_msg(DELIVERY_STREAM, seq)
        await router.expired(
            msg.data or b"", OrgId((msg.subject or "").removeprefix(DELIVERY_PREFIX))
        )

    async def _answer_status(self, router: Router, transport: Transport) -> None:
        """Answer partners' questions about their own messages (request-reply, metadata)."""

        async def on_request(msg: Msg) -> None:
            asker = OrgId(msg.subject.removeprefix(STATUS_PREFIX))
            try:
                answer = await router.state(asker, MessageId(msg.data.decode("ascii")))
                await msg.respond(answer.model_dump_json().encode())
            except Exception as exc:
                _log.warning("status_failed", asker=asker, error=type(exc).__name__)

        subscription = await transport.nc.subscribe(
            STATUS_PREFIX + ">", queue="schakel-hub", cb=on_request
        )
        self._stack.push_async_callback(subscription.unsubscribe)

    async def _watch_dead_letters(self, router: Router, transport: Transport) -> None:
        """Move deliveries JetStream gave up on to the dead-letter stream; tell their senders.

        A queue group: with several hubs, one of them handles each advisory.
        """
        js = transport.js

        async def on_advisory(msg: Msg) -> None:
            try:
                await move(msg)
            except Exception as exc:
                _log.error("dead_letter_failed", error=repr(exc)[:200])

        async def move(msg: Msg) -> None:
            try:
                advisory = json.loads(msg.data)
                seq = int(advisory["stream_seq"])
                original = await js.get_msg(DELIVERY_STREAM, seq)
            except (ValueError, KeyError, nats.js.errors.NotFoundError):
                return  # not ours to handle, or another hub already moved it
            subject = original.subject or ""
            recipient = OrgId(subject.removeprefix(DELIVERY_PREFIX))
            headers = dict(original.headers or {})
            await js.publish(
                DLQ_PREFIX + recipient,
                original.data or b"",
                headers={
                    "Nats-Msg-Id": f"dlq:{seq}",
                    "Schakel-Original-Subject": subject,
                    "Schakel-Deliveries": str(advisory.get("deliveries", 0)),
                    HEADER_KIND: headers.get(HEADER_KIND, KIND_ENVELOPE),
                },
            )
            await js.delete_msg(DELIVERY_STREAM, seq)
            if headers.get(HEADER_KIND, KIND_ENVELOPE) == KIND_ENVELOPE:
                await router.dead_letter(
                    original.data or b"", recipient, int(advisory.get("deliveries", 0))
                )

        subscription = await transport.nc.subscribe(
            f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{DELIVERY_STREAM}.*",
            queue="schakel-hub",
            cb=on_advisory,
        )
        self._stack.push_async_callback(subscription.unsubscribe)

    def _warn_expiring(self, _: object) -> None:
        now = dt.datetime.now(dt.UTC)
        for cert in self.directory.expiring(now, self.settings.expiry_warning):
            _log.warning(
                "key_expiring",
                org=cert.body.org,
                kid=cert.kid,
                days_left=(cert.body.not_after - now).days,
            )

    async def add_partner(self, org: OrgId) -> None:
        """Create the delivery consumer for a partner joining at run time."""
        assert self.transport is not None
        await self.transport.ensure_partners([org])

    async def _run(self, router: Router, transport: Transport) -> None:
        queues: list[asyncio.Queue[Msg]] = [
            asyncio.Queue(maxsize=self.settings.fetch_batch) for _ in range(self.settings.workers)
        ]
        subscription = await transport.pull_inbound()
        async with asyncio.TaskGroup() as group:
            workers = [
                group.create_task(self._work(router, queue), name=f"hub-worker-{number}")
                for number, queue in enumerate(queues)
            ]
            while not self._stop.is_set():
                try:
                    batch = await subscription.fetch(self.settings.fetch_batch, timeout=0.5)
                except (nats.errors.TimeoutError, TimeoutError):
                    continue
                except nats.errors.Error as exc:
                    _log.warning("fetch_failed", error=type(exc).__name__)
                    await asyncio.sleep(0.2)
                    continue
                for msg in batch:
                    # Messages about one case go to one worker, so they are applied in order.
                    shard = zlib.crc32(header_case_id(msg.data).encode()) % len(queues)
                    await queues[shard].put(msg)
            # Stop taking work, finish what the workers hold, then stop them.
            for queue in queues:
                await queue.join()
            for worker in workers:
                worker.cancel()
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()

    async def _work(self, router: Router, queue: asyncio.Queue[Msg]) -> None:
        while True:
            msg = await queue.get()
            try:
                seq = msg.metadata.sequence.stream
                headers = msg.headers or {}
                await router.handle(
                    Inbound(
                        data=msg.data,
                        subject=msg.subject,
                        seq=seq,
                        msg_id_hint=headers.get("Nats-Msg-Id"),
                        kind=headers.get(HEADER_KIND, KIND_ENVELOPE),
                    )
                )
                await msg.ack()
                self.processed += 1
            except Exception as exc:
                _log.error("message_failed", error=type(exc).__name__, subject=msg.subject)
                with contextlib.suppress(Exception):  # back off: 2 s, 4 s, ... at most 60 s
                    attempt = msg.metadata.num_delivered or 1
                    await msg.nak(delay=min(60.0, 2.0**attempt))
            finally:
                queue.task_done()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._state = "closed"
        self._stop.set()
        if self._runner is not None:
            try:
                await asyncio.wait_for(self._runner, timeout=self.settings.shutdown_timeout)
            except TimeoutError:  # wait_for has cancelled it; unfinished messages are redelivered
                _log.warning("hub_shutdown_timeout")
        await self._stack.aclose()
        _log.info("hub_stopped", instance=self.settings.instance, processed=self.processed)


def registration(identity: PartnerIdentity, at: dt.datetime | None = None) -> KeyEventRequest:
    """The signed request that registers ``identity`` in the key log."""
    when = at or dt.datetime.now(dt.UTC)
    return sign_request(register_request(identity, when), identity.signing_key)


async def provision(
    url: str,
    policy: Policy,
    requests: Iterable[KeyEventRequest],
    authority: SigningKey,
    *,
    replicas: int = 1,
    credentials: Credentials | None = None,
    ack_wait: float = 30.0,
    redelivery: tuple[float, ...] = REDELIVERY,
) -> None:
    """Operator step: topology, then each request appended to the key log (registrations of
    organisations already in the log are skipped), then the partners' delivery consumers."""
    async with Transport(
        url,
        name="schakel-operator",
        replicas=replicas,
        credentials=credentials,
        ack_wait=ack_wait,
        redelivery=redelivery,
    ) as transport:
        await transport.ensure_topology(policy)
        follower = DirectoryFollower(KeyDirectory(), authority.public)
        await follower.sync(transport.nc)
        orgs = []
        for request in requests:
            org = OrgId(request.event.org)
            registered = org in follower.directory
            if not (registered and request.event.kind is KeyEventKind.REGISTER):
                await append_key_event(transport.nc, request, authority)
            if org_type_of(org) is not OrgType.HUB:
                orgs.append(org)
        await transport.ensure_partners(orgs)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
