"""Exactly-once effect at the back office: the adapter's seen-set survives a restart."""

from __future__ import annotations

from pathlib import Path

from schakel.adapters.client import Delivery, PartnerClient
from schakel.contracts.enums import MessageType
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.ids import OrgId
from schakel.harness.scenarios import POL, ZVH
from tests.hub.conftest import World


async def test_redelivery_after_adapter_restart_is_suppressed(world: World, tmp_path: Path) -> None:
    """Processed but not acknowledged before a crash: the back office does not get it again."""
    body = example_body(MessageType.M1)
    await world.clients[POL].send(body, example_draft(MessageType.M1, body), [OrgId(ZVH)])
    await world.clients[ZVH].__aexit__(None, None, None)  # the fixture's ZVH adapter goes away
    state = tmp_path / "state"
    authority = world.authority.public
    async with PartnerClient(world.identities[ZVH], world.server.url, authority=authority,
                             state_dir=state) as first:  # fmt: skip
        item = await first.receive(timeout=10)
        assert isinstance(item, Delivery)
        # The back office processed it; the process dies after recording, before NATS heard.
        item._seen.add(item.message_id, item.header.expires_at)
        await item._msg.nak()
    async with PartnerClient(world.identities[ZVH], world.server.url, authority=authority,
                             state_dir=state) as second:  # fmt: skip
        assert await second.receive(timeout=3) is None
        assert second.duplicates_suppressed == 1
