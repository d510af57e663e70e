"""The key directory's log over NATS: read it, follow it, append to it.

The hub and every adapter follow the log (:func:`follow_directory`) as clients of the key
directory; :func:`append_key_event` is the directory authority's tool.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import structlog

from schakel.bus.connection import Bus, Message
from schakel.bus.tasks import stop
from schakel.contracts.canonical import canonical_json
from schakel.contracts.clock import Clock, system_clock
from schakel.contracts.keyevents import KeyEventRequest, SignedKeyEvent
from schakel.contracts.topology import KEYLOG_STREAM, KEYLOG_SUBJECT
from schakel.keys.crypto import SigningKey, VerifyKey
from schakel.keys.directory import KeyDirectory
from schakel.keys.keylog import KeyLog, KeyLogError, countersign

__all__ = [
    "DirectoryFollower",
    "append_key_event",
    "follow_directory",
    "read_keylog",
]

_log = structlog.get_logger("schakel.directory")


async def read_keylog(bus: Bus, from_seq: int) -> list[tuple[int, bytes]]:
    """Entries of the key log from stream sequence ``from_seq`` on, with their sequences.

    Read with batched direct gets (:meth:`Bus.scan_direct`): partners need no right to create
    or inspect consumers. Entries are returned as stored; :meth:`KeyLog.offer` decides which
    are valid events.
    """
    return [(m.seq, m.data) async for m in bus.scan_direct(KEYLOG_STREAM, start=from_seq)]


class DirectoryFollower:
    """Keeps a :class:`KeyDirectory` equal to the verified fold of the key log.

    An entry that is not the next valid signed event is skipped and reported (``skipped``,
    the ``key_log_entry_skipped`` alarm and ``on_skip``); the fold goes on after it.
    """

    def __init__(
        self,
        directory: KeyDirectory,
        authority: VerifyKey,
        on_change: Callable[[KeyLog], None] | None = None,
        on_skip: Callable[[int, KeyLogError], None] | None = None,
        clock: Clock = system_clock,
    ) -> None:
        self.directory = directory
        self._clock = clock
        self.log = KeyLog(authority)
        self.next_seq = 1
        self.skipped: list[tuple[int, KeyLogError]] = []
        self._on_change = on_change or (lambda _: None)
        self._on_skip = on_skip or (lambda _seq, _problem: None)
        self._lock = asyncio.Lock()

    def feed(self, seq: int, raw: bytes) -> None:
        """Offer the entry at stream sequence ``seq`` to the fold."""
        if seq < self.next_seq:
            return  # read already
        self.next_seq = seq + 1
        problem = self.log.offer(raw)
        if problem is not None:
            self.skipped.append((seq, problem))
            _log.error("key_log_entry_skipped", seq=seq, index=problem.index, reason=problem.reason)
            self._on_skip(seq, problem)
            return
        self.directory.load(self.log)
        self._on_change(self.log)

    async def sync(self, bus: Bus) -> None:
        """Read everything after what was read; mark the view fresh."""
        async with self._lock:
            for seq, raw in await read_keylog(bus, self.next_seq):
                self.feed(seq, raw)
            self.directory.synced_at = self._clock()


@contextlib.asynccontextmanager
async def follow_directory(
    bus: Bus,
    directory: KeyDirectory,
    authority: VerifyKey,
    *,
    resync_every: float = 2.0,
    on_change: Callable[[KeyLog], None] | None = None,
    on_skip: Callable[[int, KeyLogError], None] | None = None,
    clock: Clock = system_clock,
) -> AsyncIterator[DirectoryFollower]:
    """Fill ``directory`` from the verified key log and keep it current while inside.

    A message on the log's subject says that the log grew; the follower then reads what is
    new by sequence (the subscription's copy is not used, so every entry is read once, in
    order). A resync every ``resync_every`` seconds fills any gap and refreshes
    ``directory.synced_at``, which adapters use to fail closed when their view is too old.
    """
    follower = DirectoryFollower(directory, authority, on_change, on_skip, clock)

    async def on_event(_: Message) -> None:
        with contextlib.suppress(Exception):
            await follower.sync(bus)

    sub = await bus.subscribe(KEYLOG_SUBJECT, on_event)

    async def resync() -> None:
        while True:
            await asyncio.sleep(resync_every)
            with contextlib.suppress(Exception):
                await follower.sync(bus)

    task = asyncio.create_task(resync(), name="directory-resync")
    try:
        await follower.sync(bus)
        yield follower
    finally:
        await stop(task)
        await sub.close()


async def append_key_event(
    bus: Bus, request: KeyEventRequest, authority: SigningKey
) -> SignedKeyEvent:
    """Countersign ``request`` and append it to the key log (the directory authority's job).

    The whole log is read and verified first, skipping foreign entries as every reader does,
    and the new event must apply to it, so an invalid event never enters the log through this
    path. The append expects the stream's last sequence to be the one read.

    Raises:
        KeyLogError: the event does not apply.
    """
    for _ in range(20):
        log = KeyLog(authority.public)
        last_seq = 0
        for seq, raw in await read_keylog(bus, 1):
            log.offer(raw)
            last_seq = seq
        signed = countersign(request, index=log.length, prev=log.head, authority=authority)
        log.apply(signed)  # raises if it does not apply
        if await bus.append(KEYLOG_SUBJECT, canonical_json(signed), after=last_seq) is None:
            continue  # someone appended meanwhile: read again
        return signed
    raise KeyLogError(-1, "the key log kept changing")
