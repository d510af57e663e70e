"""The adapter SDK's NATS plumbing: connect, follow the key directory.

The hub uses :func:`follow_directory` too: it is a client of the key directory like any
partner.
"""

from __future__ import annotations

import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import nats
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.kv import KeyValue
from pydantic import ValidationError

from contracts.ids import OrgId
from contracts.topology import KEYS_BUCKET
from keys.directory import KeyDirectory
from keys.identity import PublicKeyRecord

__all__ = ["Credentials", "connect", "follow_directory", "load_directory", "publish_record"]

_log = structlog.get_logger("schakel.directory")
_KV_PREFIX: Final = f"$KV.{KEYS_BUCKET}."
_DIRECT_GET: Final = f"$JS.API.DIRECT.GET.KV_{KEYS_BUCKET}"


@dataclass(frozen=True, slots=True)
class Credentials:
    """How a client proves who it is and checks who the server is."""

    nkey_seed: Path | None = None
    tls_ca: Path | None = None
    inbox_prefix: str | None = None

    def __repr__(self) -> str:
        return f"Credentials(nkey_seed={self.nkey_seed}, tls_ca={self.tls_ca})"


async def connect(url: str, name: str, credentials: Credentials | None = None) -> Client:
    """Connect to NATS, reconnecting forever after the first connection."""
    creds = credentials or Credentials()
    options: dict[str, Any] = {}
    if creds.nkey_seed is not None:
        options["nkeys_seed"] = str(creds.nkey_seed)
    if creds.tls_ca is not None:
        options["tls"] = ssl.create_default_context(cafile=str(creds.tls_ca))
    if creds.inbox_prefix is not None:
        options["inbox_prefix"] = creds.inbox_prefix.encode()
    return await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        drain_timeout=5,
        allow_reconnect=True,
        **options,
    )


def _apply(directory: KeyDirectory, org: str, operation: str | None, value: bytes) -> None:
    if operation in ("DEL", "PURGE"):
        directory.remove(OrgId(org))
        return
    try:
        directory.put(PublicKeyRecord.model_validate_json(value))
    except ValidationError:
        _log.warning("directory_record_invalid", org=org)


async def load_directory(nc: Client, directory: KeyDirectory, *, timeout: float = 5.0) -> int:
    """Read every current record with one batched direct get; return how many were read.

    A single request on the exact subject ``$JS.API.DIRECT.GET.KV_schakel-keys``: no consumer
    is created, so partners need no right to create or inspect consumers.
    """
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    request = {"multi_last": [f"{_KV_PREFIX}>"], "batch": 100_000}
    try:
        await nc.publish(_DIRECT_GET, json.dumps(request).encode(), reply=inbox)
        count = 0
        while True:
            msg = await sub.next_msg(timeout=timeout)
            headers = msg.headers or {}
            if headers.get("Status") in ("204", "404"):  # end of batch / nothing stored
                return count
            subject = headers.get("Nats-Subject", "")
            _apply(
                directory, subject.removeprefix(_KV_PREFIX), headers.get("KV-Operation"), msg.data
            )
            count += 1
    finally:
        await sub.unsubscribe()


@contextlib.asynccontextmanager
async def follow_directory(nc: Client, directory: KeyDirectory) -> AsyncIterator[KeyDirectory]:
    """Load every public key record into ``directory`` and keep it current while inside.

    Live changes arrive on a plain subscription to ``$KV.schakel-keys.>`` (key-value puts are
    ordinary publishes); the snapshot comes from :func:`load_directory`.
    """

    async def on_change(msg: Msg) -> None:
        headers = msg.headers or {}
        _apply(
            directory, msg.subject.removeprefix(_KV_PREFIX), headers.get("KV-Operation"), msg.data
        )

    sub = await nc.subscribe(f"{_KV_PREFIX}>", cb=on_change)
    try:
        await load_directory(nc, directory)
        yield directory
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def publish_record(kv: KeyValue, record: PublicKeyRecord) -> None:
    """Put a public key record into the directory bucket (operator and test use)."""
    await kv.put(record.org, record.model_dump_json().encode())
