"""The partner SDK: what a back office uses to talk to the hub.

::

    async with PartnerClient(identity, url) as client:
        message_id = await client.send(body, draft, to=[OrgId("ZVH.west")])
        async for item in client.messages():
            match item:
                case Delivery():   ...process item.body...; await item.ack()
                case Refusal():    ...item.notice.reason...; await item.ack()
                case Rejected():   ...log it...              (already acknowledged)

``send`` validates, seals and publishes, and returns the message id once JetStream has stored
it. ``messages`` yields opened, validated deliveries and the hub's signed refusal notices; the
back office acknowledges each after processing (at-least-once), and the client suppresses
redelivered duplicates by message id; with ``state_dir`` that memory survives a restart.
Deliveries that fail to open are acknowledged and yielded as :class:`Rejected`, with the reason
for the partner's own log.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import structlog
from pydantic import SecretStr

from schakel.adapters.seen import SeenStore
from schakel.bus import (
    Bus,
    Credentials,
    DirectoryFollower,
    Pulled,
    Puller,
    StreamFull,
    TransportError,
    follow_directory,
    stop,
)
from schakel.bus.settings import Settings, SettingsError
from schakel.contracts.bodies import Body
from schakel.contracts.clock import Clock, system_clock, whole_seconds
from schakel.contracts.enums import OrgType
from schakel.contracts.errors import EnvelopeError, SchakelError
from schakel.contracts.header import EnvelopeHeader, MessageDraft
from schakel.contracts.ids import KeyId, MessageId, OrgId, new_message_id, org_type_of
from schakel.contracts.notice import (
    RECEIPT_LABEL,
    REFUSAL_LABEL,
    DeliveryState,
    Receipt,
    RefusalNotice,
)
from schakel.contracts.topology import (
    HEADER_KIND,
    KIND_RECEIPT,
    KIND_REFUSAL,
    delivery_consumer,
    delivery_stream,
    header_case_id,
    inbound_subject,
    inbox_prefix,
    message_partition,
    status_subject,
)
from schakel.keys.crypto import VerifyKey
from schakel.keys.directory import KeyDirectory
from schakel.keys.envelope import MissingPrivateKey, Opened, open_envelope, seal
from schakel.keys.errors import KeyDirectoryError
from schakel.keys.identity import PartnerIdentity
from schakel.keys.keylog import KeyLog
from schakel.keys.keystore import PASSPHRASE_ENV, load_keystore
from schakel.keys.statement import claimed_statement, sign_statement, verify_statement

__all__ = [
    "Delivery",
    "DirectoryStale",
    "InboundFull",
    "NotRegistered",
    "PartnerClient",
    "Refusal",
    "Rejected",
]

# JetStream's answer when a stream with ``discard: new`` is at its message or byte limit.

_log = structlog.get_logger("schakel.adapter")
_DEFAULTS: Final = Settings.model_construct()  # the defaults, without reading any source
_RELOAD_INTERVAL: Final = 10.0  # seconds between reads of the keystore


@dataclass(frozen=True, slots=True)
class Delivery:
    """An opened, validated message for this partner."""

    header: EnvelopeHeader
    body: Body
    _msg: Pulled = field(repr=False)
    _seen: SeenStore = field(repr=False)
    _after_ack: Callable[[Delivery], Awaitable[None]] | None = field(default=None, repr=False)

    @property
    def message_id(self) -> MessageId:
        """The message id."""
        return MessageId(self.header.message_id)

    async def ack(self) -> None:
        """The back office has processed the message: remember it, then acknowledge it."""
        self._seen.add(self.message_id, self.header.expires_at)
        await self._msg.ack()
        if self._after_ack is not None:
            await self._after_ack(self)

    async def in_progress(self) -> None:
        """The back office is still working on it: JetStream waits again before it hands the
        message out anew (and the wait does not count as an attempt)."""
        await self._msg.in_progress()

    async def retry_later(self, delay: float | None = None) -> None:
        """The back office could not process it now: have it redelivered after ``delay``
        seconds (default: 5 s doubling per attempt, at most an hour). After the consumer's last
        attempt the hub moves it to the dead-letter stream and tells the sender."""
        attempt = self._msg.attempt
        await self._msg.nak(
            delay=delay if delay is not None else min(3600.0, 5.0 * 2 ** (attempt - 1))
        )


@dataclass(frozen=True, slots=True)
class Refusal:
    """The hub refused one of this partner's messages."""

    notice: RefusalNotice
    _msg: Pulled = field(repr=False)

    async def ack(self) -> None:
        """Acknowledge the notice."""
        await self._msg.ack()

    async def in_progress(self) -> None:
        """Still being read: JetStream waits again before it hands the notice out anew."""
        await self._msg.in_progress()


class NotRegistered(SchakelError):
    """This organisation is not in the key directory: the directory authority has not
    registered it (or its keystore holds other keys than the registered ones)."""


class DirectoryStale(SchakelError):
    """The client's view of the key directory is too old to trust: it fails closed."""


class InboundFull(SchakelError):
    """This partner's inbound queue at the hub is at its limit (the hub has not caught up with
    what it already sent): nothing was stored; send again later."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """A delivery this client could not open or validate (already acknowledged)."""

    reason: str
    message_id: str | None


Incoming = Delivery | Refusal | Rejected


class PartnerClient:
    """One partner's connection to the hub; an async context manager, used once."""

    def __init__(
        self,
        identity: PartnerIdentity,
        nats_url: str,
        *,
        authority: VerifyKey,
        nkey_seed: Path | None = None,
        tls_ca: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        max_directory_age: dt.timedelta = dt.timedelta(seconds=_DEFAULTS.max_directory_age),
        resync_every: float = _DEFAULTS.resync_every,
        state_dir: Path | None = _DEFAULTS.state_dir,
        receipts: bool = _DEFAULTS.receipts,
        on_alarm: Callable[[str], None] | None = None,
        clock: Clock = system_clock,
        identity_source: Callable[[], PartnerIdentity] | None = None,
    ) -> None:
        """``identity_source`` reads this partner's identity again (its keystore): when the
        key directory shows a key of ours we do not hold, or a delivery is for one, the client
        loads it from there before it calls it a compromise or gives up on the delivery."""
        self.identity = identity
        self._clock = clock
        self._identity_source = identity_source
        self._reloaded_at: float | None = None
        self._reload_lock = asyncio.Lock()
        self._checks: set[asyncio.Task[None]] = set()  # own-key checks under way
        self.url = nats_url
        self._authority = authority
        self._max_age = max_directory_age
        self._resync_every = resync_every
        self._receipts = receipts
        self.receipted: dict[str, set[str]] = {}
        self._receipt_tasks: set[asyncio.Task[None]] = set()
        self.directory_follower: DirectoryFollower | None = None
        self._on_alarm = on_alarm or (lambda _: None)
        self.alarms: list[str] = []
        self._own_keys = self._public_keys(identity)
        self._credentials = Credentials(
            nkey_seed=nkey_seed,
            tls_ca=tls_ca,
            inbox_prefix=inbox_prefix(identity.org),
            tls_cert=tls_cert,
            tls_key=tls_key,
        )
        self.directory = KeyDirectory()
        self._stack = contextlib.AsyncExitStack()
        self._bus: Bus | None = None
        self._sub: Puller | None = None
        self._seen = SeenStore(state_dir / f"{identity.org}.seen" if state_dir else None, clock)
        self._buffer: list[Pulled] = []
        self._state = "unopened"
        self._alarmed: set[bytes] = set()
        self.duplicates_suppressed = 0

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        identity: PartnerIdentity | None = None,
        *,
        on_alarm: Callable[[str], None] | None = None,
        clock: Clock = system_clock,
    ) -> PartnerClient:
        """A client configured by the settings (``bus/settings.py``): NATS URL and credentials,
        the directory authority's key, the state directory and the SDK's timings; the identity
        from ``settings.keystore`` (passphrase in ``SCHAKEL_KEYSTORE_PASSPHRASE``) unless given.

        Raises:
            SettingsError: a required setting is missing or invalid.
            KeystoreError: the keystore cannot be opened.
        """
        authority = settings.authority_key()
        if settings.nats_url is None or authority is None:
            raise SettingsError("the SDK needs nats_url and authority_public")
        reload: Callable[[], PartnerIdentity] | None = None
        if identity is None:
            keystore = settings.keystore
            if keystore is None:
                raise SettingsError("the SDK needs keystore (or an identity)")
            passphrase = os.environ.get(PASSPHRASE_ENV)
            if not passphrase:
                raise SettingsError(f"no passphrase for the keystore: set {PASSPHRASE_ENV}")
            secret = SecretStr(passphrase)

            def reload() -> PartnerIdentity:
                return load_keystore(keystore, secret)

            identity = reload()
        return cls(
            identity,
            settings.nats_url,
            authority=authority,
            nkey_seed=settings.nats_nkey,
            tls_ca=settings.nats_tls_ca,
            tls_cert=settings.nats_tls_cert,
            tls_key=settings.nats_tls_key,
            max_directory_age=dt.timedelta(seconds=settings.max_directory_age),
            resync_every=settings.resync_every,
            state_dir=settings.state_dir,
            receipts=settings.receipts,
            on_alarm=on_alarm,
            clock=clock,
            identity_source=reload,
        )

    @property
    def org(self) -> OrgId:
        """This partner's organisation id."""
        return self.identity.org

    async def __aenter__(self) -> Self:
        if self._state != "unopened":
            raise RuntimeError("a PartnerClient can be opened only once")
        self._state = "open"
        try:
            bus = Bus(self.url, name=f"schakel-adapter-{self.org}", credentials=self._credentials)
            self._bus = await bus.__aenter__()
            self._stack.push_async_callback(self._close)
            self.directory_follower = await self._stack.enter_async_context(
                follow_directory(
                    bus,
                    self.directory,
                    self._authority,
                    resync_every=self._resync_every,
                    on_change=self._check_own_keys,
                    clock=self._clock,
                )
            )
            self._check_registered()
            self._sub = await bus.pull(delivery_stream(self.org), delivery_consumer(self.org))
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def _close(self) -> None:
        await stop(*self._checks)
        if self._receipt_tasks:  # give receipts in flight a moment to go out
            await asyncio.wait(set(self._receipt_tasks), timeout=5)
            await stop(*self._receipt_tasks)
        # Pending fetch-timeout status messages would make drain wait for ever: unsubscribe
        # the pull subscription first (unacknowledged messages are redelivered later).
        if self._sub is not None:
            await self._sub.close()
        if self._bus is not None:
            await self._bus.close()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._state = "closed"
        await self._stack.aclose()

    def _check_registered(self) -> None:
        """Fail at connect, not later: an organisation the directory does not know can send
        nothing that will be routed and will receive nothing."""
        if self.org not in self.directory:
            raise NotRegistered(
                f"{self.org} is not in the key directory: give its registration request "
                "(<org>.register.json from `schakel keys init`) to the directory authority"
            )
        registered = self.directory.record(self.org).signing_key.kid
        self._settle()
        if registered != self.identity.signing_kid:
            raise NotRegistered(
                f"{self.org} is registered with signing key {registered}, which this keystore "
                "does not hold"
            )

    @staticmethod
    def _public_keys(identity: PartnerIdentity) -> set[bytes]:
        keys = {identity.signing_key.public.raw} | {c.body.public for c in identity.certificates}
        if identity.next_signing_key is not None:
            keys.add(identity.next_signing_key.public.raw)
        return keys

    def _settle(self) -> None:
        """Sign with our next signing key once the key log shows its rotation."""
        if self.identity.next_signing_key is not None and self.org in self.directory:
            registered = KeyId(self.directory.record(self.org).signing_key.kid)
            settled = self.identity.settled(registered)
            if settled is not self.identity:
                self.identity = settled
                _log.info("signing_key_rotated", org=self.org, kid=registered)

    def update_identity(self, identity: PartnerIdentity) -> None:
        """Use a rotated identity (same organisation) from now on; keep the old keys as ours."""
        if identity.org != self.org:
            raise ValueError("an identity of another organisation")
        self.identity = identity
        self._own_keys |= self._public_keys(identity)

    async def _reload_identity(self, *, force: bool = False) -> bool:
        """Read our identity again from its source (a rotation done by the CLI on the
        keystore); ``True`` if it holds keys we did not have.

        One read at a time: whoever comes second waits for the first and then sees its
        result. Without ``force`` at most one read per interval (a delivery sealed to a key we
        do not hold: a sender flooding those must not make us derive a key per delivery);
        with it always (a new key of ours in the key log: rare, and only the authority can
        append).
        """
        if self._identity_source is None:
            return False
        source = self._identity_source
        async with self._reload_lock:
            now = time.monotonic()
            recent = self._reloaded_at is not None and now - self._reloaded_at < _RELOAD_INTERVAL
            if recent and not force:
                return False
            self._reloaded_at = now
            try:
                fresh = await asyncio.to_thread(source)
            except SchakelError as exc:
                _log.warning("identity_reload_failed", error=type(exc).__name__)
                return False
            if fresh.org != self.org:
                return False
            known = set(self._own_keys)
            self.update_identity(fresh)
            return self._own_keys != known

    def _newer_than_held(self, kid: KeyId) -> bool:
        """Whether ``kid`` may be a key of ours newer than every key we hold: one the
        directory lists as newer, or one our view of the directory does not know yet (the hub
        delivers only to keys its directory lists, and ours may be a resync behind)."""
        if self.org not in self.directory:
            return True
        cert = self.directory.record(self.org).encryption_key(kid)
        if cert is None:
            return True
        held = [c.body.not_before for c in self.identity.certificates]
        return not held or cert.body.not_before > max(held)

    def _suspicious_keys(self) -> set[bytes]:
        """Keys the directory lists as ours, current, that we do not hold: its current signing
        key, and encryption keys at least as new as the oldest we hold (older ones are keys
        we pruned, which look the same after a restart)."""
        if self.org not in self.directory:
            return set()
        record = self.directory.record(self.org)
        held = [c.body.not_before for c in self.identity.certificates]
        oldest = min(held) if held else None
        found = {record.signing_key.key.raw} - self._own_keys
        for cert in record.encryption_keys:
            if oldest is None or cert.body.not_before >= oldest:
                found |= {cert.body.public} - self._own_keys
        return found

    def _check_own_keys(self, log: KeyLog) -> None:
        """Key transparency's self-monitoring: alarm at a current key of ours we never held,
        after reading our keystore again (the security officer may have rotated the key with
        the CLI meanwhile; a read already under way for a delivery is waited for, not taken
        for a miss)."""
        self._settle()
        if not self._suspicious_keys():
            return
        task = asyncio.get_running_loop().create_task(self._confirm_foreign_keys(log.length))
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _confirm_foreign_keys(self, length: int) -> None:
        if self._suspicious_keys():
            await self._reload_identity(force=True)
            self._settle()
        for foreign in self._suspicious_keys():
            if foreign in self._alarmed:
                continue
            alarm = f"a key we did not create appeared under {self.org} in the key directory"
            self._alarmed.add(foreign)
            self.alarms.append(alarm)
            _log.error("foreign_key_for_own_org", org=self.org, key_log_length=length)
            self._on_alarm(alarm)

    def readiness(self) -> list[str]:
        """What keeps this client from sending and receiving now (empty: ready): the NATS
        connection, the key directory view's age, this partner's own keys."""
        problems = []
        if self._state != "open" or self._bus is None or not self._bus.connected:
            problems.append("nats")
        synced = self.directory.synced_at
        if synced is None or self._clock() - synced > self._max_age:
            problems.append("directory")
        now = self._clock()
        try:
            self.directory.record(self.org)  # a valid encryption key others can seal to
            self.directory.signer(self.org, self.identity.signing_kid, now, now=now)
        except KeyDirectoryError:
            problems.append("own_keys")
        return problems

    def _require_fresh_directory(self) -> None:
        synced = self.directory.synced_at
        if synced is None or self._clock() - synced > self._max_age:
            raise DirectoryStale(
                f"key directory view is older than {self._max_age}; refusing to send"
            )

    def _require_open(self) -> Bus:
        if self._state != "open" or self._bus is None:
            raise RuntimeError("the client is not open")
        return self._bus

    async def send(
        self,
        body: Body,
        draft: MessageDraft,
        to: Sequence[OrgId],
        *,
        message_id: MessageId | None = None,
    ) -> MessageId:
        """Validate, seal and publish a message; return its id once JetStream stored it.

        Raises:
            ContractError: the body or draft breaks a contract (nothing was sent).
            KeyDirectoryError: a recipient is unknown or has no valid key.
            InboundFull: the hub holds as many unprocessed messages of ours as it accepts.
        """
        self._require_open()
        self._require_fresh_directory()
        message_id = message_id or new_message_id()
        records = [self.directory.record(org) for org in to]
        raw = await asyncio.to_thread(
            functools.partial(
                seal, body, draft, sender=self.identity, recipients=records,
                message_id=message_id, now=self.now(),
            )
        )  # fmt: skip
        await self.publish_raw(raw, message_id)
        return message_id

    async def publish_raw(self, raw: bytes, message_id: str) -> None:
        """Publish envelope bytes as they are (for tests of the hub's defences).

        Raises:
            InboundFull: the hub holds as many unprocessed messages of ours as it accepts.
        """
        bus = self._require_open()
        subject = inbound_subject(self.org, message_partition(header_case_id(raw), message_id))
        try:
            await bus.publish(subject, raw, {"Nats-Msg-Id": message_id})
        except StreamFull as exc:
            raise InboundFull("the hub's inbound queue for us is full; send later") from exc

    async def receive(self, timeout: float = 5.0) -> Incoming | None:
        """The next incoming item, or ``None`` when nothing arrives within ``timeout``."""
        assert self._sub is not None
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            if not self._buffer:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    return None
                try:
                    self._buffer = await self._sub.fetch(16, timeout=min(remaining, 1.0))
                except TransportError as exc:  # failover, reconnect: transient, try again
                    _log.warning("fetch_failed", error=type(exc.__cause__).__name__)
                    await asyncio.sleep(min(0.2, max(remaining, 0)))
                    continue
                if not self._buffer:
                    continue
            msg = self._buffer.pop(0)
            item = await self._interpret(msg)
            if item is not None:
                return item

    async def messages(self, idle_timeout: float | None = None) -> AsyncIterator[Incoming]:
        """Yield incoming items; stop after ``idle_timeout`` seconds without any (or never)."""
        while True:
            item = await self.receive(timeout=idle_timeout or 3600.0)
            if item is None:
                if idle_timeout is not None:
                    return
                continue
            yield item

    async def _interpret(self, msg: Pulled) -> Incoming | None:
        kind = msg.headers.get(HEADER_KIND)
        if kind == KIND_REFUSAL:
            return await self._refusal(msg)
        if kind == KIND_RECEIPT:
            self._take_receipt(msg.data)
            await msg.ack()
            return None
        try:
            opened = await self._open(msg.data)
        except MissingPrivateKey as exc:
            if self._newer_than_held(exc.kid):
                # A key of ours newer than any we hold: a rotation not loaded yet. Left
                # unacknowledged, so JetStream hands it out again on the consumer's back-off
                # schedule (never dropped); after the last attempt the hub dead-letters it and
                # tells the sender.
                _log.warning("delivery_for_unknown_own_key", attempt=msg.attempt)
                return None
            # A key we pruned (or never had, older than ours): no later attempt can open it,
            # and holding it would let a sender stall our queue with such messages.
            await msg.ack()
            _log.warning("delivery_rejected", reason=exc.reason, subject=msg.subject)
            return Rejected(reason=exc.reason, message_id=None)
        except EnvelopeError as exc:
            await msg.ack()
            _log.warning("delivery_rejected", reason=exc.reason, subject=msg.subject)
            return Rejected(reason=exc.reason, message_id=None)
        if opened.header.message_id in self._seen:
            await msg.ack()  # a redelivery of something the back office already processed
            self.duplicates_suppressed += 1
            return None
        return Delivery(
            header=opened.header,
            body=opened.body,
            _msg=msg,
            _seen=self._seen,
            _after_ack=self._send_receipt if self._receipts else None,
        )

    async def _open(self, data: bytes) -> Opened:
        """Open a delivery; once, if it is for a key of ours we do not hold, after reading our
        identity again."""
        for attempt in range(2):
            try:
                return await asyncio.to_thread(
                    functools.partial(open_envelope, now=self._clock()),
                    data,
                    self.identity,
                    self.directory.signer,
                )
            except MissingPrivateKey:
                if attempt:
                    raise
                # Opened again after the read, whoever did it (a read for the key log's news
                # may have been under way): a second attempt costs an open, not a derivation.
                await self._reload_identity()
        raise AssertionError("unreachable")

    async def _send_receipt(self, delivery: Delivery) -> None:
        """Tell the sender, through the hub, that our back office processed its message.

        Sent in the background with retries (same dedupe id, so never twice): a NATS outage
        must not make the acknowledgement fail, nor lose the receipt.
        """
        receipt = Receipt(
            message_id=delivery.message_id,
            recipient=self.org,
            recipient_kid=self.identity.signing_kid,
            sender=delivery.header.sender.org,
            at=self.now(),
        )
        raw = sign_statement(receipt, self.identity.signing_key, RECEIPT_LABEL)
        dedupe = f"receipt:{delivery.message_id}:{self.org}"
        # The connection is taken now: the task may first run while the client closes (which
        # waits for it), after the back office's last acknowledgement.
        subject = inbound_subject(
            self.org, message_partition(delivery.header.case_id, delivery.message_id)
        )
        task = asyncio.create_task(
            self._publish_receipt(self._require_open(), subject, raw, dedupe)
        )
        self._receipt_tasks.add(task)
        task.add_done_callback(self._receipt_tasks.discard)

    async def _publish_receipt(self, bus: Bus, subject: str, raw: bytes, dedupe: str) -> None:
        """(On the partition of the delivery's case: where the case's messages go.)"""
        for attempt in range(30):
            try:
                await bus.publish(
                    subject,
                    raw,
                    {"Nats-Msg-Id": dedupe, HEADER_KIND: KIND_RECEIPT},
                )
            except Exception as exc:  # NATS unavailable: wait and try again
                _log.warning("receipt_retry", attempt=attempt, error=type(exc).__name__)
                await asyncio.sleep(min(5.0, 0.2 * 2**attempt))
            else:
                return
        _log.error("receipt_not_sent", dedupe=dedupe)

    def _take_receipt(self, raw: bytes) -> None:
        """A receipt for one of our messages, passed on by the hub: check it, remember it."""
        try:
            claimed = claimed_statement(raw, Receipt)
            key = self.directory.signer(
                OrgId(claimed.recipient), KeyId(claimed.recipient_kid), claimed.at
            )
            receipt = verify_statement(raw, Receipt, RECEIPT_LABEL, key)
        except SchakelError as exc:
            _log.warning("receipt_rejected", error=type(exc).__name__)
            return
        if receipt.sender == self.org:
            self.receipted.setdefault(receipt.message_id, set()).add(receipt.recipient)

    async def status(self, message_id: MessageId, timeout: float = 5.0) -> DeliveryState:
        """Ask the hub what became of one of our messages (metadata only)."""
        bus = self._require_open()
        reply = await bus.request(status_subject(self.org), message_id.encode(), timeout=timeout)
        return DeliveryState.model_validate_json(reply)

    async def _refusal(self, msg: Pulled) -> Incoming:
        hubs = [r for r in self.directory if org_type_of(r.org) is OrgType.HUB]
        for record in hubs:
            try:
                notice = verify_statement(
                    msg.data, RefusalNotice, REFUSAL_LABEL, record.signing_key.key
                )
            except EnvelopeError:
                continue
            return Refusal(notice=notice, _msg=msg)
        await msg.ack()
        return Rejected(reason="refusal notice not signed by a known hub", message_id=None)

    def now(self) -> dt.datetime:
        """The current time by this client's clock (UTC, whole seconds)."""
        return whole_seconds(self._clock)
