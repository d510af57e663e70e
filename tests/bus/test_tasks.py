"""``stop`` ends a task even when a cancellation is swallowed, and only ``stop`` cancels tasks.

Python 3.11's ``asyncio.wait_for`` returns the result instead of raising when the task is
cancelled in the same turn as what it waits for completes; nats-py waits so on every request
and fetch. A loop cancelled once then runs on, and a teardown that awaits it hangs (it did, in
two CI runs).
"""

from __future__ import annotations

import ast
import asyncio
import sys
from pathlib import Path

import pytest

from schakel.bus import stop

PACKAGE = Path(__file__).resolve().parents[2]


async def test_a_cancellation_that_wait_for_swallows_is_made_again() -> None:
    loop = asyncio.get_running_loop()
    waiting: list[asyncio.Future[None]] = []
    turns = 0

    async def polls_for_ever() -> None:  # like a resync loop over nats-py requests
        nonlocal turns
        while True:
            future: asyncio.Future[None] = loop.create_future()
            waiting.append(future)
            await asyncio.wait_for(future, 10)
            turns += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(polls_for_ever())
    while not waiting:
        await asyncio.sleep(0)
    waiting[-1].set_result(None)  # the answer comes in the turn the task is cancelled
    task.cancel()
    while turns == 0 and not task.done():
        await asyncio.sleep(0.005)
    if sys.version_info < (3, 12):  # the bug this guards against, seen for real
        assert not task.done() and turns == 1
    await asyncio.wait_for(stop(task), 5)
    assert task.done()


async def test_a_task_that_ignores_several_cancellations_is_stopped() -> None:
    ignored = 0

    async def stubborn() -> None:
        nonlocal ignored
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                ignored += 1
                if ignored >= 3:
                    raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(stop(task), 5)
    assert task.cancelled() and ignored == 3


async def test_what_a_stopped_task_ended_with_is_dropped() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    async def returns() -> int:
        return 1

    failed, returned = asyncio.create_task(fails()), asyncio.create_task(returns())
    await asyncio.sleep(0)
    await stop(failed, returned)  # no error, no "exception was never retrieved" warning
    await stop()  # nothing to stop


async def test_the_callers_own_cancellation_goes_through() -> None:
    deaf = True

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if not deaf:
                    raise

    task = asyncio.create_task(stubborn())
    stopping = asyncio.create_task(stop(task))
    await asyncio.sleep(0.05)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert not task.done()
    deaf = False
    await stop(task)


def _cancels(path: Path) -> list[int]:
    """Lines of ``path`` calling ``.cancel()`` with no argument on something."""
    tree = ast.parse(path.read_text(), str(path))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "cancel"
        and not node.args
    ]


def test_only_stop_cancels_tasks() -> None:
    """Everywhere else a task cancelled once might run on (the futures a publish pipeline
    cancels have nobody waiting on them, so they may)."""
    allowed = {PACKAGE / "bus" / "tasks.py", PACKAGE / "bus" / "connection.py"}
    found = {
        str(path.relative_to(PACKAGE)): lines
        for folder in ("adapters", "bus", "contracts", "harness", "hub", "keys")
        for path in sorted((PACKAGE / folder).rglob("*.py"))
        if path not in allowed and (lines := _cancels(path))
    }
    assert found == {}
