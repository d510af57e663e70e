"""Connecting to NATS, and every operation Schakel does on it, as :class:`Bus`.

Every client of NATS connects here: the hub, the partner SDK and the operator's commands.
What the layers above see are Schakel's own types (:class:`Message`, :class:`Stored`,
:class:`Pulled`, :class:`Kv`) and errors (:class:`~schakel.bus.errors.TransportError`);
``nats`` is imported nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import (
    DEFAULT_SUB_PENDING_BYTES_LIMIT,
    DEFAULT_SUB_PENDING_MSGS_LIMIT,
)
from nats.aio.subscription import Subscription as _NatsSubscription
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.kv import KeyValue

from schakel.bus.errors import TransportError, error_code, mapped

__all__ = [
    "FIRST_CONNECT_TIMEOUT",
    "PUBLISH_TIMEOUT",
    "Bus",
    "Credentials",
    "Kv",
    "KvEntry",
    "Message",
    "Pulled",
    "Puller",
    "Stored",
    "Subscription",
    "redacted",
]

_log = structlog.get_logger("schakel.nats")
_WRONG_LAST_SEQUENCE: Final = 10071
# JetStream's "no message found" (get) and "stream store EOF" (delete of a message that is
# not there). Any other error, e.g. 10059 "stream not found", is a failure, not an answer.
_NO_MESSAGE: Final = 10037
_NO_MESSAGE_TO_DELETE: Final = 10057
# How long the first connection may take: after it the client reconnects for ever, but a
# server that was never reached is a configuration error to report, not to wait out.
FIRST_CONNECT_TIMEOUT: Final = 10.0
_EXPECTED_LAST_SUBJECT_SEQ: Final = "Nats-Expected-Last-Subject-Sequence"
# JetStream's "wrong last sequence" (a compare-and-set that lost), both forms.
_WRONG_LAST_SEQUENCES: Final = frozenset({_WRONG_LAST_SEQUENCE, 10164})
_KV_KEY: Final = re.compile(r"[-/_=.a-zA-Z0-9]+")  # nats-py's rule for a key
PUBLISH_TIMEOUT: Final = 5.0  # nats-py's default for a JetStream publish
_MAX_ACK_BYTES: Final = 4096  # a JetStream acknowledgement, or its error, is far smaller


@dataclass(frozen=True, slots=True)
class Credentials:
    """How a client proves who it is and checks who the server is."""

    nkey_seed: Path | None = None
    tls_ca: Path | None = None
    inbox_prefix: str | None = None
    tls_cert: Path | None = None  # a client certificate, for a server that verifies clients
    tls_key: Path | None = None

    def __repr__(self) -> str:
        return (
            f"Credentials(nkey_seed={self.nkey_seed}, tls_ca={self.tls_ca}, "
            f"tls_cert={self.tls_cert})"
        )

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS context these credentials ask for (``None``: plaintext unless the URL
        says ``tls://``).

        Raises:
            TransportError: a file cannot be read or the key does not match the certificate.
        """
        if self.tls_ca is None and self.tls_cert is None:
            return None
        if (self.tls_cert is None) != (self.tls_key is None):
            raise TransportError("a client certificate needs its key: set both or neither")
        try:
            context = ssl.create_default_context(
                cafile=str(self.tls_ca) if self.tls_ca is not None else None
            )
            if self.tls_cert is not None and self.tls_key is not None:
                context.load_cert_chain(str(self.tls_cert), str(self.tls_key))
        except (OSError, ssl.SSLError) as exc:
            # Names no path: a settings error names the setting; this says which kind of file.
            raise TransportError(
                f"the TLS files cannot be used ({type(exc).__name__}: "
                f"{getattr(exc, 'strerror', None) or getattr(exc, 'reason', None) or 'invalid'})"
            ) from None
        return context


@dataclass(frozen=True, slots=True)
class Message:
    """A message on a subject (not stored): a question, an advisory, an event."""

    subject: str
    data: bytes
    reply: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Stored:
    """A message as a stream stores it."""

    stream: str
    seq: int
    subject: str
    data: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


class Pulled:
    """A message a durable consumer handed out; it comes back unless acknowledged."""

    __slots__ = ("_msg", "attempt", "data", "headers", "seq", "subject")

    def __init__(self, msg: Msg, seq: int, attempt: int) -> None:
        self._msg = msg
        self.subject: str = msg.subject
        self.data: bytes = msg.data
        self.headers: Mapping[str, str] = msg.headers or {}
        self.seq = seq
        self.attempt = attempt

    @classmethod
    def of(cls, msg: Msg) -> Pulled | None:
        """``msg`` as handed out by JetStream, or ``None`` if it is not such a message (its
        reply subject is not a JetStream acknowledgement subject: on a server without
        accounts anyone who learns a puller's inbox can publish to it)."""
        try:
            metadata = msg.metadata
            return cls(msg, int(metadata.sequence.stream), int(metadata.num_delivered or 1))
        except Exception:  # whatever the reply subject holds, it is not ours to trust
            return None

    async def ack(self) -> None:
        """Done with it: the stream may forget it (work queue)."""
        with mapped("ack"):
            await self._msg.ack()

    async def nak(self, delay: float | None = None) -> None:
        """Hand it out again, after ``delay`` seconds."""
        with mapped("nak"):
            await self._msg.nak(delay=delay)

    async def in_progress(self) -> None:
        """Still working on it: JetStream restarts its wait before handing it out again."""
        with mapped("in progress"):
            await self._msg.in_progress()

    async def term(self) -> None:
        """Never hand it out again."""
        with mapped("term"):
            await self._msg.term()


class Puller:
    """Fetches from one durable pull consumer (bound, never created by the caller).

    Adaptive: a fetch waits for one message, then takes what is already waiting on the
    server, up to the batch, and returns; it never waits to fill the batch. (nats-py's own
    fetch, once a waiting pull has brought one message, waits for the rest of the batch until
    its timeout: at low rates a message sat there for up to the timeout.) No pull request
    stays open after a fetch returns, so nothing is handed out to a client that is not
    fetching (it would count as a delivery attempt).
    """

    def __init__(self, subscription: JetStreamContext.PullSubscription) -> None:
        self._subscription = subscription
        # nats-py's pull subscription: its core subscription (the inbox the server delivers
        # to) and the consumer's next-message subject. Taken here, so that a client upgrade
        # that renames them fails at bind, not in the middle of routing.
        self._inbox: _NatsSubscription = subscription._sub
        self._next_subject: str = subscription._nms
        self._deliver: str = subscription._deliver
        self.foreign = 0  # messages that arrived in the inbox but were not JetStream's

    async def _pull(self, request: dict[str, object]) -> None:
        with mapped("fetch"):
            await self._inbox._conn.publish(
                self._next_subject, json.dumps(request).encode(), reply=self._deliver
            )

    async def _next(self, timeout: float) -> Msg | None:
        """The next message in the inbox (a status message too), or ``None`` in time."""
        try:
            with mapped("fetch"):
                return await self._inbox.next_msg(timeout=max(0.001, timeout))
        except TransportError as exc:
            if isinstance(exc.__cause__, TimeoutError):
                return None
            raise

    @staticmethod
    def _status(msg: Msg) -> str | None:
        status = (msg.headers or {}).get("Status")
        return status if status is not None and not msg.data else None

    def _check(self, msg: Msg) -> None:
        if self._status(msg) == "409":
            description = (msg.headers or {}).get("Description", "").lower()
            if "deleted" in description or "push" in description:
                raise TransportError("fetch: the consumer is gone")

    async def fetch(self, batch: int, timeout: float) -> list[Pulled]:
        """Up to ``batch`` messages, as soon as one is there; waiting at most ``timeout``
        seconds for it; an empty list when none came. Messages that are not JetStream's are
        dropped and counted (:attr:`foreign`), never raised.

        Raises:
            TransportError: the fetch failed (the consumer is gone, NATS is unreachable).
        """
        timeout = max(timeout, 0.05)
        expires = int(timeout * 1_000_000_000)
        messages: list[Msg] = []
        # Left over from an earlier fetch (a late answer): take those first.
        while not self._inbox._pending_queue.empty() and len(messages) < batch:
            left = self._inbox._pending_queue.get_nowait()
            self._inbox._pending_size -= len(left.data)
            if self._status(left) is None:
                messages.append(left)
        if not messages:
            # Wait for one; the request ends with it, or with a 408 at its expiry (waited
            # for, with a margin, so that no request outlives the fetch).
            await self._pull({"batch": 1, "expires": expires})
            deadline = time.monotonic() + timeout + 1.0
            while not messages:
                first = await self._next(deadline - time.monotonic())
                if first is None:
                    return []
                self._check(first)
                if self._status(first) is None:
                    messages.append(first)
                elif self._status(first) in ("404", "408", "409"):
                    return []  # expired (or too many pulls waiting): the caller comes back
        if batch > len(messages):
            # What else is waiting already: answered at once, ended by a status if short.
            wanted = batch - len(messages)
            await self._pull({"batch": wanted, "no_wait": True})
            deadline = time.monotonic() + 5.0
            while wanted:
                msg = await self._next(deadline - time.monotonic())
                if msg is None:
                    break
                self._check(msg)
                if self._status(msg) is None:
                    messages.append(msg)
                    wanted -= 1
                elif self._status(msg) in ("404", "408", "409"):
                    break
        pulled = [Pulled.of(msg) for msg in messages]
        taken = [p for p in pulled if p is not None]
        if len(taken) < len(pulled):
            self.foreign += len(pulled) - len(taken)
            _log.warning("foreign_message_in_inbox", dropped=len(pulled) - len(taken))
        return taken

    async def close(self) -> None:
        """Stop pulling (what was handed out and not acknowledged comes back later)."""
        with contextlib.suppress(Exception):
            await self._subscription.unsubscribe()


class Subscription:
    """A subscription to a subject; :meth:`close` ends it."""

    def __init__(self, subscription: _NatsSubscription) -> None:
        self._subscription = subscription

    async def close(self) -> None:
        """Unsubscribe."""
        with contextlib.suppress(Exception):
            await self._subscription.unsubscribe()


@dataclass(frozen=True, slots=True)
class KvEntry:
    """A value in a KV bucket and its revision (for compare-and-set)."""

    value: bytes
    revision: int


class _Pipeline:
    """Every JetStream publish of one connection, pipelined.

    A publish is written at once with a reply subject of its own under one wildcard
    subscription, and its caller waits for the acknowledgement there; publishes made while
    others wait go out without waiting for them (the client's flusher writes what
    accumulated in one go). Timeouts are kept per wave: the publishes started in one turn of
    the event loop share one timer. What a caller sees is what ``js.publish`` gave: the
    stream sequence, or the same NATS errors (JetStream's API errors with their codes, no
    responders, a timeout), so :class:`~schakel.bus.errors.mapped` maps them alike.

    Against ``js.publish`` (one request with a future, a token, a timer and a parsed ``PubAck``
    each) this costs a third of the client's CPU per publish: ``bench/`` measures the hub.
    """

    def __init__(self, nc: Client, timeout: float) -> None:
        self._nc = nc
        self._timeout = timeout
        self._prefix = ""
        self._next = 0
        self._waiting: dict[str, asyncio.Future[int]] = {}
        self._wave: list[asyncio.Future[int]] | None = None
        self._lock = asyncio.Lock()

    async def _start(self) -> None:
        async with self._lock:
            if not self._prefix:
                prefix = self._nc.new_inbox() + "."
                await self._nc.subscribe(prefix + "*.*", cb=self._on_ack)
                self._prefix = prefix

    async def publish(self, subject: str, data: bytes, headers: dict[str, str]) -> int:
        """Store ``data``; its stream sequence."""
        token, future = await self._send(subject, data, headers)
        try:
            return await future
        finally:
            self._waiting.pop(token, None)

    async def publish_many(
        self, items: Sequence[tuple[str, bytes, dict[str, str]]]
    ) -> list[int | BaseException]:
        """Store each ``(subject, data, headers)``, all written before any acknowledgement is
        awaited: per item its stream sequence or the NATS error (one wait for the lot)."""
        sent = []
        try:
            for subject, data, headers in items:
                sent.append(await self._send(subject, data, headers))
            return list(
                await asyncio.gather(*(future for _, future in sent), return_exceptions=True)
            )
        finally:
            for token, future in sent:
                self._waiting.pop(token, None)
                future.cancel()  # not awaited when sending the rest failed: nobody waits

    async def _send(
        self, subject: str, data: bytes, headers: dict[str, str]
    ) -> tuple[str, asyncio.Future[int]]:
        if not self._prefix:
            await self._start()
        self._next += 1
        token = f"{self._next}.{secrets.token_hex(4)}"  # not guessable from the one before
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._waiting[token] = future
        if self._wave is None:  # the first publish of this turn: the wave's one timer
            self._wave = []
            loop.call_later(self._timeout, self._expire, self._wave)
            loop.call_soon(self._close_wave)
        self._wave.append(future)
        try:
            await self._nc.publish(subject, data, reply=self._prefix + token, headers=headers)
        except BaseException:
            self._waiting.pop(token, None)
            future.cancel()
            raise
        return token, future

    def _close_wave(self) -> None:
        self._wave = None

    @staticmethod
    def _expire(wave: list[asyncio.Future[int]]) -> None:
        for future in wave:
            if not future.done():
                future.set_exception(nats.errors.TimeoutError())

    async def _on_ack(self, msg: Msg) -> None:
        future = self._waiting.get(msg.subject[len(self._prefix) :])
        if future is None or future.done():
            return  # late (timed out), or not ours
        if msg.headers and msg.headers.get("Status") == "503":
            future.set_exception(nats.js.errors.NoStreamResponseError())
            return
        try:
            future.set_result(_acknowledged(msg.data))
        except nats.js.errors.APIError as exc:
            future.set_exception(exc)
        except Exception as exc:  # not an acknowledgement at all
            future.set_exception(nats.js.errors.APIError(description=type(exc).__name__))


def _acknowledged(data: bytes) -> int:
    """The stream sequence a JetStream acknowledgement gives.

    Raises:
        nats.js.errors.APIError: (its subclass for the code) JetStream refused the publish.
        ValueError: it is not a stream's acknowledgement (too large, not JSON, or no stream
            named: an answer from a subscriber on a subject no stream takes).
    """
    if len(data) > _MAX_ACK_BYTES:
        raise ValueError("too large")
    answer = json.loads(data)
    error = answer.get("error")
    if error is not None:
        nats.js.errors.APIError.from_error(error)  # raises the error's class
    seq = answer.get("seq")
    if not isinstance(answer.get("stream"), str) or type(seq) is not int:
        raise ValueError("not a stream's acknowledgement")
    return seq


class Kv:
    """A KV bucket with compare-and-set; a conflict is an answer (``None``), not an error."""

    def __init__(self, kv: KeyValue, pipeline: _Pipeline) -> None:
        self._kv = kv
        self._pipeline = pipeline
        self._prefix: str = kv._pre  # the bucket's subjects, as nats-py writes them

    async def get(self, key: str) -> KvEntry | None:
        """The live value of ``key``, or ``None``."""
        try:
            with mapped("kv get"):
                entry = await self._kv.get(key)
        except TransportError as exc:
            if isinstance(exc.__cause__, nats.js.errors.KeyNotFoundError):
                return None
            raise
        if not entry.value or entry.operation in ("DEL", "PURGE"):
            return None
        return KvEntry(entry.value, int(entry.revision or 0))

    async def create(self, key: str, value: bytes) -> int | None:
        """Write ``key`` if it has no live value: its revision, or ``None`` if it has one."""
        return await self._compare_and_set(key, value, None)

    async def update(self, key: str, value: bytes, last: int) -> int | None:
        """Write ``key`` if it is still at revision ``last``: the new revision, or ``None``."""
        return await self._compare_and_set(key, value, last)

    async def write_many(
        self, items: Sequence[tuple[str, bytes, int | None]]
    ) -> list[int | TransportError | None]:
        """Compare-and-set each ``(key, value, last)`` (``last`` ``None``: create), pipelined:
        per item the new revision, ``None`` on a conflict (for a create also when the key
        holds a delete marker: :meth:`create` writes over those), or the error."""
        if any(not _KV_KEY.fullmatch(key) for key, _, _ in items):
            raise TransportError("kv write: not a valid key")
        answers = await self._pipeline.publish_many(
            [
                (self._prefix + key, value, {_EXPECTED_LAST_SUBJECT_SEQ: str(last or 0)})
                for key, value, last in items
            ]
        )
        out: list[int | TransportError | None] = []
        for answer in answers:
            if isinstance(answer, int):
                out.append(answer)
            elif error_code(answer) in _WRONG_LAST_SEQUENCES:
                out.append(None)
            else:
                out.append(_as_transport_error("kv write", answer))
        return out

    async def _compare_and_set(self, key: str, value: bytes, last: int | None) -> int | None:
        if not _KV_KEY.fullmatch(key):
            raise TransportError("kv write: not a valid key")
        try:
            with mapped("kv write"):
                return await self._pipeline.publish(
                    self._prefix + key, value, {_EXPECTED_LAST_SUBJECT_SEQ: str(last or 0)}
                )
        except TransportError as exc:
            if error_code(exc) not in _WRONG_LAST_SEQUENCES:
                raise
        if last is not None:
            return None
        # The key has an entry: a live value, or a delete marker (an operator's repair), which
        # nats-py's create writes over. The rare path; the client's own.
        try:
            with mapped("kv write"):
                return int(await self._kv.create(key, value))
        except TransportError as exc:
            cause = exc.__cause__
            if isinstance(cause, nats.js.errors.KeyWrongLastSequenceError) or (
                error_code(exc) in _WRONG_LAST_SEQUENCES
            ):
                return None
            raise

    async def delete(self, key: str) -> None:
        """Remove ``key`` (an operator's repair; the hub itself never deletes)."""
        with mapped("kv delete"):
            await self._kv.delete(key)

    async def keys(self) -> list[str]:
        """Every live key (operators' and tests' use; not for the hot path)."""
        try:
            with mapped("kv keys"):
                return list(await self._kv.keys())
        except TransportError as exc:
            if isinstance(exc.__cause__, nats.js.errors.NoKeysError):
                return []
            raise


class _ErrorLog:
    """The connection's asynchronous errors, logged at most once per kind and interval with
    a count: a flood (e.g. of slow-consumer drops) must not turn into a flood of log lines."""

    def __init__(self, name: str, interval: float = 10.0) -> None:
        self._name = name
        self._interval = interval
        self._last: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    async def log(self, exc: Exception) -> None:
        """Count ``exc``; log its kind once per interval."""
        kind = type(exc).__name__
        self._counts[kind] = self._counts.get(kind, 0) + 1
        now = time.monotonic()
        if now - self._last.get(kind, -self._interval) >= self._interval:
            self._last[kind] = now
            _log.warning("nats_error", connection=self._name, error=kind,
                         count=self._counts.pop(kind))  # fmt: skip


async def _connect(url: str, name: str, credentials: Credentials | None) -> Client:
    creds = credentials or Credentials()
    options: dict[str, Any] = {}
    if creds.nkey_seed is not None:
        options["nkeys_seed"] = str(creds.nkey_seed)
    context = creds.tls_context()
    if context is not None:
        options["tls"] = context
    if creds.inbox_prefix is not None:
        options["inbox_prefix"] = creds.inbox_prefix.encode()
    return await nats.connect(
        url.split(","),  # several URLs: the servers of a cluster
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        drain_timeout=5,
        allow_reconnect=True,
        error_cb=_ErrorLog(name).log,
        **options,
    )


def redacted(url: str) -> str:
    """``url`` (a list, comma-separated) without user, password or token, for logs."""
    return ",".join(
        part.split("://", 1)[0] + "://" + part.rsplit("@", 1)[-1].split("://")[-1]
        if "@" in part
        else part
        for part in url.split(",")
    )


def _as_transport_error(what: str, exc: BaseException) -> TransportError:
    """``exc`` as :class:`~schakel.bus.errors.mapped` raises it."""
    try:
        with mapped(what):
            raise exc
    except TransportError as mapped_exc:
        return mapped_exc


def _stored(stream: str, msg: RawStreamMsg) -> Stored:
    return Stored(stream, int(msg.seq or 0), msg.subject or "", msg.data or b"",
                  dict(msg.headers or {}))  # fmt: skip


class Bus:
    """One connection to NATS; an async context manager that drains it on exit.

    ``url`` may list a cluster's servers, comma-separated; after the first connection the
    client reconnects for ever, to whichever server is up.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str,
        credentials: Credentials | None = None,
        connect_timeout: float = FIRST_CONNECT_TIMEOUT,
        publish_timeout: float = PUBLISH_TIMEOUT,
    ) -> None:
        self.url = url
        self.name = name
        self._credentials = credentials
        self._connect_timeout = connect_timeout
        self._publish_timeout = publish_timeout
        self._nc: Client | None = None
        self._pipeline: _Pipeline | None = None

    @property
    def client(self) -> Client:
        """The NATS client (for the modules of ``bus`` only)."""
        if self._nc is None:
            raise TransportError("the connection is not open")
        return self._nc

    @property
    def connected(self) -> bool:
        """Whether the connection is up now (not closed, not reconnecting)."""
        return self._nc is not None and self._nc.is_connected

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context (for the modules of ``bus`` only)."""
        return self.client.jetstream()

    async def __aenter__(self) -> Self:
        try:
            # each listed server may take a connect attempt (5 s) before a good one is tried
            budget = max(self._connect_timeout, 6.0 * len(self.url.split(",")))
            self._nc = await asyncio.wait_for(
                _connect(self.url, self.name, self._credentials), budget
            )
        except TimeoutError as exc:
            raise TransportError(
                f"cannot connect to {redacted(self.url)} within {budget:g} s "
                "(is the server up, the URL right, TLS and credentials as configured?)"
            ) from exc
        except Exception as exc:
            raise TransportError(
                f"cannot connect to {redacted(self.url)}: {type(exc).__name__}"
            ) from exc
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Drain the connection (what it holds is sent, subscriptions end), then close it."""
        nc, self._nc, self._pipeline = self._nc, None, None
        if nc is not None and not nc.is_closed:
            try:
                await nc.drain()
            except Exception:
                await nc.close()

    async def flush(self, timeout: int = 5) -> None:
        """Wait until the server has everything sent so far."""
        with mapped("flush"):
            await self.client.flush(timeout=timeout)

    # -- core NATS ---------------------------------------------------------------------

    async def send(self, subject: str, data: bytes, *, reply: str = "") -> None:
        """Publish ``data`` on ``subject`` (not stored)."""
        with mapped("send"):
            await self.client.publish(subject, data, reply=reply)

    async def request(self, subject: str, data: bytes, *, timeout: float) -> bytes:
        """Ask on ``subject`` and return the answer's data."""
        with mapped("request"):
            answer = await self.client.request(subject, data, timeout=timeout)
        return answer.data

    async def subscribe(
        self,
        subject: str,
        handler: Callable[[Message], Awaitable[None]],
        *,
        queue: str = "",
        pending: int = DEFAULT_SUB_PENDING_MSGS_LIMIT,
        pending_bytes: int = DEFAULT_SUB_PENDING_BYTES_LIMIT,
    ) -> Subscription:
        """Call ``handler`` for each message on ``subject``; at most ``pending`` messages (and
        ``pending_bytes``) wait unread, more are dropped by the client."""

        async def on_message(msg: Msg) -> None:
            await handler(Message(msg.subject, msg.data, msg.reply or "", msg.headers or {}))

        with mapped("subscribe"):
            subscription = await self.client.subscribe(
                subject,
                queue=queue,
                cb=on_message,
                pending_msgs_limit=pending,
                pending_bytes_limit=pending_bytes,
            )
        return Subscription(subscription)

    # -- JetStream ------------------------------------------------------------------------

    async def publish(
        self, subject: str, data: bytes, headers: Mapping[str, str] | None = None
    ) -> int:
        """Store ``data`` in the stream that takes ``subject``; its sequence there.

        Raises:
            StreamFull: the stream is at its limits.
            TransportError: anything else NATS refused or could not do.
        """
        with mapped("publish"):
            return await self._publisher().publish(subject, data, dict(headers or {}))

    async def publish_many(
        self, items: Sequence[tuple[str, bytes, Mapping[str, str]]]
    ) -> list[int | TransportError]:
        """Store each ``(subject, data, headers)``, pipelined (all written, then the
        acknowledgements awaited together): per item its sequence or the error, as
        :meth:`publish` would raise it."""
        with mapped("publish"):
            answers = await self._publisher().publish_many(
                [(subject, data, dict(headers)) for subject, data, headers in items]
            )
        return [a if isinstance(a, int) else _as_transport_error("publish", a) for a in answers]

    def _publisher(self) -> _Pipeline:
        if self._pipeline is None:
            self._pipeline = _Pipeline(self.client, self._publish_timeout)
        return self._pipeline

    async def append(
        self, subject: str, data: bytes, *, after: int, headers: Mapping[str, str] | None = None
    ) -> int | None:
        """Store ``data`` on ``subject`` only if the subject's last message is at sequence
        ``after`` (0: none yet): its sequence, or ``None`` when someone appended meanwhile."""
        try:
            return await self.publish(
                subject, data, {**(headers or {}), _EXPECTED_LAST_SUBJECT_SEQ: str(after)}
            )
        except TransportError as exc:
            if error_code(exc) in _WRONG_LAST_SEQUENCES:
                return None
            raise

    async def read_direct(
        self,
        stream: str,
        from_seq: int,
        *,
        limit: int = 100_000,
        max_bytes: int = 4 * 1024 * 1024,
        timeout: float = 5.0,
    ) -> list[Stored]:
        """Messages of ``stream`` from sequence ``from_seq`` on, at most ``limit`` of them, in
        order, read with one batched direct get.

        One request on the exact subject ``$JS.API.DIRECT.GET.<stream>`` (the stream must
        allow direct gets): no consumer is created, and the stream itself answers, so a user
        of another account that imports that one subject can read it (JetStream's API proper
        answers only in the account the stream lives in).
        """
        nc = self.client
        inbox = nc.new_inbox()
        with mapped("direct read"):
            sub = await nc.subscribe(inbox)
        try:
            # A page is bounded in count and bytes (the server stops at either); the caller
            # reads on from the last sequence.
            request = json.dumps(
                {"seq": max(from_seq, 1), "batch": limit, "max_bytes": max_bytes}
            ).encode()
            with mapped("direct read"):
                await nc.publish(f"$JS.API.DIRECT.GET.{stream}", request, reply=inbox)
            entries: list[Stored] = []
            while True:
                try:
                    with mapped("direct read"):
                        msg = await sub.next_msg(timeout=timeout)
                except TransportError as exc:
                    if not isinstance(exc.__cause__, nats.errors.TimeoutError):
                        raise
                    raise TransportError(
                        f"no answer reading {stream} (does this NATS user have the right to "
                        "read it? the operator's reads the audit trail and dead letters, the "
                        "security officer's the key log and the registry)"
                    ) from None
                headers = dict(msg.headers or {})
                status = headers.get("Status")
                if status in ("204", "404", "408"):  # end of batch / none
                    return entries
                if status == "503":  # no responders: the stream is not there (yet)
                    raise TransportError(f"no stream {stream} (is a hub running?)")
                seq = headers.get("Nats-Sequence", "")
                if seq.isdigit():
                    subject = headers.get("Nats-Subject", "")
                    entries.append(Stored(stream, int(seq), subject, msg.data, headers))
                if len(entries) >= limit:
                    return entries
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def scan_direct(
        self, stream: str, *, start: int = 1, page: int = 1_000
    ) -> AsyncIterator[Stored]:
        """Every message of ``stream`` from sequence ``start`` on, in order, read a page of
        batched direct gets at a time (see :meth:`read_direct`)."""
        seq = start
        while True:
            # A page may end early (the server bounds a batch's bytes): read until one is empty.
            batch = await self.read_direct(stream, seq, limit=page)
            if not batch:
                return
            for message in batch:
                yield message
            seq = batch[-1].seq + 1

    async def get(self, stream: str, seq: int) -> Stored | None:
        """The message at ``seq``, or ``None`` if there is none (deleted, or never).

        Raises:
            TransportError: anything else, e.g. there is no such stream.
        """
        return await self._get(stream, seq)

    async def first_from(self, stream: str, seq: int, subject: str) -> Stored | None:
        """The first message at or after ``seq`` on ``subject`` (a filter), or ``None``."""
        return await self._get(stream, seq, subject=subject, after=True)

    async def last(self, stream: str, subject: str) -> Stored | None:
        """The last message on ``subject``, or ``None``."""
        try:
            with mapped("get last"):
                msg = await self.js.get_last_msg(stream, subject)
        except TransportError as exc:
            if error_code(exc) == _NO_MESSAGE:
                return None
            raise
        return _stored(stream, msg)

    async def _get(
        self, stream: str, seq: int, *, subject: str | None = None, after: bool = False
    ) -> Stored | None:
        try:
            with mapped("get"):
                msg = await self.js.get_msg(stream, seq, subject=subject, next=after)
        except TransportError as exc:
            if error_code(exc) == _NO_MESSAGE:
                return None
            raise
        return _stored(stream, msg)

    async def scan(
        self, stream: str, *, subject: str | None = None, start: int = 0
    ) -> AsyncIterator[Stored]:
        """Every message of ``stream`` (on ``subject``, a filter that may hold wildcards)
        from sequence ``start`` to the last one stored when the scan began, in order; gaps
        (deleted messages) are jumped over with one request."""
        first, last, _ = await self.state(stream)
        seq = max(first, start, 1)
        while seq <= last:
            message = await self.first_from(stream, seq, subject or ">")
            if message is None or message.seq > last:
                return
            yield message
            seq = message.seq + 1

    async def delete(self, stream: str, seq: int) -> bool:
        """Remove the message at ``seq``; ``False`` if it was not there."""
        try:
            with mapped("delete"):
                return bool(await self.js.delete_msg(stream, seq))
        except TransportError as exc:
            if error_code(exc) in (_NO_MESSAGE, _NO_MESSAGE_TO_DELETE):
                return False
            raise

    async def state(self, stream: str) -> tuple[int, int, int]:
        """First and last sequence of ``stream`` and how many messages it holds.

        Raises:
            TransportError: there is no such stream (or NATS failed).
        """
        with mapped("stream info"):
            info = await self.js.stream_info(stream)
        state = info.state
        return int(state.first_seq or 0), int(state.last_seq or 0), int(state.messages or 0)

    async def exists(self, stream: str) -> bool:
        """Whether ``stream`` exists."""
        try:
            await self.state(stream)
        except TransportError as exc:
            if isinstance(exc.__cause__, nats.js.errors.NotFoundError):
                return False
            raise
        return True

    async def counts(self, stream: str, subjects: str) -> dict[str, int]:
        """Messages stored per subject of ``stream`` matching the filter ``subjects``."""
        with mapped("stream info"):
            info = await self.js.stream_info(stream, subjects_filter=subjects)
        return dict(info.state.subjects or {})

    async def purge(self, stream: str, subject: str) -> None:
        """Remove every message of ``stream`` on ``subject``."""
        with mapped("purge"):
            await self.js.purge_stream(stream, subject=subject)

    async def kv(self, bucket: str) -> Kv:
        """A handle on an existing KV bucket."""
        with mapped("kv bucket"):
            return Kv(await self.js.key_value(bucket), self._publisher())

    async def pull(self, stream: str, durable: str) -> Puller:
        """Bind to the durable consumer ``durable`` of ``stream``. The server is not asked
        (a partner may not look at consumers): a consumer that does not exist shows as a
        failing :meth:`Puller.fetch`."""
        with mapped("bind"):
            subscription = await self.js.pull_subscribe_bind(durable, stream=stream)
        return Puller(subscription)
