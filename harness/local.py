"""``local_hub``: a whole Schakel on this machine, for the demo, the benchmark and the tests.

An embedded ``nats-server`` (or one you name), the topology provisioned, the partners' and the
hub's keys registered in the key log by a directory authority, a hub running in this process
(or not, when the caller runs hub processes itself) and a connected SDK client per partner.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schakel.adapters.client import PartnerClient
from schakel.contracts.clock import Clock, system_clock
from schakel.contracts.ids import OrgId
from schakel.contracts.policy import Policy, default_policy
from schakel.hub.natsserver import NatsServer
from schakel.hub.service import Hub, provision, registration
from schakel.hub.settings import HubSettings
from schakel.keys.crypto import SigningKey
from schakel.keys.identity import PartnerIdentity

__all__ = ["LocalHub", "local_hub"]

# Settings that shape the streams and consumers: provisioning uses them too.
_TOPOLOGY_SETTINGS = ("ack_wait", "redelivery", "replicas")


@dataclass
class LocalHub:
    """A running local system."""

    url: str
    policy: Policy
    authority: SigningKey
    hub_identity: PartnerIdentity
    identities: dict[str, PartnerIdentity]
    data_dir: Path
    server: NatsServer | None = None
    hub: Hub | None = None
    clients: dict[str, PartnerClient] = field(default_factory=dict)

    def client(self, org: str) -> PartnerClient:
        """The connected client of ``org``."""
        return self.clients[org]


@contextlib.asynccontextmanager
async def local_hub(
    partners: Iterable[str] | Mapping[str, PartnerIdentity],
    *,
    url: str | None = None,
    data_dir: Path | None = None,
    policy: Policy | None = None,
    authority: SigningKey | None = None,
    hub_identity: PartnerIdentity | None = None,
    run_hub: bool = True,
    connect: bool = True,
    receipts: bool = True,
    clock: Clock = system_clock,
    **settings: Any,
) -> AsyncIterator[LocalHub]:
    """Start a local Schakel and stop it on exit.

    ``partners`` are organisation ids (identities are generated) or ready identities;
    ``url`` is an existing server (else one is embedded under ``data_dir``, a temporary
    directory when not given); ``settings`` are :class:`HubSettings` fields. With
    ``run_hub=False`` the caller runs the hub (e.g. as processes); with ``connect=False`` no
    partner client is connected; ``receipts`` is the clients' setting; ``clock`` is every
    component's (hub, clients, registrations).
    """
    policy = policy or default_policy()
    authority = authority or SigningKey.generate()
    hub_identity = hub_identity or PartnerIdentity.generate(OrgId("HUB.local"))
    identities: dict[str, PartnerIdentity] = {
        OrgId(org): identity
        for org, identity in (
            partners.items()
            if isinstance(partners, Mapping)
            else ((org, PartnerIdentity.generate(OrgId(org))) for org in partners)
        )
    }
    async with contextlib.AsyncExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="schakel-")))
        server = None
        if url is None:
            server = await stack.enter_async_context(NatsServer(data_dir / "nats"))
            url = server.url
        now = clock()
        requests = [registration(i, now) for i in (*identities.values(), hub_identity)]
        topology = {k: v for k, v in settings.items() if k in _TOPOLOGY_SETTINGS}
        await provision(url, policy, requests, authority, **topology)
        system = LocalHub(url, policy, authority, hub_identity, identities, data_dir, server)
        if run_hub:
            config = HubSettings(
                nats_url=url, data_dir=data_dir, policy=policy, authority=authority.public,
                clock=clock, **settings,
            )  # fmt: skip
            system.hub = await stack.enter_async_context(Hub(config, hub_identity))
        if connect:
            for org, identity in identities.items():
                system.clients[org] = await stack.enter_async_context(
                    PartnerClient(
                        identity, url, authority=authority.public, receipts=receipts, clock=clock
                    )
                )
        yield system
