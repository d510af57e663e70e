"""Back-pressure, not loss: a partner's full backlog refuses new messages for it."""

from __future__ import annotations

import pytest

from schakel.adapters.client import Delivery, InboundFull, Refusal
from schakel.contracts.enums import MessageType, ReasonCode
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.ids import OrgId
from schakel.contracts.policy import default_policy
from schakel.harness.local import local_hub
from schakel.harness.scenarios import POL, ZVH
from schakel.hub.natsserver import NatsServer
from schakel.keys.crypto import SigningKey
from schakel.keys.identity import PartnerIdentity
from tests.hub.conftest import PairFactory


async def test_full_backlog_refuses_new_messages_and_keeps_old_ones(pair: PairFactory) -> None:
    """With a limit of 3, of 4 messages (4 cases) to an idle partner one is BACKLOG_FULL and
    the other three are delivered; nothing is dropped. (Which one: the last routed. Messages
    about different cases may be routed in any order: they are on different partitions.)"""
    base = default_policy()
    limits = base.limits.model_copy(update={"max_backlog": 3})
    policy = base.model_copy(update={"limits": limits})
    async with pair(policy=policy) as system:
        pol, zvh = system.pol, system.zvh
        body = example_body(MessageType.M1)
        sent = [
            await pol.send(body, example_draft(MessageType.M1, body), [OrgId(ZVH)])
            for _ in range(4)
        ]
        item = await pol.receive(timeout=10)
        assert isinstance(item, Refusal)
        assert item.notice.reason is ReasonCode.BACKLOG_FULL
        refused = item.notice.message_id
        assert refused in sent
        await item.ack()
        received = []
        for _ in range(3):
            delivery = await zvh.receive(timeout=10)
            assert isinstance(delivery, Delivery)
            received.append(delivery.message_id)
            await delivery.ack()
        assert sorted(received) == sorted(set(sent) - {refused})  # the others are all there


async def test_full_inbound_queue_is_a_clear_error_for_the_sender(
    nats_server: NatsServer,
    partner_identities: dict[str, PartnerIdentity],
    hub_identity: PartnerIdentity,
    authority: SigningKey,
) -> None:
    """A sender whose inbound stream is at its limit (no hub reading it) gets InboundFull and
    nothing more is stored; its own stream is the only one affected."""
    base = default_policy()
    policy = base.model_copy(
        update={"limits": base.limits.model_copy(update={"max_inbound_pending": 2})}
    )
    ids = {o: partner_identities[o] for o in (POL, ZVH)}
    async with local_hub(
        ids, url=nats_server.url, policy=policy, authority=authority, hub_identity=hub_identity,
        run_hub=False,
    ) as system:  # fmt: skip
        pol = system.client(POL)
        body = example_body(MessageType.M1)
        for _ in range(2):
            await pol.send(body, example_draft(MessageType.M1, body), [OrgId(ZVH)])
        with pytest.raises(InboundFull):
            await pol.send(body, example_draft(MessageType.M1, body), [OrgId(ZVH)])
