"""The partner registry as every hub reads it: editions the directory authority signs,
published while hubs run, taken at once, never rolled back, never forged."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from schakel.adapters.client import Delivery, PartnerClient
from schakel.bus import TransportError
from schakel.bus.topology import MAX_REGISTRY_BYTES
from schakel.contracts.canonical import canonical_json
from schakel.contracts.clock import system_clock
from schakel.contracts.enums import MessageType
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.ids import OrgId
from schakel.contracts.topology import REGISTRY_SUBJECT, inbound_stream
from schakel.hub.registry import (
    Region,
    Registry,
    default_registry,
    newest_edition,
    publish_registry,
    sign_registry,
)
from schakel.hub.service import register, registration
from schakel.keys.crypto import SigningKey
from schakel.keys.identity import PartnerIdentity
from tests.hub.conftest import World

NEWCOMER = OrgId("GEM.nieuwdorp")
ZVH = OrgId("ZVH.west")


def with_newcomer() -> Registry:
    """The example registry with one more gemeente in region west."""
    registry = default_registry()
    west = registry.regions["west"]
    grown = Region(gemeenten=west.gemeenten | {NEWCOMER}, zvh=west.zvh, pol=west.pol, om=west.om)
    return Registry(regions={**registry.regions, "west": grown}, national=registry.national)


async def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Until ``condition`` holds (checked every 20 ms), or fail."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_new_partner_talks_without_a_hub_restart(world: World) -> None:
    """Publish a registry edition naming a new gemeente, register its keys (as the security
    officer does: key log only, no topology rights): the running hub takes the edition, makes
    the gemeente's streams and consumer, and routes its signal to the ZVH."""
    hub = world.hub
    assert hub.bus is not None
    edition = await publish_registry(hub.bus, with_newcomer(), world.authority, system_clock())
    assert edition.version == 1
    await wait_for(lambda: hub.registry_version == 1)
    identity = PartnerIdentity.generate(NEWCOMER)
    assert await register(hub.bus, [registration(identity)], world.authority) == []
    stream = inbound_stream(NEWCOMER)
    for _ in range(1000):
        if await hub.bus.exists(stream):
            break
        await asyncio.sleep(0.02)
    assert await hub.bus.exists(stream)
    async with PartnerClient(identity, world.server.url, authority=world.authority.public) as gem:
        body = example_body(MessageType.M1)
        message_id = await gem.send(body, example_draft(MessageType.M1, body), [ZVH])
        item = await world.clients[ZVH].receive(timeout=30)
        assert isinstance(item, Delivery)
        assert (item.message_id, item.header.sender.org) == (message_id, NEWCOMER)
        await item.ack()


async def test_an_edition_the_authority_did_not_sign_is_skipped(world: World) -> None:
    """Whoever can write to the stream but lacks the authority's key changes no kern: a forged
    edition (another key, a higher version) is skipped; so is an old edition appended again
    (a rollback); the hub keeps the newest genuine one."""
    hub = world.hub
    assert hub.bus is not None
    bus = hub.bus
    first = await publish_registry(bus, default_registry(), world.authority, system_clock())
    second = await publish_registry(bus, with_newcomer(), world.authority, system_clock())
    assert (first.version, second.version) == (1, 2)
    await wait_for(lambda: hub.registry_version == 2)
    forged = sign_registry(default_registry(), 99, SigningKey.generate(), system_clock())
    old = sign_registry(default_registry(), 1, world.authority, system_clock())
    for entry in (forged, old):
        await bus.publish(REGISTRY_SUBJECT, canonical_json(entry))
    await bus.publish(REGISTRY_SUBJECT, b"{" * 10_000)  # junk, deep
    third = await publish_registry(bus, default_registry(), world.authority, system_clock())
    assert third.version == 3  # the publisher, too, counts from the newest genuine edition
    await wait_for(lambda: hub.registry_version == 3)
    assert NEWCOMER not in hub_router_partners(world)


def hub_router_partners(world: World) -> frozenset[OrgId]:
    """The organisations the running hub's router knows from the registry."""
    assert world.hub.router is not None
    return world.hub.router.registry.partners()


async def test_a_flood_of_old_editions_rolls_nothing_back(world: World) -> None:
    """The stream never drops an edition, so appending an old signed edition again and again
    (the security officer's NATS user can) leaves the newest genuine one in place for every
    reader, also one starting afresh (a restarted hub, `registry show`), and each copy is
    reported; an entry larger than an edition can be is refused by the stream itself."""
    hub = world.hub
    assert hub.bus is not None
    bus = hub.bus
    await publish_registry(bus, default_registry(), world.authority, system_clock())
    old = canonical_json(sign_registry(default_registry(), 1, world.authority, system_clock()))
    await publish_registry(bus, with_newcomer(), world.authority, system_clock())
    for _ in range(150):
        await bus.publish(REGISTRY_SUBJECT, old)
    with pytest.raises(TransportError):
        await bus.publish(REGISTRY_SUBJECT, b" " * (MAX_REGISTRY_BYTES + 1))
    newest, _, skipped = await newest_edition(bus, world.authority.public)
    assert newest is not None and newest.version == 2
    assert skipped == 150
    assert NEWCOMER in newest.registry.partners()
