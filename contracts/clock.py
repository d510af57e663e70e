"""The clock: every reading of the current time in Schakel goes through a :data:`Clock`.

Components take a clock (default :func:`system_clock`) so that tests and simulations can run
time forward; ``tests/test_public_surface.py`` checks that no other module reads the wall
clock itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

__all__ = ["Clock", "system_clock", "whole_seconds"]

Clock = Callable[[], dt.datetime]


def system_clock() -> dt.datetime:
    """The current time, UTC."""
    return dt.datetime.now(dt.UTC)


def whole_seconds(clock: Clock) -> dt.datetime:
    """``clock``'s time, UTC, to the whole second (as timestamps on the wire are)."""
    return clock().astimezone(dt.UTC).replace(microsecond=0)
