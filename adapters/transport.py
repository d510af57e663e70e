"""The adapter SDK's NATS plumbing: connect, follow the key directory.

The hub uses :func:`follow_directory` too: it is a client of the key directory like any
partner.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import nats
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.js.kv import KeyValue
from pydantic import ValidationError

from contracts.ids import OrgId
from contracts.topology import KEYS_BUCKET
from keys.directory import KeyDirectory
from keys.identity import PublicKeyRecord

__all__ = ["connect", "follow_directory", "publish_record"]

_log = structlog.get_logger("schakel.directory")


async def connect(url: str, name: str) -> Client:
    """Connect to NATS, reconnecting forever after the first connection."""
    return await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        drain_timeout=5,
        allow_reconnect=True,
    )


@contextlib.asynccontextmanager
async def follow_directory(nc: Client, directory: KeyDirectory) -> AsyncIterator[KeyDirectory]:
    """Load every public key record into ``directory`` and keep it current while inside."""
    kv = await nc.jetstream().key_value(KEYS_BUCKET)
    watcher = await kv.watchall()
    ready = asyncio.Event()

    async def run() -> None:
        async for entry in watcher:
            if entry is None:
                ready.set()
                continue
            if entry.operation in ("DEL", "PURGE"):
                directory.remove(OrgId(entry.key))
            elif entry.value:
                try:
                    directory.put(PublicKeyRecord.model_validate_json(entry.value))
                except ValidationError:
                    _log.warning("directory_record_invalid", org=entry.key)
            if not ready.is_set() and entry.delta == 0:
                ready.set()

    task = asyncio.create_task(run(), name="directory-follower")
    try:
        await asyncio.wait_for(ready.wait(), timeout=10)
        yield directory
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def publish_record(kv: KeyValue, record: PublicKeyRecord) -> None:
    """Put a public key record into the directory bucket (operator and test use)."""
    await kv.put(record.org, record.model_dump_json().encode())
