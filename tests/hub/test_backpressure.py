"""Back-pressure, not loss: a partner's full backlog refuses new messages for it."""

from __future__ import annotations

import contextlib
from pathlib import Path

from adapters.client import Delivery, PartnerClient, Refusal
from adapters.scenarios import POL, ZVH
from contracts.enums import MessageType, ReasonCode
from contracts.examples import example_body, example_draft
from contracts.ids import OrgId
from contracts.policy import default_policy
from hub.natsserver import NatsServer
from hub.service import Hub, HubSettings, provision, registration
from keys.crypto import SigningKey
from keys.identity import PartnerIdentity


async def test_full_backlog_refuses_new_messages_and_keeps_old_ones(
    nats_server: NatsServer,
    tmp_path: Path,
    partner_identities: dict[str, PartnerIdentity],
    hub_identity: PartnerIdentity,
    authority: SigningKey,
) -> None:
    """With a limit of 3, the 4th message to an idle partner is BACKLOG_FULL; nothing is dropped."""
    policy = default_policy()
    policy = policy.model_copy(
        update={"limits": policy.limits.model_copy(update={"max_backlog": 3})}
    )
    ids = {o: partner_identities[o] for o in (POL, ZVH)}
    requests = [registration(i) for i in (*ids.values(), hub_identity)]
    await provision(nats_server.url, policy, requests, authority)
    settings = HubSettings(nats_url=nats_server.url, data_dir=tmp_path, policy=policy,
                           authority=authority.public, workers=1)  # fmt: skip
    async with Hub(settings, hub_identity), contextlib.AsyncExitStack() as stack:
        pol, zvh = [
            await stack.enter_async_context(
                PartnerClient(ids[o], nats_server.url, authority=authority.public)
            )
            for o in (POL, ZVH)
        ]
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
