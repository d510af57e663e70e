"""The adapter's HTTP API: a back office that speaks only HTTP sends and receives through it.

One process per partner, beside its back office, built on the SDK (:class:`PartnerClient`):
the adapter validates, seals, publishes, opens and receipts; the back office sees plain JSON.
Versioned under ``/v1``; every error is an RFC 9457 problem document
(``application/problem+json``) that names the field and the rule, never the value sent.

- ``POST /v1/messages``: a message (type, recipients, header fields, body as JSON); ``202``
  with its id. With ``Idempotency-Key`` a retried POST (also across an adapter crash) sends
  once and returns the first answer.
- ``GET /v1/messages/{id}``: what became of one of our messages (the hub's answer, and a
  refusal the adapter received).
- ``GET /v1/inbox?wait=S``: the deliveries and refusal notices not yet acknowledged by the
  back office (a long poll); ``POST /v1/inbox/{id}/ack``: the back office has it; only then
  is NATS acknowledged and the receipt sent. ``POST /v1/inbox/{id}/retry``: not now.
- ``GET /healthz``, ``GET /readyz``.

Who may call it: a loopback listener (or a unix socket) by default; any other address only
with a bearer token from the settings (compared in constant time).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import ipaddress
import json
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from pydantic import ValidationError

from schakel.adapters.client import Delivery, DirectoryStale, InboundFull, PartnerClient, Refusal
from schakel.bus import TransportError, stop
from schakel.contracts import boundedjson
from schakel.contracts.bodies import Body, body_contract
from schakel.contracts.clock import system_clock
from schakel.contracts.enums import CaseState, MessageType
from schakel.contracts.errors import ContractError
from schakel.contracts.header import MessageDraft
from schakel.contracts.ids import MESSAGE_ID_PATTERN, MessageId, OrgId, case_id_for, new_message_id
from schakel.contracts.policy import default_policy
from schakel.keys.errors import KeyDirectoryError

if TYPE_CHECKING:
    from schakel.adapters.webhook import Webhook

__all__ = [
    "MAX_REQUEST_BYTES",
    "AdapterApi",
    "QuietRunner",
    "describe",
    "is_loopback",
    "notice_id",
]

MAX_REQUEST_BYTES: Final = 2 * 1024 * 1024
MAX_WAIT: Final = 30.0  # seconds a long poll may wait
MAX_ITEMS: Final = 100  # items one poll returns
_KEY: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_MESSAGE_ID: Final = re.compile(MESSAGE_ID_PATTERN)
_PROBLEM: Final = "application/problem+json"
_TYPES: Final = "https://schakel.example/problems/"
_HEARTBEAT: Final = 10.0  # seconds between "still working on it" for items held
_KEY_KEPT: Final = 7 * 86400.0  # seconds an Idempotency-Key is remembered
_REFUSALS_KEPT: Final = 10_000  # refusals of our messages remembered for GET /v1/messages
_LOOPBACK_NAMES: Final = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
_POLLS: Final = 8  # long polls at once; more are told to come back (429)
_CONTRACT_POLICY: Final = default_policy()  # which message types open a case (contract)
_log = structlog.get_logger("schakel.adapter")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address literal, or ``localhost`` (the only listeners
    open without a token or a client certificate; any other name is not trusted to resolve
    to loopback)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _problem_doc(
    status: int, kind: str, title: str, errors: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    """An RFC 9457 problem document (the adapter's own words only)."""
    doc: dict[str, Any] = {"type": _TYPES + kind, "title": title, "status": status}
    if errors is not None:
        doc["errors"] = errors
    return doc


def _problem(
    status: int,
    kind: str,
    title: str,
    *,
    errors: list[dict[str, str]] | None = None,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An RFC 9457 problem document (the adapter's own words only)."""
    doc: dict[str, Any] = {"type": _TYPES + kind, "title": title, "status": status}
    if detail is not None:
        doc["detail"] = detail
    if errors is not None:
        doc["errors"] = errors
    return web.json_response(doc, status=status, content_type=_PROBLEM, headers=headers)


class _QuietHandler(RequestHandler):
    """aiohttp's connection handler, but its answer to what it cannot parse (a bad request
    line, header, chunk; too long a header) or to a handler's crash is a problem document in
    the adapter's own words. aiohttp's own answer quotes the parser's message, which quotes
    the request, and logs it with its traceback: input echoed into answer and log."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        _log.warning("http_request_unreadable", status=status,
                     error=type(exc).__name__ if exc is not None else None)  # fmt: skip
        if request.writer.output_size > 0:  # (as aiohttp does) an answer is under way
            raise ConnectionError("an answer was sent already")
        if status >= 500:
            response = _problem(status, "internal", "the adapter failed on this request")
        else:
            response = _problem(status, "malformed", "not a request the adapter can read")
        response.force_close()
        return response


class _QuietServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _QuietHandler(self, loop=self._loop, **self._kwargs)


class QuietRunner(web.AppRunner):
    """An :class:`~aiohttp.web.AppRunner` whose connections answer unreadable requests with
    the adapter's problem documents, quoting nothing (see ``_QuietHandler``); no access log.
    Every HTTP listener of the adapter runs in one."""

    def __init__(self, app: web.Application) -> None:
        super().__init__(app, access_log=None)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _QuietServer  # the same server, handing out quiet handlers
        return server


def _field_errors(
    exc: ValidationError, prefix: str, known: Callable[[str], bool]
) -> list[dict[str, str]]:
    """Every error of ``exc`` as ``{"field", "rule"}``: a key the contract does not know is
    ``?`` (it is the caller's text), the rule pydantic's error type."""
    out = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        parts = [prefix] if prefix else []
        for part in error["loc"]:
            parts.append(str(part) if isinstance(part, int) or known(str(part)) else "?")
        out.append({"field": ".".join(parts) or "request", "rule": error["type"]})
    return out


_DRAFT_FIELDS: Final = frozenset(MessageDraft.model_fields)
_REQUEST_FIELDS: Final = _DRAFT_FIELDS | {"message_type", "contract_version", "recipients", "body"}


def _known_body_names(model: type[Body]) -> frozenset[str]:
    """Every field name of a body contract and the models it nests (for error paths)."""
    names: set[str] = set()
    schema = model.model_json_schema()
    for definition in [schema, *schema.get("$defs", {}).values()]:
        names |= set(definition.get("properties", {}))
    return frozenset(names)


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """A request to send, validated."""

    body: Body
    draft: MessageDraft
    recipients: tuple[OrgId, ...]


def _parse_send(raw: bytes) -> _Outgoing | list[dict[str, str]]:
    """The request, or every field error in it."""
    try:
        doc = boundedjson.loads(raw, max_bytes=MAX_REQUEST_BYTES)
    except ContractError:
        return [{"field": "request", "rule": "json_invalid"}]
    if not isinstance(doc, dict):
        return [{"field": "request", "rule": "dict_type"}]
    errors: list[dict[str, str]] = [
        {"field": "?", "rule": "extra_forbidden"} for key in doc if key not in _REQUEST_FIELDS
    ]
    model = _contract(doc.get("message_type"), doc.get("contract_version", 1))
    if model is None:
        errors.append({"field": "message_type", "rule": "no_such_contract"})
    recipients = doc.get("recipients")
    if (
        not isinstance(recipients, list)
        or not 1 <= len(recipients) <= 64
        or not all(isinstance(r, str) for r in recipients)
    ):
        errors.append({"field": "recipients", "rule": "list_of_1_to_64_organisations"})
        recipients = []
    draft: MessageDraft | None = None
    try:
        draft = MessageDraft.model_validate({k: v for k, v in doc.items() if k in _DRAFT_FIELDS})
    except ValidationError as exc:
        errors += _field_errors(exc, "", lambda name: name in _DRAFT_FIELDS)
    body: Body | None = None
    if model is not None:
        try:
            body = model.model_validate(doc.get("body"), strict=False)
        except ValidationError as exc:
            names = _known_body_names(model)
            errors += _field_errors(exc, "body", lambda name: name in names)
    if errors or body is None or draft is None:
        return errors or [{"field": "request", "rule": "invalid"}]
    return _Outgoing(body, draft, tuple(OrgId(r) for r in recipients))


def _contract(message_type: object, version: object) -> type[Body] | None:
    """The body contract a request names, or ``None``."""
    if not isinstance(message_type, str) or type(version) is not int:
        return None
    try:
        return body_contract(MessageType(message_type), version)
    except (ValueError, ContractError):
        return None


class _Idempotency:
    """Idempotency keys and the answers given to them, in SQLite in the state directory
    (committed before the message is published, so a retry after a crash sends it again
    under the same message id: stored once)."""

    def __init__(self, path: Path | None) -> None:
        if path is not None:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path) if path else ":memory:", isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS sends (key TEXT PRIMARY KEY, request TEXT NOT NULL,"
            " message_id TEXT NOT NULL, answer TEXT, at REAL NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS sends_at ON sends (at)")

    def take(self, key: str, request: str) -> tuple[str, dict[str, Any] | None, bool] | None:
        """The message id for ``key``, the answer given when it was sent (``None``: not sent
        yet) and whether the key is new (then a new id); ``None`` if the key was used for
        another request."""
        row = self._db.execute(
            "SELECT request, message_id, answer FROM sends WHERE key = ?", (key,)
        ).fetchone()
        if row is not None:
            if row[0] != request:
                return None
            return str(row[1]), (json.loads(row[2]) if row[2] else None), False
        message_id = new_message_id()
        now = system_clock().timestamp()
        # A key is kept as long as a message lives (7 days): a retry after that is new.
        self._db.execute("DELETE FROM sends WHERE at < ?", (now - _KEY_KEPT,))
        self._db.execute(
            "INSERT INTO sends (key, request, message_id, at) VALUES (?, ?, ?, ?)",
            (key, request, message_id, now),
        )
        return message_id, None, True

    def sent(self, key: str, answer: dict[str, Any]) -> None:
        """The message for ``key`` is stored by JetStream; ``answer`` was given."""
        self._db.execute("UPDATE sends SET answer = ? WHERE key = ?", (json.dumps(answer), key))

    def close(self) -> None:
        self._db.close()


class _Metrics:
    """The adapter's Prometheus metrics, in a registry of its own. Labels are closed sets
    (message types, item kinds, outcomes): never a case id, a message id or content."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sent = Counter("schakel_adapter_sent", "messages sent", ["message_type"],
                            registry=r)  # fmt: skip
        self.invalid = Counter("schakel_adapter_invalid", "POSTs refused by the contract",
                               registry=r)  # fmt: skip
        self.received = Counter("schakel_adapter_received", "items received", ["kind"],
                                registry=r)  # fmt: skip
        self.acknowledged = Counter("schakel_adapter_acknowledged",
                                    "items the back office has", ["kind"], registry=r)  # fmt: skip
        self.pushes = Counter("schakel_adapter_webhook_pushes", "webhook POSTs", ["outcome"],
                              registry=r)  # fmt: skip
        self.held = Gauge("schakel_adapter_held", "items waiting for the back office",
                          registry=r)  # fmt: skip
        self.ready = Gauge("schakel_adapter_ready", "1 when NATS, directory and keys are fine",
                           registry=r)  # fmt: skip


def _kind(item: object) -> str:
    return "delivery" if isinstance(item, Delivery) else "refusal"


class AdapterApi:
    """The HTTP API over one partner's SDK client (open while the app runs)."""

    def __init__(
        self,
        client: PartnerClient,
        *,
        state_dir: Path | None = None,
        token: str | None = None,
        webhook: Webhook | None = None,
        folder: Path | None = None,
    ) -> None:
        self._client = client
        self._token = token
        self._webhook = webhook
        self._folder = folder
        self._idempotency = _Idempotency(state_dir / "idempotency.sqlite" if state_dir else None)
        self._held: dict[str, Delivery | Refusal] = {}  # inbox id -> item, until acknowledged
        # our message id -> the hub's reason, the latest _REFUSALS_KEPT
        self._refused: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._receiving = asyncio.Lock()
        self._polls = 0
        self.metrics = _Metrics()

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=[self._guard])
        app.router.add_post("/v1/messages", self._send)
        app.router.add_get("/v1/messages/{message_id}", self._state)
        app.router.add_get("/v1/inbox", self._inbox)
        app.router.add_post("/v1/inbox/{item_id}/ack", self._ack)
        app.router.add_post("/v1/inbox/{item_id}/retry", self._retry)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/openapi.json", self._openapi)
        app.cleanup_ctx.append(self._heartbeats)
        return app

    # -- the guard ---------------------------------------------------------------------

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            refused = self._refused_caller(request)
            if refused is not None:
                return refused
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status == 413:
                return _problem(413, "too-large", "the request is larger than the adapter takes")
            return _problem(exc.status, "http", exc.reason)
        except (TransportError, DirectoryStale) as exc:
            _log.warning("adapter_unavailable", error=type(exc).__name__)
            return _problem(503, "unavailable", "the hub cannot be reached now; try again",
                            headers={"Retry-After": "5"})  # fmt: skip
        except Exception as exc:
            _log.error("adapter_failed", error=type(exc).__name__)
            return _problem(500, "internal", "the adapter failed; nothing was sent")

    def _refused_caller(self, request: web.Request) -> web.Response | None:
        """A problem for a caller that may not call, else ``None``.

        A back office is a program, not a browser: a request a browser made for a web page
        (it carries ``Origin``, or ``Sec-Fetch-Site`` other than ``none``) is refused, and a
        body that is not ``application/json`` is refused, so no page the operator visits can
        send or read through a listener on loopback. Without a token, the ``Host`` must name
        loopback (against DNS rebinding). With a token, the token decides (constant time).
        """
        if "Origin" in request.headers or request.headers.get("Sec-Fetch-Site", "none") not in (
            "none",
        ):
            return _problem(403, "browser", "requests from web pages are not served")
        if (
            request.method == "POST"
            and request.can_read_body
            and request.content_type != "application/json"
        ):
            return _problem(415, "content-type", "the body must be application/json")
        if self._token is None:
            host = request.host.rsplit(":", 1)[0] if not request.host.startswith("[") else (
                request.host.split("]", 1)[0] + "]"
            )  # fmt: skip
            on_unix = request.transport is not None and isinstance(
                request.transport.get_extra_info("sockname"), str
            )  # fmt: skip
            if not on_unix and host not in _LOOPBACK_NAMES:
                return _problem(421, "host", "this adapter answers for loopback only")
            return None
        if request.path == "/healthz":
            return None
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, f"Bearer {self._token}".encode()):
            return _problem(401, "unauthenticated", "a bearer token is required",
                            headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        return None

    # -- sending ---------------------------------------------------------------------------

    async def _send(self, request: web.Request) -> web.StreamResponse:
        key = request.headers.get("Idempotency-Key")
        if key is not None and not _KEY.fullmatch(key):
            return _problem(
                400, "idempotency-key", "Idempotency-Key: 1 to 128 of A-Z a-z 0-9 . _ : -"
            )
        status, doc = await self.submit(await request.read(), key)
        if status == 202:
            return web.json_response(doc, status=202)
        headers = {"Retry-After": "5"} if status == 503 else None
        return web.json_response(doc, status=status, content_type=_PROBLEM, headers=headers)

    async def submit(self, raw: bytes, key: str | None) -> tuple[int, dict[str, Any]]:
        """Validate, seal and publish one request (JSON as ``POST /v1/messages`` takes it):
        ``202`` and the message and case id, or the status and its problem document. With a
        ``key``, the same request again (also after a crash) gets the same message id."""
        parsed = _parse_send(raw)
        if isinstance(parsed, list):
            self.metrics.invalid.inc()
            return 422, _problem_doc(422, "invalid", "the message breaks its contract", parsed)
        message_id = new_message_id()
        if key is not None:
            digest = hashlib.sha256(raw).hexdigest()
            taken = self._idempotency.take(key, digest)
            if taken is None:
                title = "this Idempotency-Key was used for another request"
                return 409, _problem_doc(409, "idempotency-conflict", title)
            message_id = MessageId(taken[0])
            if taken[1] is not None:  # sent already: the first answer, nothing sent again
                return 202, taken[1]
            if not taken[2] and await self._hub_knows(message_id):
                # Stored before a crash (or a lost answer) kept us from recording it: a second
                # copy would be sealed anew and refused as a replay once JetStream forgot it.
                answer = {"message_id": message_id,
                          "case_id": self._case_of(parsed, message_id)}  # fmt: skip
                self._idempotency.sent(key, answer)
                return 202, answer
        draft = parsed.draft
        case_id = self._case_of(parsed, message_id)
        if case_id != draft.case_id:
            # A new case: its id follows from the message id (the back office learns it here).
            draft = draft.model_copy(update={
                "case_id": case_id, "step": draft.step or CaseState.SIGNAAL_ONTVANGEN,
            })  # fmt: skip
        try:
            sent = await self._client.send(
                parsed.body, draft, parsed.recipients, message_id=message_id
            )
        except ContractError as exc:
            field = str(exc).split(":", 1)[0] if ":" in str(exc) else "request"
            errors = [{"field": _safe_field(field), "rule": "contract"}]
            return 422, _problem_doc(422, "invalid", "the message breaks its contract", errors)
        except KeyDirectoryError as exc:
            return 422, _problem_doc(422, "invalid", "a recipient cannot receive",
                                     [{"field": "recipients", "rule": exc.code.value}])  # fmt: skip
        except (OverflowError, ValueError):  # a value the contract allows, the clock not
            return 422, _problem_doc(422, "invalid", "a value is out of range",
                                     [{"field": "request", "rule": "out_of_range"}])  # fmt: skip
        except InboundFull:
            return 503, _problem_doc(503, "inbound-full", "the hub has not caught up; send later")
        answer = {"message_id": sent, "case_id": draft.case_id}
        if key is not None:
            self._idempotency.sent(key, answer)
        self.metrics.sent.labels(message_type=parsed.body.MESSAGE_TYPE.value).inc()
        return 202, answer

    @staticmethod
    def _case_of(parsed: _Outgoing, message_id: MessageId) -> str | None:
        """The case a request is about: its own, or for a new signal the one it opens."""
        rule = _CONTRACT_POLICY.rule(parsed.body.MESSAGE_TYPE)
        if rule.creates_case and parsed.draft.case_id is None:
            return case_id_for(message_id)
        return parsed.draft.case_id

    async def _hub_knows(self, message_id: MessageId) -> bool:
        """Whether the hub has one of our messages under this id (accepted)."""
        try:
            return (await self._client.status(message_id)).known
        except (TransportError, ValidationError):
            return False

    def _refusal(self, message_id: str, reason: str) -> None:
        self._refused[message_id] = reason
        while len(self._refused) > _REFUSALS_KEPT:
            self._refused.popitem(last=False)

    async def _state(self, request: web.Request) -> web.StreamResponse:
        message_id = request.match_info["message_id"]
        if not _MESSAGE_ID.fullmatch(message_id):
            return _problem(404, "not-found", "no such message")
        state = await self._client.status(MessageId(message_id))
        if state.known:  # the hub's record first: a refused second copy changes nothing
            return web.json_response(json.loads(state.model_dump_json()))
        reason = self._refused.get(message_id)
        if reason is not None:
            return web.json_response({"message_id": message_id, "state": "refused",
                                      "reason": reason})  # fmt: skip
        return _problem(404, "not-found", "the hub knows no such message of ours")

    # -- receiving -------------------------------------------------------------------------

    async def _inbox(self, request: web.Request) -> web.StreamResponse:
        if self._webhook is not None or self._folder is not None:
            return _problem(409, "other-mode", "items go to the webhook or the folder instead")
        try:
            wait = float(request.query.get("wait", "0"))
        except ValueError:
            wait = -1.0
        if not 0.0 <= wait <= MAX_WAIT:  # (also not a number, infinite)
            return _problem(400, "invalid", "wait: seconds, 0 to 30",
                            errors=[{"field": "wait", "rule": "range"}])  # fmt: skip
        if self._polls >= _POLLS:
            return _problem(429, "too-many-polls", "too many long polls at once; poll again",
                            headers={"Retry-After": "1"})  # fmt: skip
        self._polls += 1
        try:
            await self._take(wait if not self._held else 0.0)
        finally:
            self._polls -= 1
        items = [describe(item_id, item) for item_id, item in list(self._held.items())]
        return web.json_response({"items": items[:MAX_ITEMS]})

    async def _take(self, wait: float) -> None:
        """Receive what is waiting (waiting up to ``wait`` s for the first if nothing is)
        into the held items. One poll receives at a time; another waits for it at most its
        own ``wait`` and then answers with what is held."""
        deadline = asyncio.get_running_loop().time() + wait
        try:
            await asyncio.wait_for(self._receiving.acquire(), timeout=max(wait, 0.01))
        except TimeoutError:
            return
        try:
            timeout = max(deadline - asyncio.get_running_loop().time(), 0.05)
            while len(self._held) < MAX_ITEMS:
                item = await self._client.receive(timeout=timeout)
                if item is None:
                    return
                timeout = 0.05  # after the first: only what is waiting already
                self.metrics.received.labels(kind=_kind(item)).inc()
                if isinstance(item, Delivery):
                    self._held[item.message_id] = item
                elif isinstance(item, Refusal):
                    notice = item.notice
                    if notice.message_id is not None:
                        self._refusal(str(notice.message_id), notice.reason.value)
                    self._held[f"refusal-{notice_id(notice.model_dump_json())}"] = item
        finally:
            self._receiving.release()

    async def _ack(self, request: web.Request) -> web.StreamResponse:
        item = self._held.get(request.match_info["item_id"])
        if item is None:
            return _problem(404, "not-found", "no such item waiting (acknowledged already?)")
        await item.ack()  # a delivery: remembered, acknowledged, then its receipt sent
        self._held.pop(request.match_info["item_id"], None)
        self.metrics.acknowledged.labels(kind=_kind(item)).inc()
        return web.Response(status=204)

    async def _retry(self, request: web.Request) -> web.StreamResponse:
        item = self._held.get(request.match_info["item_id"])
        if not isinstance(item, Delivery):
            return _problem(404, "not-found", "no such delivery waiting")
        await item.retry_later()
        self._held.pop(request.match_info["item_id"], None)
        return web.Response(status=204)

    async def _heartbeats(self, _: web.Application) -> AsyncIterator[None]:
        """While the back office holds items, tell JetStream they are being worked on (so
        they are not handed out again, nor dead-lettered, while the back office takes its
        time); on stop, leave them unacknowledged (they come back to the next adapter)."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(_HEARTBEAT)
                for item in list(self._held.values()):
                    with contextlib.suppress(Exception):
                        await item.in_progress()

        tasks = [asyncio.create_task(beat(), name="adapter-heartbeats")]

        def refused(item: Refusal) -> None:
            if item.notice.message_id is not None:
                self._refusal(str(item.notice.message_id), item.notice.reason.value)

        if self._folder is not None:
            from schakel.adapters.folder import Folder, run_folder

            tasks.append(asyncio.create_task(
                run_folder(self, self._client, Folder(self._folder), on_refusal=refused),
                name="adapter-folder",
            ))  # fmt: skip
        elif self._webhook is not None:
            from schakel.adapters.webhook import push

            def pushed(item: Delivery | Refusal, status: int | None) -> None:
                ok = status is not None and 200 <= status < 300
                self.metrics.pushes.labels(outcome="2xx" if ok else "not-taken").inc()
                if ok:
                    self.metrics.acknowledged.labels(kind=_kind(item)).inc()

            tasks.append(asyncio.create_task(
                push(self._client, self._webhook, on_refusal=refused, on_push=pushed),
                name="adapter-webhook",
            ))  # fmt: skip
        yield
        await stop(*tasks)
        self._idempotency.close()

    # -- health ----------------------------------------------------------------------------

    @staticmethod
    async def _healthz(_: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok"})

    @staticmethod
    async def _openapi(_: web.Request) -> web.StreamResponse:
        from schakel.adapters.openapi import COMMITTED

        return web.Response(body=COMMITTED.read_bytes(), content_type="application/json")

    async def _metrics(self, _: web.Request) -> web.StreamResponse:
        self.metrics.held.set(len(self._held))
        self.metrics.ready.set(0 if self._client.readiness() else 1)
        return web.Response(body=generate_latest(self.metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})  # fmt: skip

    async def _readyz(self, _: web.Request) -> web.StreamResponse:
        problems = self._client.readiness()
        if problems:
            errors = [{"field": p, "rule": "not_ready"} for p in problems]
            return _problem(503, "not-ready", "the adapter cannot send now", errors=errors)
        return web.json_response({"status": "ready"})


def describe(item_id: str, item: Delivery | Refusal) -> dict[str, Any]:
    """An item for the back office as JSON: a delivery's header metadata and opened body,
    or a refusal notice (for the inbox and the webhook alike)."""
    if isinstance(item, Refusal):
        notice = item.notice
        return {"id": item_id, "kind": "refusal", "message_id": notice.message_id,
                "reason": notice.reason.value, "text": notice.text,
                "at": notice.at.isoformat()}  # fmt: skip
    header = item.header
    return {
        "id": item_id,
        "kind": "delivery",
        "message_id": header.message_id,
        "message_type": header.message_type.value,
        "contract_version": header.contract_version,
        "sender": header.sender.org,
        "case_id": header.case_id,
        "step": header.step.value if header.step else None,
        "created_at": header.created_at.isoformat(),
        "expires_at": header.expires_at.isoformat(),
        "header": json.loads(header.model_dump_json(exclude={"recipients", "key_commitment"})),
        "body": json.loads(item.body.model_dump_json()),
    }


def _safe_field(text: str) -> str:
    """A field path from an error of ours, cut to the characters a path has."""
    return re.sub(r"[^A-Za-z0-9_.]", "?", text)[:100] or "request"


def notice_id(text: str) -> str:
    """A short id for a refusal notice (its text is the hub's signed statement)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]
