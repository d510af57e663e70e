"""Pipelined JetStream publishes: every publish written at once, the acknowledgements awaited
together; a conflict is an answer, a timeout an error of the publishes it hit only, and a
publish that timed out can be made again without a second copy."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.js import api

from schakel.bus import Bus, Message, TransportError, is_transient
from schakel.hub.natsserver import NatsServer

TIMEOUT = 1.0


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[tuple[NatsServer, Bus]]:
    """A server with a stream ``S`` (``s.>``) and a KV bucket ``k``; a connection whose
    publishes time out after ``TIMEOUT`` s."""
    async with NatsServer(tmp_path / "nats") as server, Bus(
        server.url, name="test", publish_timeout=TIMEOUT
    ) as bus:  # fmt: skip
        await bus.js.add_stream(api.StreamConfig(name="S", subjects=["s.>"]))
        await bus.js.create_key_value(api.KeyValueConfig(bucket="k", history=1))
        yield server, bus


async def test_each_publish_gets_its_own_answer(system: tuple[NatsServer, Bus]) -> None:
    _, bus = system
    answers = await bus.publish_many(
        [("s.a", b"1", {}), ("nobody.listens", b"2", {}), ("s.b", b"3", {"Nats-Msg-Id": "x"})]
    )
    assert answers[0] == 1 and answers[2] == 2
    assert isinstance(answers[1], TransportError)  # no stream takes the subject
    kv = await bus.kv("k")
    created = await kv.write_many([("a", b"1", None), ("b", b"1", None)])
    assert created == [1, 2]  # revisions: the bucket's own stream
    again = await kv.write_many([("a", b"2", None), ("b", b"2", 2), ("a", b"2", 5)])
    assert again == [None, 3, None]  # taken; the right revision; a stale one
    await kv.delete("a")  # an operator's repair leaves a delete marker
    assert await kv.create("a", b"3") is not None  # which a create writes over


async def test_a_pipelined_publish_that_times_out_fails_alone_and_is_made_again_once(
    system: tuple[NatsServer, Bus],
) -> None:
    """With the server stopped (SIGSTOP) a wave of publishes waits for acknowledgements that
    do not come: every one of them fails as a transient error after the timeout, none hangs.
    Made again with the same message ids once the server is back, each is stored once."""
    server, bus = system
    assert server.pid is not None
    items = [(f"s.{n % 4}", b"x", {"Nats-Msg-Id": f"m{n}"}) for n in range(50)]
    os.kill(server.pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        answers = await asyncio.wait_for(bus.publish_many(items), TIMEOUT * 10)
        waited = time.monotonic() - start
    finally:
        os.kill(server.pid, signal.SIGCONT)
    assert all(isinstance(a, TransportError) and is_transient(a) for a in answers)
    assert waited >= TIMEOUT * 0.9
    retried = await bus.publish_many(items)
    assert all(isinstance(a, int) for a in retried)
    _, last, held = await bus.state("S")
    assert held == 50 and last == 50  # the first wave's copies and the retry's are one
    assert await bus.publish("s.after", b"y") == 51  # the connection goes on


@pytest.mark.parametrize(
    "answer",
    [b'{"seq": 4242}', b'{"stream": "S", "seq": "7"}', b"not json", b'{"stream": "S", "seq": 1'
     + b" " * 5000 + b"}", b"[]"],
)  # fmt: skip
async def test_an_answer_that_is_no_streams_acknowledgement_is_not_one(
    system: tuple[NatsServer, Bus], answer: bytes
) -> None:
    """Where no stream takes a subject, whoever subscribes to it may answer a publish there
    (a server without accounts): that answer is an error for the publish, never a stored
    message's sequence (the hub would take a delivery for stored that is not)."""
    server, bus = system
    async with Bus(server.url, name="responder") as responder:

        async def forge(msg: Message) -> None:
            await responder.send(msg.reply, answer)

        subscription = await responder.subscribe("gone.>", forge)
        await responder.flush()
        [result] = await bus.publish_many([("gone.partner", b"delivery", {"Nats-Msg-Id": "m"})])
        await subscription.close()
    assert isinstance(result, TransportError)
