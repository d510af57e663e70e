"""Fixtures for hub tests: a real nats-server on a free port, a hub, and partner clients."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from schakel.adapters.client import PartnerClient
from schakel.bus import stop
from schakel.contracts.ids import OrgId
from schakel.contracts.policy import Policy
from schakel.harness.local import local_hub
from schakel.harness.scenarios import PARTNERS
from schakel.hub.natsserver import NatsServer
from schakel.hub.service import Hub
from schakel.keys.crypto import SigningKey
from schakel.keys.identity import PartnerIdentity

HUB_ORG = OrgId("HUB.test")


@dataclass
class World:
    """A running system: server, hub, identities and connected partner clients."""

    server: NatsServer
    hub: Hub
    identities: dict[str, PartnerIdentity]
    clients: dict[str, PartnerClient]
    data_dir: Path
    authority: SigningKey


@pytest.fixture(scope="session")
def partner_identities() -> dict[str, PartnerIdentity]:
    """Identities of all simulated partners (generated once per test session)."""
    yesterday = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    return {org: PartnerIdentity.generate(OrgId(org), now=yesterday) for org in PARTNERS}


@pytest.fixture(scope="session")
def hub_identity() -> PartnerIdentity:
    """The hub's own identity (signs refusal notices)."""
    return PartnerIdentity.generate(HUB_ORG)


@pytest.fixture(scope="session")
def authority() -> SigningKey:
    """The directory authority's signing key (the ZVH security officer's)."""
    return SigningKey.generate()


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    """A real nats-server with JetStream on a free loopback port. Killed at the end: what it
    stored is thrown away, and a graceful stop writes every consumer's state first (about
    0.4 s of a test's teardown)."""
    server = NatsServer(tmp_path / "nats")
    await server.start()
    try:
        yield server
    finally:
        await server.stop(kill=True)


@contextlib.asynccontextmanager
async def torn_down_within(
    system: contextlib.AbstractAsyncContextManager[Any], seconds: float = 60.0
) -> AsyncIterator[Any]:
    """Enter ``system``; on exit give its teardown ``seconds``. If that is not enough, every
    task's stack goes to the real stderr (pytest would swallow it) and the teardown is
    cancelled: a hang costs a minute and leaves the clue, not five minutes and a bare
    "Timeout" (two CI runs hung so, before :func:`schakel.bus.stop`)."""
    stack = contextlib.AsyncExitStack()
    entered = await stack.enter_async_context(system)
    try:
        yield entered
    finally:
        closing = asyncio.ensure_future(stack.aclose())
        done, _ = await asyncio.wait({closing}, timeout=seconds)
        out = sys.__stderr__
        if not done and out is not None:
            out.write(f"\nTEARDOWN HUNG ({os.environ.get('PYTEST_CURRENT_TEST')}): tasks\n")
            for task in asyncio.all_tasks():
                task.print_stack(file=out)
        if not done:
            await stop(closing)
            pytest.fail(f"the system's teardown took over {seconds} s (stacks on stderr)")
        closing.result()


@pytest.fixture
async def world(
    nats_server: NatsServer,
    tmp_path: Path,
    partner_identities: dict[str, PartnerIdentity],
    hub_identity: PartnerIdentity,
    authority: SigningKey,
) -> AsyncIterator[World]:
    """A provisioned system with a hub and every partner connected."""
    async with world_of(nats_server, tmp_path, partner_identities, hub_identity,
                        authority) as running:  # fmt: skip
        yield running


@contextlib.asynccontextmanager
async def world_of(
    server: NatsServer,
    tmp_path: Path,
    identities: dict[str, PartnerIdentity],
    hub_identity: PartnerIdentity,
    authority: SigningKey,
    **settings: Any,
) -> AsyncIterator[World]:
    """The ``world`` fixture's system, with hub ``settings`` of the caller's (torn down
    within 60 s)."""
    async with torn_down_within(local_hub(
        identities, url=server.url, data_dir=tmp_path, authority=authority,
        hub_identity=hub_identity, **settings,
    )) as system:  # fmt: skip
        assert system.hub is not None
        yield World(server, system.hub, identities, system.clients, tmp_path, authority)


@dataclass
class Pair:
    """A hub with its own settings, and one sender (POL) and one recipient (ZVH)."""

    hub: Hub
    pol: PartnerClient
    zvh: PartnerClient
    url: str


PairFactory = Callable[..., contextlib.AbstractAsyncContextManager[Pair]]


@pytest.fixture
def pair(
    nats_server: NatsServer,
    tmp_path: Path,
    partner_identities: dict[str, PartnerIdentity],
    hub_identity: PartnerIdentity,
    authority: SigningKey,
) -> PairFactory:
    """Start a hub with the given settings (and policy) plus POL and ZVH clients."""

    @contextlib.asynccontextmanager
    async def start(policy: Policy | None = None, **settings: Any) -> AsyncIterator[Pair]:
        ids = {o: partner_identities[o] for o in ("POL.west", "ZVH.west")}
        async with local_hub(
            ids, url=nats_server.url, data_dir=tmp_path, policy=policy, authority=authority,
            hub_identity=hub_identity, **settings,
        ) as system:  # fmt: skip
            assert system.hub is not None
            yield Pair(system.hub, system.client("POL.west"), system.client("ZVH.west"),
                       system.url)  # fmt: skip

    return start
