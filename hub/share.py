"""Which inbound partitions this hub instance reads: its share of the cases.

Every message about a case lands in one inbound partition (``contracts/topology.py``), and
each partition of every partner's inbound stream has one durable hub consumer. The instances
alive say so every :data:`ANNOUNCE_EVERY` seconds on ``schakel.hubs.<instance>`` (a stream
that keeps one message per instance for :data:`~schakel.bus.topology.HUB_ALIVE_KEPT` seconds);
each reads who is alive and takes partition ``p`` when it is number ``p mod n`` of the ``n``
alive, in order. So each case is routed by one instance and instances do not fight over case
records; with more instances than partitions, the extra ones stand by.

No lease, no leader: two instances that briefly both think a partition theirs (one has seen
a change the other has not yet) both read it, which is safe (the case record's
compare-and-set decides, as it always does) and costs only conflicts; where views differ the
other way a partition waits for the next announcement (at most ``ANNOUNCE_EVERY``). An
instance that dies, or whose routing is stuck (a batch that has not finished in
``STUCK_AFTER`` seconds), stops saying it is alive; at most ``HUB_ALIVE_KEPT`` seconds later
the others take its partitions, and what it held unacknowledged comes back after the
consumers' ``ack_wait``. One that stops cleanly withdraws once its fetchers have finished;
the others see it at their next announcement. One that cannot read who is alive reads every
partition until it can: overlap is safe, a gap is not.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable
from typing import Final

import structlog

from schakel.bus import Bus, TransportError
from schakel.contracts.topology import (
    HUB_INSTANCES_STREAM,
    HUB_INSTANCES_SUBJECT,
    INBOUND_PARTITIONS,
    hub_instances_subject,
)

__all__ = ["ANNOUNCE_EVERY", "STUCK_AFTER", "Share", "instance_token"]

ANNOUNCE_EVERY: Final = 2.0  # seconds; a third of HUB_ALIVE_KEPT
# Seconds a fetcher may spend on one batch before the instance counts as stuck (the
# consumers' ack wait: its messages go to whoever reads the partition next anyway).
STUCK_AFTER: Final = 30.0
_TOKEN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_log = structlog.get_logger("schakel.hub")


def instance_token(instance: str) -> str:
    """``instance`` as one subject token: itself when it is one, else a digest of it."""
    if _TOKEN.fullmatch(instance):
        return instance
    return "h" + hashlib.sha256(instance.encode()).hexdigest()[:24]


class Share:
    """This instance's view of the instances alive, and the partitions it reads."""

    def __init__(
        self,
        instance: str,
        on_change: Callable[[], None] | None = None,
        routing: Callable[[], bool] | None = None,
    ) -> None:
        self.token = instance_token(instance)
        self.alive: tuple[str, ...] = (self.token,)
        self._on_change = on_change
        self._routing = routing  # whether this instance is routing (not stuck): it says so
        self._silent = False

    def owns(self, partition: int) -> bool:
        """Whether this instance reads ``partition``."""
        return self.alive[partition % len(self.alive)] == self.token

    @property
    def partitions(self) -> list[int]:
        """The partitions this instance reads."""
        return [p for p in range(INBOUND_PARTITIONS) if self.owns(p)]

    def see(self, tokens: set[str]) -> None:
        """Take ``tokens`` (the instances alive; this one always counts) as the view."""
        alive = tuple(sorted(tokens | {self.token}))
        if alive != self.alive:
            self.alive = alive
            _log.info("hub_share_changed", instances=len(alive), partitions=self.partitions)
            if self._on_change is not None:
                self._on_change()

    async def announce(self, bus: Bus) -> None:
        """Say this instance is alive (unless its routing is stuck), then read who else is.
        When the read fails the view is this instance alone: it reads every partition, which
        may overlap others (safe) but leaves none unread (a stale view could)."""
        routing = self._routing is None or self._routing()
        if routing != (not self._silent):
            self._silent = not routing
            _log.warning("hub_routing_stuck" if self._silent else "hub_routing_again")
        try:
            if routing:
                await bus.publish(hub_instances_subject(self.token), b"", {})
            alive = await bus.counts(HUB_INSTANCES_STREAM, HUB_INSTANCES_SUBJECT + ".*")
        except TransportError:
            self.see(set())
            raise
        self.see({subject.rsplit(".", 1)[-1] for subject in alive})

    async def run(self, bus: Bus) -> None:
        """:meth:`announce` every :data:`ANNOUNCE_EVERY` seconds, for ever."""
        while True:
            try:
                await self.announce(bus)
            except TransportError as exc:  # say it again next time
                _log.warning("hub_announce_failed", error=type(exc.__cause__).__name__)
            await asyncio.sleep(ANNOUNCE_EVERY)

    async def withdraw(self, bus: Bus) -> None:
        """Stop counting as alive (a clean stop: the others take over at their next look)."""
        try:
            await bus.purge(HUB_INSTANCES_STREAM, hub_instances_subject(self.token))
        except TransportError as exc:
            _log.warning("hub_withdraw_failed", error=type(exc.__cause__).__name__)
