"""End-to-end delivery state: signed receipts from recipients, and the sender's status query."""

from __future__ import annotations

import asyncio

from schakel.adapters.client import Delivery
from schakel.contracts.enums import MessageType
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.ids import MessageId, OrgId, new_message_id
from schakel.contracts.notice import DeliveryState
from schakel.harness.scenarios import GEM, OM, POL, ZVH
from schakel.hub.audit import AuditRecord, read_trail
from tests.hub.conftest import World


async def _state_after(client: object, message_id: MessageId, want: set[str]) -> DeliveryState:
    """Ask the hub until ``want`` have receipted (or give up after ten seconds)."""
    for _ in range(200):
        state: DeliveryState = await client.status(message_id)  # type: ignore[attr-defined]
        if want <= set(state.receipted_by):
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"no receipts from {want}")


async def test_receipts_reach_the_sender_and_the_hub_tracks_state(world: World) -> None:
    """accepted -> receipted per recipient; the sender sees both; others learn nothing."""
    pol = world.clients[POL]
    body = example_body(MessageType.M1)
    to = [OrgId(GEM), OrgId(ZVH)]
    message_id = await pol.send(body, example_draft(MessageType.M1, body), to)
    first = await world.clients[ZVH].receive(timeout=10)
    assert isinstance(first, Delivery)
    await first.ack()
    state = await _state_after(pol, message_id, {ZVH})
    assert state.known
    assert state.state == "accepted"
    assert state.recipients == (GEM, ZVH)
    second = await world.clients[GEM].receive(timeout=10)
    assert isinstance(second, Delivery)
    await second.ack()
    state = await _state_after(pol, message_id, {GEM, ZVH})
    assert state.state == "receipted"
    assert set(state.receipted_by) == {GEM, ZVH}
    # The sender's SDK collects the relayed, signed receipts (checked against the key log).
    assert await pol.receive(timeout=1) is None
    assert pol.receipted[message_id] == {GEM, ZVH}
    # Nobody else may ask about it, and unknown ids are just unknown.
    assert not (await world.clients[OM].status(message_id)).known
    assert not (await pol.status(MessageId(new_message_id()))).known
    assert world.hub.bus is not None
    records = [AuditRecord.model_validate_json(r) async for _, r in read_trail(world.hub.bus)]
    receipted = [
        r.recipients for r in records if r.event == "receipted" and r.message_id == message_id
    ]
    assert sorted(receipted) == [(GEM,), (ZVH,)]
