"""Webhook mode: the adapter pushes each delivery and refusal notice to the back office.

Each item is POSTed (JSON, as ``GET /v1/inbox`` shows it) to the one URL the settings name,
signed so that the back office can tell it came from its adapter::

    Schakel-Timestamp: <unix seconds>
    Schakel-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>
    Schakel-Delivery: <item id>   (a delivery's message id: the back office's dedupe key)

The adapter retries with back-off (1 s doubling, at most 60 s) until the back office answers
2xx, keeping the message in progress at JetStream meanwhile; only then does it acknowledge it
(and send the receipt). One item at a time, in order. A crash between the back office's 2xx
and the acknowledgement means the item comes again with the same ``Schakel-Delivery``: the
back office keeps the ids it processed (docs/ADAPTER.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import aiohttp
import structlog

from schakel.adapters.client import Delivery, PartnerClient, Refusal
from schakel.adapters.http import describe, notice_id
from schakel.contracts.clock import system_clock

__all__ = ["Webhook", "push", "signature"]

_MAX_BACKOFF: Final = 60.0
_ATTEMPTS: Final = 7  # 1 + 2 + ... + 32 s of waiting, then the next items go first
_TIMEOUT: Final = 10.0  # seconds one POST may take
_log = structlog.get_logger("schakel.adapter")


@dataclass(frozen=True, slots=True)
class Webhook:
    """Where the adapter pushes, and the secret it signs with."""

    url: str
    secret: bytes


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``Schakel-Signature`` value for a body sent at ``timestamp``."""
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


async def push(
    client: PartnerClient,
    webhook: Webhook,
    *,
    on_refusal: Callable[[Refusal], None] | None = None,
    on_push: Callable[[Delivery | Refusal, int | None], None] | None = None,
) -> None:
    """Push every item the client receives to the webhook, for ever (until cancelled)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=_TIMEOUT)) as session:
        while True:
            try:
                await _push_one(client, session, webhook, on_refusal, on_push)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS away, an ack lost: the item comes back; go on
                _log.warning("webhook_push_failed", error=type(exc).__name__)
                await asyncio.sleep(1.0)


async def _push_one(
    client: PartnerClient,
    session: aiohttp.ClientSession,
    webhook: Webhook,
    on_refusal: Callable[[Refusal], None] | None,
    on_push: Callable[[Delivery | Refusal, int | None], None] | None,
) -> None:
    item = await client.receive(timeout=5.0)
    if not isinstance(item, Delivery | Refusal):
        return  # nothing, or what the SDK rejected (acknowledged, logged there)
    if isinstance(item, Refusal) and on_refusal is not None:
        on_refusal(item)
    item_id = (
        item.message_id
        if isinstance(item, Delivery)
        else f"refusal-{notice_id(item.notice.model_dump_json())}"
    )
    body = json.dumps(describe(item_id, item)).encode()
    if await _until_taken(session, webhook, item, item_id, body, on_push):
        await item.ack()  # remembered, acknowledged, then its receipt sent
    elif isinstance(item, Delivery):
        # Not taken after _ATTEMPTS: JetStream hands it out again on its schedule (the later
        # items go first meanwhile); after its last attempt the hub dead-letters it and
        # tells the sender. Nothing is retried for ever.
        await item.retry_later()


async def _until_taken(
    session: aiohttp.ClientSession,
    webhook: Webhook,
    item: Delivery | Refusal,
    item_id: str,
    body: bytes,
    on_push: Callable[[Delivery | Refusal, int | None], None] | None,
) -> bool:
    """POST until the back office answers 2xx (``True``), keeping the item in progress
    meanwhile; ``False`` after ``_ATTEMPTS`` attempts. Redirects are not followed: the
    signed body goes to the configured URL and nowhere else."""
    delay = 1.0
    for attempt in range(1, _ATTEMPTS + 1):
        timestamp = str(int(system_clock().timestamp()))
        headers = {
            "Content-Type": "application/json",
            "Schakel-Timestamp": timestamp,
            "Schakel-Signature": signature(webhook.secret, timestamp, body),
            "Schakel-Delivery": item_id,
        }
        status: int | None = None
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.post(
                webhook.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
        if on_push is not None:
            on_push(item, status)
        if status is not None and 200 <= status < 300:
            return True
        if attempt == _ATTEMPTS:
            break
        _log.warning("webhook_not_taken", status=status, attempt=attempt, retry_in=delay)
        waited = 0.0
        while waited < delay:  # JetStream must not hand it out again while we wait
            with contextlib.suppress(Exception):
                await item.in_progress()
            step = min(10.0, delay - waited)
            await asyncio.sleep(step)
            waited += step
        delay = min(_MAX_BACKOFF, delay * 2)
    _log.warning("webhook_given_up", attempts=_ATTEMPTS)
    return False
