"""Bytes that reach a puller's inbox without coming from JetStream (on a server without
accounts, anyone who watches the pull requests learns the inboxes) are dropped and counted:
they stop neither the hub's routing nor a partner's receiving."""

from __future__ import annotations

import asyncio

import nats
from nats.aio.msg import Msg

from schakel.adapters.client import Delivery
from schakel.contracts.enums import MessageType
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.ids import OrgId
from schakel.harness.scenarios import GEM, POL, ZVH
from tests.hub.conftest import World

JUNK = (b"evil", b"", b'{"not": "a message"}')


async def test_foreign_messages_in_pull_inboxes_stop_nothing(world: World) -> None:
    attacker = await nats.connect(world.server.url)
    inboxes: set[str] = set()

    async def learn(msg: Msg) -> None:
        if msg.reply:
            inboxes.add(msg.reply)

    await attacker.subscribe("$JS.API.CONSUMER.MSG.NEXT.>", cb=learn)
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while len(inboxes) < 2:  # the hub's fetchers and the partners' pulls
            assert asyncio.get_running_loop().time() < deadline, inboxes
            await asyncio.sleep(0.05)
        for _ in range(3):
            for inbox in list(inboxes):
                for junk in JUNK:
                    await attacker.publish(inbox, junk)
        await attacker.flush()
        for _ in range(2):  # routing and receiving go on
            body = example_body(MessageType.M1)
            sent = await world.clients[POL].send(
                body, example_draft(MessageType.M1, body), [OrgId(GEM), OrgId(ZVH)]
            )
            for org in (GEM, ZVH):
                item = await world.clients[org].receive(timeout=30)
                while item is not None and not isinstance(item, Delivery):
                    item = await world.clients[org].receive(timeout=30)
                assert isinstance(item, Delivery), (org, item)
                assert item.message_id == sent
                await item.ack()
        assert world.hub._runner is not None and not world.hub._runner.done()
    finally:
        await attacker.close()
