"""Back-pressure, not loss: a partner's full backlog refuses new messages for it."""

from __future__ import annotations

from adapters.client import Delivery, Refusal
from adapters.scenarios import ZVH
from contracts.enums import MessageType, ReasonCode
from contracts.examples import example_body, example_draft
from contracts.ids import OrgId
from contracts.policy import default_policy
from tests.hub.conftest import PairFactory


async def test_full_backlog_refuses_new_messages_and_keeps_old_ones(pair: PairFactory) -> None:
    """With a limit of 3, the 4th message to an idle partner is BACKLOG_FULL; nothing is dropped."""
    base = default_policy()
    limits = base.limits.model_copy(update={"max_backlog": 3})
    policy = base.model_copy(update={"limits": limits})
    async with pair(policy=policy, workers=1) as system:
        pol, zvh = system.pol, system.zvh
        body = example_body(MessageType.M1)
        sent = [
            await pol.send(body, example_draft(MessageType.M1, body), [OrgId(ZVH)])
            for _ in range(4)
        ]
        item = await pol.receive(timeout=10)
        assert isinstance(item, Refusal)
        assert item.notice.reason is ReasonCode.BACKLOG_FULL
        assert item.notice.message_id == sent[3]
        await item.ack()
        received = []
        for _ in range(3):
            delivery = await zvh.receive(timeout=10)
            assert isinstance(delivery, Delivery)
            received.append(delivery.message_id)
            await delivery.ack()
        assert received == sent[:3]  # the old ones are all there, in order
