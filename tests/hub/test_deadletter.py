"""A poison message goes to the dead-letter stream after its retries and blocks nothing."""

from __future__ import annotations

import asyncio

from schakel.adapters.client import Delivery, Refusal
from schakel.cli import _dead_letters
from schakel.contracts.enums import MessageType, ReasonCode
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.ids import OrgId
from schakel.harness.scenarios import ZVH
from schakel.hub.audit import AuditRecord, read_trail
from tests.hub.conftest import PairFactory

RETRIES = (0.2, 0.2)  # three deliveries in all


async def test_poison_message_is_dead_lettered_and_replayable(pair: PairFactory) -> None:
    """The back office keeps failing on one message: after its retries it is dead-lettered,
    the sender is told, other traffic flows meanwhile, and the operator can replay it."""
    async with pair(redelivery=RETRIES) as system:
        pol, zvh, hub = system.pol, system.zvh, system.hub
        body = example_body(MessageType.M1)
        to = [OrgId(ZVH)]
        poison = await pol.send(body, example_draft(MessageType.M1, body), to)
        healthy = await pol.send(body, example_draft(MessageType.M1, body), to)
        deliveries, got_healthy = 0, False
        while deliveries < 3 or not got_healthy:
            item = await zvh.receive(timeout=10)
            assert isinstance(item, Delivery), (deliveries, got_healthy, item)
            if item.message_id == poison:
                deliveries += 1
                await item.retry_later(delay=0.1)  # the back office fails on this one
            else:
                assert item.message_id == healthy
                got_healthy = True
                await item.ack()
        # The recipient keeps pulling (as a running adapter does): that is when JetStream finds
        # the retries exhausted and emits the advisory the hub acts on.
        pulling = asyncio.create_task(zvh.receive(timeout=3))
        notice = await pol.receive(timeout=10)
        assert await pulling is None
        assert isinstance(notice, Refusal)
        assert notice.notice.reason is ReasonCode.UNDELIVERABLE
        assert notice.notice.message_id == poison
        await notice.ack()
        assert await _dead_letters(system.url, replay=True) == 1
        again = await zvh.receive(timeout=10)
        assert isinstance(again, Delivery)
        assert again.message_id == poison
        await again.ack()
        assert hub.bus is not None
        records = [AuditRecord.model_validate_json(r) async for _, r in read_trail(hub.bus)]
        dead = [r for r in records if r.event == "dead-lettered"]
        assert [(r.message_id, r.recipients) for r in dead] == [(poison, (ZVH,))]
