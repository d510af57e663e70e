"""Per-sender inbound rate limits: a token bucket for each partner.

Each partner may send ``rate`` messages per second on average and ``burst`` at once; a message
beyond that is refused with ``RATE_LIMITED`` before any expensive check, so a flood costs the
hub one refusal per message and never another partner's turn. Buckets live in one hub
instance's memory: with N instances a partner gets at most N times the rate (the per-partner
inbound stream's count and byte limits bound the total either way).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from schakel.contracts.ids import OrgId

__all__ = ["RateLimiter"]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Token buckets keyed by sender."""

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[OrgId, _Bucket] = {}

    def take(self, sender: OrgId) -> bool:
        """Spend one token of ``sender``'s bucket; ``False`` when it is empty."""
        now = self._clock()
        bucket = self._buckets.get(sender)
        if bucket is None:
            bucket = self._buckets[sender] = _Bucket(self._burst, now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.at) * self._rate)
        bucket.at = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True
