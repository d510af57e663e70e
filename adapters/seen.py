"""The adapter's memory of processed message ids, on disk, until each message expires.

At-least-once delivery means a message can arrive again: after a crash between the back office
finishing and the acknowledgement reaching NATS, or after an adapter restart. Recording the id
when the back office acknowledges (fsynced before the acknowledgement is sent) and suppressing
it afterwards gives the back office each message exactly once, across restarts. The file is an
append-only list of ``<message id> <expiry, unix seconds>`` lines, compacted when loaded.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from schakel.contracts.clock import Clock, system_clock

__all__ = ["SeenStore"]


class SeenStore:
    """Message ids processed by the back office, kept until their messages expire."""

    def __init__(self, path: Path | None, clock: Clock = system_clock) -> None:
        self._path = path
        self._clock = clock
        self._ids: dict[str, float] = {}
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        now = self._clock().timestamp()
        if path.exists():
            for line in path.read_text("ascii").splitlines():
                message_id, _, expires = line.partition(" ")
                if expires and float(expires) > now:
                    self._ids[message_id] = float(expires)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", encoding="ascii") as handle:  # compacted, durable, then in place
            handle.write("".join(f"{m} {e:.0f}\n" for m, e in self._ids.items()))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, message_id: str, expires_at: dt.datetime) -> None:
        """Remember ``message_id`` until ``expires_at``; durable before this returns."""
        self._ids[message_id] = expires_at.timestamp()
        if self._path is None:
            return
        with self._path.open("a", encoding="ascii") as handle:
            handle.write(f"{message_id} {expires_at.timestamp():.0f}\n")
            handle.flush()
            os.fsync(handle.fileno())
