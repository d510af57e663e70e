"""The running system of the hub's tests (server, hub, partners), for the adapter's tests."""

from tests.hub.conftest import authority, hub_identity, nats_server, partner_identities, world

__all__ = ["authority", "hub_identity", "nats_server", "partner_identities", "world"]
