"""Pulling from a durable consumer: a fetch returns as soon as a message is there, takes what
else is waiting, and leaves no pull request open behind it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.js import api

from schakel.bus import Bus, Puller
from schakel.hub.natsserver import NatsServer


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[tuple[Bus, Puller]]:
    """A work-queue stream with one durable consumer, and a puller bound to it."""
    async with NatsServer(tmp_path / "nats") as server, Bus(server.url, name="test") as bus:
        await bus.js.add_stream(api.StreamConfig(
            name="W", subjects=["w"], retention=api.RetentionPolicy.WORK_QUEUE))  # fmt: skip
        await bus.js.add_consumer("W", api.ConsumerConfig(
            durable_name="d", ack_policy=api.AckPolicy.EXPLICIT))  # fmt: skip
        yield bus, await bus.pull("W", "d")


async def test_a_fetch_returns_at_once_with_what_is_waiting(queue: tuple[Bus, Puller]) -> None:
    bus, puller = queue
    for _ in range(20):
        await bus.publish("w", b"x")
    start = time.monotonic()
    first = await puller.fetch(16, timeout=5.0)
    second = await puller.fetch(16, timeout=5.0)
    assert (len(first), len(second)) == (16, 4)
    assert time.monotonic() - start < 2.0  # not the 5 s a batch-filling fetch would wait


async def test_a_message_arriving_later_is_returned_when_it_arrives(
    queue: tuple[Bus, Puller],
) -> None:
    """Not when a batch is full or the timeout is over (the hub's p99 at low rates was the
    fetch timeout)."""
    bus, puller = queue
    fetching = asyncio.create_task(puller.fetch(16, timeout=5.0))
    while (await bus.js.consumer_info("W", "d")).num_waiting == 0:  # its pull is registered
        await asyncio.sleep(0.01)
    start = time.monotonic()
    await bus.publish("w", b"late")
    got = await fetching
    assert [p.data for p in got] == [b"late"]
    assert time.monotonic() - start < 2.0


async def test_nothing_is_handed_out_between_fetches(queue: tuple[Bus, Puller]) -> None:
    """A fetch leaves no pull request open: what arrives while nobody fetches stays in the
    stream, undelivered (handing it out would count as a delivery attempt)."""
    bus, puller = queue
    await bus.publish("w", b"one")
    assert len(await puller.fetch(16, timeout=5.0)) == 1
    assert await puller.fetch(16, timeout=0.2) == []
    await bus.publish("w", b"two")
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:  # watch for a while: nothing may be delivered
        info = await bus.js.consumer_info("W", "d")
        assert info.num_pending == 1 and info.num_ack_pending == 1, info
        await asyncio.sleep(0.05)
