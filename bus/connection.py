"""Connecting to NATS: credentials, reconnection, and asynchronous errors logged in counts.

Every client of NATS connects here: the hub, the partner SDK and the operator's commands.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import structlog
from nats.aio.client import Client

__all__ = ["Credentials", "connect"]

_log = structlog.get_logger("schakel.nats")


@dataclass(frozen=True, slots=True)
class Credentials:
    """How a client proves who it is and checks who the server is."""

    nkey_seed: Path | None = None
    tls_ca: Path | None = None
    inbox_prefix: str | None = None

    def __repr__(self) -> str:
        return f"Credentials(nkey_seed={self.nkey_seed}, tls_ca={self.tls_ca})"


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


async def connect(url: str, name: str, credentials: Credentials | None = None) -> Client:
    """Connect to NATS (``url`` may list a cluster's servers, comma-separated); after the first
    connection, reconnect for ever, to whichever server is up."""
    creds = credentials or Credentials()
    options: dict[str, Any] = {}
    if creds.nkey_seed is not None:
        options["nkeys_seed"] = str(creds.nkey_seed)
    if creds.tls_ca is not None:
        options["tls"] = ssl.create_default_context(cafile=str(creds.tls_ca))
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


