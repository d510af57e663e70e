"""The hub service: NATS, topology, key directory, router and fetchers, as one context manager.

Shutdown order (``__aexit__``): stop fetching, let fetchers finish the batch they hold (bounded by
``shutdown_timeout``), then drain the NATS connection. Messages not finished are not acked and
are redelivered to this or another hub instance: nothing accepted is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Final, Self

import structlog

from schakel.bus import (
    ACK_WAIT,
    MAX_DELIVERIES_ADVISORY,
    REDELIVERY,
    Bus,
    Credentials,
    DirectoryFollower,
    Message,
    Pulled,
    Topology,
    TransportError,
    append_key_event,
    follow_directory,
    is_transient,
    redacted,
    stop,
)
from schakel.contracts import boundedjson
from schakel.contracts.clock import Clock, system_clock
from schakel.contracts.enums import OrgType
from schakel.contracts.errors import ContractError, EnvelopeError, SchakelError
from schakel.contracts.header import decode_header
from schakel.contracts.ids import MESSAGE_ID_PATTERN, MessageId, OrgId, org_type_of
from schakel.contracts.keyevents import KeyEventKind, KeyEventRequest
from schakel.contracts.policy import Policy
from schakel.contracts.topology import (
    CASES_BUCKET,
    DELIVERY_STREAM_PREFIX,
    DLQ_PREFIX,
    DLQ_STREAM,
    HEADER_DELIVERIES,
    HEADER_KIND,
    HEADER_MSG_ID,
    HEADER_ORIGINAL_SUBJECT,
    HUB_STATUS_SUBJECT,
    INBOUND_STREAM_PREFIX,
    KIND_ENVELOPE,
    MESSAGES_BUCKET,
    REGISTRY_SUBJECT,
    REPLAY_SUBJECT,
    STATUS_PREFIX,
    delivery_filter,
    delivery_stream,
    header_case_id,
    inbound_stream,
    inbox_prefix,
    org_of_inbound_subject,
    quarantine_subject,
    recipient_of_delivery_subject,
)
from schakel.hub.audit import AuditTrail
from schakel.hub.natsserver import NatsServer
from schakel.hub.quota import RateLimiter
from schakel.hub.registry import RegistryReader
from schakel.hub.router import Inbound, Outcome, RetryLater, Router
from schakel.hub.settings import HubSettings
from schakel.hub.share import STUCK_AFTER, Share
from schakel.hub.stores import KvCaseStore, KvMessageRegistry, Outbox
from schakel.keys.crypto import SigningKey
from schakel.keys.directory import KeyDirectory
from schakel.keys.envelope import split_envelope
from schakel.keys.identity import PartnerIdentity
from schakel.keys.keylog import register_request, sign_request

__all__ = [
    "Hub",
    "provision",
    "register",
    "registration",
]

# The server rewrites the reply subject of a request that crosses an account import to this.
_SERVICE_REPLY_PREFIX: Final = "_R_."
_MAX_STATUS_REQUEST: Final = 64
_STATUS_PER_SECOND: Final = 20.0  # per asking partner
_STATUS_BURST: Final = 100
_STATUS_WAITING: Final = 1_000  # questions held unread; more are dropped
_MESSAGE_ID: Final = re.compile(MESSAGE_ID_PATTERN.strip("^$").encode())

_log = structlog.get_logger("schakel.hub")


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
        self.bus: Bus | None = None
        self.topology: Topology | None = None
        self.directory_follower: DirectoryFollower | None = None
        self.router: Router | None = None
        self.processed = 0
        self._clock: Clock = settings.clock or system_clock
        self.registry_version = 0  # the published edition in use; 0: the configured file
        self._ready: set[OrgId] = set()  # partners whose streams and consumers exist
        self._registry_changed = asyncio.Event()  # a new edition, or a new registration
        self._wake = asyncio.Event()  # stop, or this instance's share of partitions changed
        self.share = Share(settings.instance, on_change=self._wake.set, routing=self._routing)
        self._fetchers: dict[tuple[OrgId, int], asyncio.Task[None]] = {}
        self._busy_since: dict[tuple[OrgId, int], float] = {}  # fetchers inside a batch
        self.stuck_after = STUCK_AFTER  # seconds in one batch that make the instance stuck

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
            server = NatsServer(settings.data_dir / "nats", keep_port=True)
            url = (await self._stack.enter_async_context(server)).url
        self.url = url
        bus = await self._stack.enter_async_context(
            Bus(url, name=settings.instance, credentials=settings.credentials)
        )
        topology = Topology(
            bus,
            settings.policy.limits,
            replicas=settings.replicas,
            ack_wait=settings.ack_wait,
            redelivery=settings.redelivery,
            inbound_attempts=settings.inbound_attempts,
        )
        self.bus, self.topology = bus, topology
        if settings.authority is None:
            raise SchakelError("no directory authority key configured: the hub cannot trust keys")
        await topology.ensure()
        await self.share.announce(bus)  # the instances alive now: this one's share
        announcer = asyncio.create_task(self.share.run(bus), name="hub-announce")
        self._stack.push_async_callback(self.share.withdraw, bus)
        self._stack.push_async_callback(stop, announcer)
        self.directory_follower = await self._stack.enter_async_context(
            follow_directory(
                bus,
                self.directory,
                settings.authority,
                on_change=self._directory_changed,
                clock=self._clock,
            )
        )
        self._warn_expiring(None)
        if self.identity.org not in self.directory:
            _log.warning(
                "hub_identity_not_registered",
                org=self.identity.org,
                hint="partners cannot verify refusal notices until the authority registers it",
            )
        # Every partner's streams and consumers, with this hub's policy limits (whoever
        # provisioned them, the running hub's policy is the one that holds).
        ready = sorted({*settings.partners, *await topology.partners()})
        await topology.ensure_partners(ready)
        audit = AuditTrail(bus)
        self._stack.push_async_callback(audit.close)
        self._registry_reader = RegistryReader(settings.authority)
        edition = await self._registry_reader.read(bus)
        if edition is not None:
            self.registry_version = edition.version
            _log.info("registry_in_use", version=edition.version, published=edition.at)
        router = Router(
            policy=settings.policy,
            registry=settings.registry if edition is None else edition.registry,
            directory=self.directory,
            cases=KvCaseStore(await bus.kv(CASES_BUCKET)),
            messages=KvMessageRegistry(await bus.kv(MESSAGES_BUCKET)),
            audit=audit,
            outbox=Outbox(bus, self.identity.org),
            identity=self.identity,
            instance=settings.instance,
            clock=settings.clock,
        )
        self.router = router
        await self._watch_dead_letters(router, bus)
        await self._answer_status(router, url)
        await self._answer_operator(router, bus)
        self._ready = set(ready)
        follower = asyncio.create_task(self._follow_registry(router, topology), name="registry")
        self._stack.push_async_callback(stop, follower)
        flusher = asyncio.create_task(self._flush_refusals(router), name="refusal-counts")
        self._stack.push_async_callback(self._last_flush, router, flusher)
        sweeper = asyncio.create_task(self._sweep_expired(router, topology), name="expiry")
        self._stack.push_async_callback(stop, sweeper)
        self._runner = asyncio.create_task(self._run(router, topology), name="hub-runner")
        _log.info("hub_started", instance=settings.instance, nats=redacted(url))

    @staticmethod
    async def _flush_refusals(router: Router) -> None:
        """Once a second, record the refusals counted beyond their senders' budgets."""
        while True:
            await asyncio.sleep(1.0)
            try:
                await router.flush_refusals()
            except Exception as exc:
                _log.warning("refusal_flush_failed", error=type(exc).__name__)

    @staticmethod
    async def _last_flush(router: Router, flusher: asyncio.Task[None]) -> None:
        await stop(flusher)
        with contextlib.suppress(Exception):
            await router.flush_refusals()

    async def _sweep_expired(self, router: Router, topology: Topology) -> None:
        """Remove deliveries whose envelope expired before the recipient took them; tell the
        sender. Delivery streams are work queues, so they hold only what is still waiting
        (bounded by the backlog limits); one pass reads each message once, jumping over gaps,
        and a failure in one partner's stream does not stop the others'."""
        assert self.bus is not None
        bus = self.bus
        while True:
            await asyncio.sleep(self.settings.expiry_sweep)
            try:
                partners = await topology.partners()
            except Exception as exc:
                _log.warning("expiry_sweep_failed", error=type(exc).__name__)
                continue
            now = self._clock()
            for org in partners:
                try:
                    await self._sweep_one(router, bus, org, now)
                except Exception as exc:
                    _log.warning("expiry_sweep_failed", recipient=org, error=type(exc).__name__)

    @staticmethod
    async def _sweep_one(router: Router, bus: Bus, org: OrgId, now: dt.datetime) -> None:
        stream = delivery_stream(org)
        async for msg in bus.scan(stream, subject=delivery_filter(org)):
            if msg.headers.get(HEADER_KIND, KIND_ENVELOPE) != KIND_ENVELOPE:
                continue
            try:
                header = decode_header(split_envelope(msg.data)[0])
            except (EnvelopeError, ContractError):
                continue
            if header.expires_at > now:
                continue
            if await bus.delete(stream, msg.seq):
                await router.expired(msg.data, org)

    async def _answer_status(self, router: Router, url: str) -> None:
        """Answer partners' questions about their own messages (request-reply, metadata).

        The answer goes only to the asker's own reply subject: the private ``_R_`` subject
        the server made when the question crossed the asker's import (secured deployments) or
        the asker's own inbox prefix. It carries no headers of the request: a responder that
        copies headers lets the asker make the answer an instruction (``KV-Operation``,
        ``Nats-Expected-*``) to whatever stream the reply subject names.

        Questions arrive on a connection of their own, a bounded number waiting, and each
        partner gets a few a second: a flood of questions can slow the answers (and make the
        server cut this connection, which reconnects) but never the routing.
        """
        settings = self.settings
        name = f"{settings.instance}-status"
        service = await self._stack.enter_async_context(
            Bus(url, name=name, credentials=settings.credentials)
        )
        budget = RateLimiter(_STATUS_PER_SECOND, _STATUS_BURST)

        async def on_request(msg: Message) -> None:
            asker = OrgId(msg.subject.removeprefix(STATUS_PREFIX))
            if asker not in self.directory:
                # Not a registered partner (without accounts the subject is anyone's text):
                # no budget entry, no log line, no answer.
                return
            if not budget.take(asker):
                return  # above the asker's share: dropped, unanswered
            reply = msg.reply
            if not reply.startswith((_SERVICE_REPLY_PREFIX, inbox_prefix(asker) + ".")):
                _log.warning("status_reply_refused", asker=asker)
                return
            if len(msg.data) > _MAX_STATUS_REQUEST or not _MESSAGE_ID.fullmatch(msg.data):
                _log.warning("status_request_invalid", asker=asker)
                return
            try:
                answer = await router.state(asker, MessageId(msg.data.decode("ascii")))
                await service.send(reply, answer.model_dump_json().encode())
            except Exception as exc:
                _log.warning("status_failed", asker=asker, error=type(exc).__name__)

        subscription = await service.subscribe(
            STATUS_PREFIX + ">",
            on_request,
            queue="schakel-hub",
            pending=_STATUS_WAITING,
            pending_bytes=_STATUS_WAITING * 1024,
        )
        self._stack.push_async_callback(subscription.close)

    async def _watch_dead_letters(self, router: Router, bus: Bus) -> None:
        """Handle messages JetStream gave up on after their last delivery attempt.

        A delivery nobody took moves to the dead-letter stream and its sender is told; an
        inbound message the hub never finished (it crashed on it each time) moves to
        quarantine, is audited and its sender is told. A queue group: with several hubs, one
        of them handles each advisory. Advisories come from the server, in the hub's own
        account, and are parsed within bounds all the same.
        """

        async def on_advisory(msg: Message) -> None:
            try:
                advisory = boundedjson.loads(msg.data, max_bytes=64 * 1024)
                stream = str(advisory["stream"])
                seq = int(advisory["stream_seq"])
                deliveries = int(advisory.get("deliveries", 0))
            except (ContractError, KeyError, TypeError, ValueError, AttributeError):
                _log.warning("advisory_unreadable")
                return
            try:
                if stream.startswith(DELIVERY_STREAM_PREFIX):
                    await dead_letter(stream, seq, deliveries)
                elif stream.startswith(INBOUND_STREAM_PREFIX):
                    await quarantine(stream, seq, deliveries)
            except Exception as exc:
                _log.error("dead_letter_failed", stream=stream, error=type(exc).__name__)

        async def quarantine(stream: str, seq: int, deliveries: int) -> None:
            original = await bus.get(stream, seq)
            if original is None:
                return  # another hub, or the worker itself, already set it aside
            await self._quarantine(
                router, original.subject, original.data, original.headers, seq, deliveries
            )
            await bus.delete(stream, seq)

        async def dead_letter(stream: str, seq: int, deliveries: int) -> None:
            original = await bus.get(stream, seq)
            if original is None:
                return  # another hub already moved it
            subject = original.subject
            recipient = recipient_of_delivery_subject(subject)
            if recipient is None:
                return
            headers = original.headers
            await bus.publish(
                DLQ_PREFIX + recipient,
                original.data,
                {
                    HEADER_MSG_ID: f"dlq:{recipient}:{seq}",
                    HEADER_ORIGINAL_SUBJECT: subject,
                    HEADER_DELIVERIES: str(deliveries),
                    HEADER_KIND: headers.get(HEADER_KIND, KIND_ENVELOPE),
                },
            )
            await bus.delete(stream, seq)
            if headers.get(HEADER_KIND, KIND_ENVELOPE) == KIND_ENVELOPE:
                await router.dead_letter(original.data, recipient, deliveries)

        subscription = await bus.subscribe(
            MAX_DELIVERIES_ADVISORY, on_advisory, queue="schakel-hub"
        )
        self._stack.push_async_callback(subscription.close)

    def _directory_changed(self, _: object) -> None:
        self._warn_expiring(None)
        self._registry_changed.set()  # a registration may complete a registry entry

    async def _follow_registry(self, router: Router, topology: Topology) -> None:
        """Keep the router on the newest registry edition the authority published, and give
        every organisation that is both in the registry and registered its streams and
        consumers, without a restart: on a new edition (a message on its subject), on a
        change of the key directory, and every ``partner_scan`` seconds."""
        assert self.bus is not None
        bus = self.bus

        async def on_edition(_: Message) -> None:
            self._registry_changed.set()

        subscription = await bus.subscribe(REGISTRY_SUBJECT, on_edition)
        self._stack.push_async_callback(subscription.close)
        reader = self._registry_reader
        skipped_seen = 0
        while True:
            try:
                edition = await reader.read(bus)  # only what is new since the last read
                if reader.skipped > skipped_seen:
                    _log.error("registry_entry_skipped", entries=reader.skipped,
                               hint="not signed by the directory authority, or an older "
                               "edition appended again")  # fmt: skip
                skipped_seen = reader.skipped
                if edition is not None and edition.version > self.registry_version:
                    router.registry = edition.registry
                    self.registry_version = edition.version
                    _log.info("registry_updated", version=edition.version)
                wanted = {
                    org
                    for org in router.registry.partners()
                    if org in self.directory and org not in self._ready
                }
                if wanted:
                    await topology.ensure_partners(sorted(wanted))
                    self._ready |= wanted
                    _log.info("partners_ready", partners=sorted(wanted))
            except Exception as exc:
                _log.warning("registry_follow_failed", error=type(exc).__name__)
            self._registry_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._registry_changed.wait(), self.settings.partner_scan)

    async def _answer_operator(self, router: Router, bus: Bus) -> None:
        """Answer the operator's two questions: is a hub running, on which registry edition
        with how many partners ready (``schakel hub status``); and deliver a dead letter again
        (``schakel dlq replay``).

        The operator's user may read the dead-letter stream but write nowhere: it asks, and
        the hub copies the dead letter back to the subject it came from (a partner's delivery
        or inbound subject, nothing else) under an id that makes a repeated request a no-op,
        removes it from the dead-letter stream and records the replay in the audit trail. A
        replay request is a stream sequence in ASCII digits. Answers go only to the asker's
        own reply subject (never one the request names in the hub's account) and say what
        happened; they carry no headers of the request.
        """

        def own_reply(msg: Message) -> bool:
            if msg.reply.startswith((_SERVICE_REPLY_PREFIX, "_INBOX.")):
                return True
            _log.warning("operator_reply_refused", subject=msg.subject)
            return False

        async def on_replay(msg: Message) -> None:
            if not own_reply(msg):
                return
            if not (0 < len(msg.data) <= 20 and msg.data.isdigit()):
                await bus.send(msg.reply, b'{"result": "invalid"}')
                return
            seq = int(msg.data)
            try:
                result = await self._replay(router, bus, seq)
            except Exception as exc:
                _log.warning("replay_failed", seq=seq, error=type(exc).__name__)
                result = "failed"
            await bus.send(msg.reply, json.dumps({"seq": seq, "result": result}).encode())

        async def on_status(msg: Message) -> None:
            if own_reply(msg):
                status = {
                    "instance": self.settings.instance,
                    "registry_version": self.registry_version,
                    "partners_ready": len(self._ready),
                    "processed": self.processed,
                    "routing": dict(router.counts),
                    "instances": len(self.share.alive),
                    "partitions": self.share.partitions,
                }
                await bus.send(msg.reply, json.dumps(status).encode())

        for subject, handler in ((REPLAY_SUBJECT, on_replay), (HUB_STATUS_SUBJECT, on_status)):
            subscription = await bus.subscribe(subject, handler, queue="schakel-hub")
            self._stack.push_async_callback(subscription.close)

    @staticmethod
    async def _replay(router: Router, bus: Bus, seq: int) -> str:
        letter = await bus.get(DLQ_STREAM, seq)
        if letter is None:
            return "absent"
        original = letter.headers.get(HEADER_ORIGINAL_SUBJECT, "")
        recipient = recipient_of_delivery_subject(original)
        sender = org_of_inbound_subject(original)
        if recipient is None and sender is None:
            return "not-replayable"
        kind = letter.headers.get(HEADER_KIND, KIND_ENVELOPE)
        if recipient is not None and kind == KIND_ENVELOPE:
            problem = router.replay_problem(letter.data, recipient)
            if problem is not None:
                return problem  # stays in the dead-letter stream; the operator sees why
        headers = {HEADER_MSG_ID: f"replay:{seq}", HEADER_KIND: kind}
        await bus.publish(original, letter.data, headers)
        await bus.delete(DLQ_STREAM, seq)
        await router.replayed(letter.data, recipient, sender, seq)
        return "replayed"

    def _warn_expiring(self, _: object) -> None:
        now = self._clock()
        for cert in self.directory.expiring(now, self.settings.expiry_warning):
            _log.warning(
                "key_expiring",
                org=cert.body.org,
                kid=cert.kid,
                days_left=(cert.body.not_after - now).days,
            )

    async def add_partner(self, org: OrgId) -> None:
        """Create the delivery consumer for a partner joining at run time."""
        assert self.topology is not None
        await self.topology.ensure_partners([org])

    async def _run(self, router: Router, topology: Topology) -> None:
        """Fetch from the partitions this instance owns (``hub/share.py``) of every partner's
        inbound stream and route what comes, a batch at a time.

        One fetcher per partner and partition, each routing its own batch (at most
        ``per_sender_inflight`` messages) before it fetches the next: a partner that floods
        the hub fills its own fetchers only, and its messages about a case apply in the order
        it sent them. Every message about a case is in one partition, so one instance routes
        a case; where two meet on a case all the same (a change of share, a sender writing to
        another partition), the compare-and-set on the case record decides (the router reads
        the case again and decides afresh). A fetcher of a partition the instance no longer
        owns finishes its batch and stops; a partition it gains gets a fetcher at once.
        """
        fetchers = self._fetchers
        async with asyncio.TaskGroup() as group:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    for org in await topology.partners():
                        for partition in self.share.partitions:
                            task = fetchers.get((org, partition))
                            if task is None or task.done():
                                fetchers[org, partition] = group.create_task(
                                    self._fetch(router, topology, org, partition),
                                    name=f"hub-fetch-{org}-{partition}",
                                )
                except TransportError as exc:
                    _log.warning("partner_scan_failed", error=type(exc).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.partner_scan)
            # Stop taking work: each fetcher finishes the batch it holds and stops.
            await asyncio.gather(*fetchers.values(), return_exceptions=True)

    async def _fetch(self, router: Router, topology: Topology, org: OrgId, partition: int) -> None:
        try:
            puller = await topology.pull_inbound(org, partition)
        except TransportError as exc:  # the next partner scan starts a new fetcher
            _log.warning("inbound_bind_failed", sender=org, error=type(exc.__cause__).__name__)
            return
        size = min(self.settings.fetch_batch, self.settings.per_sender_inflight)
        failures = 0
        try:
            while not self._stop.is_set() and self.share.owns(partition):
                try:
                    batch = await puller.fetch(size, timeout=1.0)
                except Exception as exc:  # nothing a fetch meets may stop the routing
                    failures += 1
                    cause = exc.__cause__ if isinstance(exc, TransportError) else exc
                    _log.warning("fetch_failed", sender=org, error=type(cause).__name__,
                                 failures=failures)  # fmt: skip
                    if await self._inbound_gone(org):
                        return  # the partner was removed; a scan restarts it if it returns
                    await asyncio.sleep(min(5.0, 0.2 * 2 ** min(failures, 5)))
                    continue
                failures = 0
                if batch:
                    self._busy_since[org, partition] = time.monotonic()
                    try:
                        await self._process(router, batch)
                    finally:
                        self._busy_since.pop((org, partition), None)
        finally:
            await puller.close()

    def _routing(self) -> bool:
        """Whether no fetcher has been inside one batch for over ``stuck_after`` seconds."""
        now = time.monotonic()
        return all(now - since < self.stuck_after for since in self._busy_since.values())

    @property
    def fetching(self) -> set[tuple[OrgId, int]]:
        """The (partner, partition) pairs this instance is fetching from now."""
        return {key for key, task in self._fetchers.items() if not task.done()}

    async def _inbound_gone(self, org: OrgId) -> bool:
        """Whether ``org``'s inbound stream is known to be gone (not: NATS unreachable)."""
        if self.bus is None:
            return False
        try:
            return not await self.bus.exists(inbound_stream(org))
        except TransportError:
            return False

    async def _process(self, router: Router, batch: list[Pulled]) -> None:
        """Route a batch and acknowledge what was done; retry the rest later, and after its
        last attempt set a message aside in quarantine (never retried for ever)."""
        items = []
        for msg in batch:
            headers = msg.headers
            items.append(
                Inbound(
                    data=msg.data,
                    subject=msg.subject,
                    seq=msg.seq,
                    msg_id_hint=headers.get(HEADER_MSG_ID),
                    kind=headers.get(HEADER_KIND, KIND_ENVELOPE),
                    header_names=frozenset(headers),
                    final_attempt=msg.attempt >= self.settings.inbound_attempts,
                )
            )
        try:
            outcomes: list[Outcome | Exception] = await router.handle_batch(items)
        except Exception as exc:  # a failure of the batch as such: each message as failed
            outcomes = [exc] * len(batch)
        # A message held back behind a failed one of its case comes back after that one.
        behind: dict[str, float] = {}
        for msg, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Exception) and not isinstance(outcome, RetryLater):
                case = header_case_id(msg.data)
                behind[case] = max(behind.get(case, 0.0), _backoff(msg.attempt) + 0.5)
        for msg, outcome in zip(batch, outcomes, strict=True):
            later = behind.get(header_case_id(msg.data), 0.2 * msg.attempt)
            await self._finish(router, msg, outcome, later)

    async def _finish(
        self, router: Router, msg: Pulled, outcome: Outcome | Exception, later: float
    ) -> None:
        """Acknowledge a message routed (accepted or refused); otherwise hand it out again
        (``later`` seconds from now when the router said to retry it later), or set it aside
        after its last attempt."""
        attempt = msg.attempt
        try:
            if isinstance(outcome, Outcome):
                await msg.ack()
                self.processed += 1
            elif isinstance(outcome, RetryLater):
                await msg.nak(delay=later)
            else:
                transient = is_transient(outcome)
                _log.error("message_failed", error=type(outcome).__name__, attempt=attempt,
                           transient=transient)  # fmt: skip
                if attempt >= self.settings.inbound_attempts and not transient:
                    await self._quarantine(
                        router, msg.subject, msg.data, msg.headers, msg.seq, attempt
                    )
                    await msg.term()
                else:
                    await msg.nak(delay=_backoff(attempt))
        except Exception as exc:  # not acknowledged: JetStream hands it out again
            _log.warning("inbound_settle_failed", error=type(exc).__name__)

    async def _quarantine(
        self,
        router: Router,
        subject: str,
        data: bytes,
        headers: Mapping[str, str],
        seq: int,
        attempts: int,
    ) -> None:
        """Park an inbound message the hub cannot process; audit it; tell its sender.

        It goes to the dead-letter stream under ``schakel.quarantine.<org>``, with the headers
        ``schakel dlq list | replay`` reads, so that an operator can put it back once the
        cause is fixed.
        """
        sender = org_of_inbound_subject(subject)
        if sender is None or self.bus is None:
            return
        await self.bus.publish(
            quarantine_subject(sender),
            data,
            {
                HEADER_MSG_ID: f"quarantine:{sender}:{seq}",
                HEADER_ORIGINAL_SUBJECT: subject,  # its partition's
                HEADER_DELIVERIES: str(attempts),
                HEADER_KIND: headers.get(HEADER_KIND, KIND_ENVELOPE),
            },
        )
        await router.quarantined(sender, seq, attempts, data)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._state = "closed"
        self._stop.set()
        self._wake.set()
        if self._runner is not None:
            done, _ = await asyncio.wait({self._runner}, timeout=self.settings.shutdown_timeout)
            if not done:  # unfinished messages are redelivered
                _log.warning("hub_shutdown_timeout")
            await stop(self._runner)
        await self._stack.aclose()
        counts = dict(self.router.counts) if self.router is not None else {}
        _log.info("hub_stopped", instance=self.settings.instance, processed=self.processed,
                  **counts)  # fmt: skip


def registration(identity: PartnerIdentity, at: dt.datetime | None = None) -> KeyEventRequest:
    """The signed request that registers ``identity`` in the key log."""
    when = at or system_clock()
    return sign_request(register_request(identity, when), identity.signing_key)


async def register(
    bus: Bus, requests: Iterable[KeyEventRequest], authority: SigningKey
) -> list[OrgId]:
    """Append each request to the key log, countersigned (the directory authority's job; the
    security officer's user may do nothing more). A registration of an organisation already
    in the log is skipped: those organisations are returned. The hub gives a registered
    organisation of the registry its streams and consumers by itself."""
    follower = DirectoryFollower(KeyDirectory(), authority.public)
    await follower.sync(bus)
    skipped = []
    for request in requests:
        org = OrgId(request.event.org)
        if request.event.kind is KeyEventKind.REGISTER and org in follower.directory:
            skipped.append(org)
        else:
            await append_key_event(bus, request, authority)
    return skipped


async def provision(
    url: str,
    policy: Policy,
    requests: Iterable[KeyEventRequest],
    authority: SigningKey,
    *,
    replicas: int = 1,
    credentials: Credentials | None = None,
    ack_wait: float = ACK_WAIT,
    redelivery: tuple[float, ...] = REDELIVERY,
) -> list[OrgId]:
    """Set up a development or test system with the hub's all-powerful user: topology, then
    :func:`register`, then the partners' streams and consumers (a running hub would make
    those itself). Returns the organisations whose registration was skipped."""
    async with Bus(url, name="schakel-operator", credentials=credentials) as bus:
        topology = Topology(
            bus, policy.limits, replicas=replicas, ack_wait=ack_wait, redelivery=redelivery
        )
        await topology.ensure()
        requests = list(requests)
        skipped = await register(bus, requests, authority)
        orgs = [OrgId(r.event.org) for r in requests]
        orgs = [org for org in orgs if org_type_of(org) is not OrgType.HUB]
        await topology.ensure_partners(orgs)
        return skipped


def _backoff(attempt: int) -> float:
    """Seconds before a failed message is handed out again: 2, 4, ... at most 60."""
    return min(60.0, 2.0**attempt)
