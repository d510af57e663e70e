"""Fixtures for hub tests: a real nats-server on a free port, a hub, and partner clients."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from schakel.adapters.client import PartnerClient
from schakel.adapters.scenarios import PARTNERS
from schakel.contracts.ids import OrgId
from schakel.contracts.policy import Policy, default_policy
from schakel.hub.natsserver import NatsServer
from schakel.hub.service import Hub, HubSettings, provision, registration
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
    """A real nats-server with JetStream on a free loopback port."""
    async with NatsServer(tmp_path / "nats") as server:
        yield server


@pytest.fixture
async def world(
    nats_server: NatsServer,
    tmp_path: Path,
    partner_identities: dict[str, PartnerIdentity],
    hub_identity: PartnerIdentity,
    authority: SigningKey,
) -> AsyncIterator[World]:
    """A provisioned system with a hub and every partner connected."""
    requests = [registration(i) for i in (*partner_identities.values(), hub_identity)]
    await provision(nats_server.url, default_policy(), requests, authority)
    settings = HubSettings(
        nats_url=nats_server.url, data_dir=tmp_path, workers=4, authority=authority.public
    )
    async with Hub(settings, hub_identity) as hub, contextlib.AsyncExitStack() as stack:
        clients = {
            org: await stack.enter_async_context(
                PartnerClient(identity, nats_server.url, authority=authority.public)
            )
            for org, identity in partner_identities.items()
        }
        yield World(nats_server, hub, partner_identities, clients, tmp_path, authority)


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
        policy = policy or default_policy()
        ids = [partner_identities[o] for o in ("POL.west", "ZVH.west")]
        requests = [registration(i) for i in (*ids, hub_identity)]
        redelivery = {k: v for k, v in settings.items() if k == "redelivery"}
        await provision(nats_server.url, policy, requests, authority, **redelivery)
        config = HubSettings(nats_url=nats_server.url, data_dir=tmp_path, policy=policy,
                             authority=authority.public, **settings)  # fmt: skip
        async with Hub(config, hub_identity) as hub, contextlib.AsyncExitStack() as stack:
            pol, zvh = [
                await stack.enter_async_context(
                    PartnerClient(i, nats_server.url, authority=authority.public)
                )
                for i in ids
            ]
            yield Pair(hub, pol, zvh, nats_server.url)

    return start
