"""Stopping a background task for sure.

On Python 3.11, ``asyncio.wait_for`` swallows a cancellation that arrives in the same turn of
the event loop as the thing it waits for completes: it returns the result instead of raising
(python/cpython#86296, fixed in 3.12). nats-py waits with ``wait_for`` on every request and
fetch, so a loop (a key log resync, a webhook pusher, a fetcher) cancelled once may simply run
on, and whoever cancelled it and awaits it waits for ever. That hung two CI runs in teardown.

:func:`stop` is the one way this code base ends a task it started: it cancels again until the
task has ended. A ``TaskGroup`` cancels its children once only, so loops run as plain tasks
that their owner stops.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["stop"]

# How long a cancelled task gets to end before it is cancelled again.
_AGAIN_AFTER = 0.5


async def stop(*tasks: asyncio.Future[Any]) -> None:
    """Cancel ``tasks`` and wait until every one has ended, cancelling again any that a
    swallowed cancellation left running. What a task ended with (a result, an error) is
    dropped: a stopped task's outcome is nobody's any more. If the caller is cancelled
    meanwhile, that cancellation goes on as usual."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=_AGAIN_AFTER)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" at exit
