"""The topology a hub keeps: what it makes, and what it brings up to date."""

from __future__ import annotations

from nats.js import api

from schakel.bus import Bus, Topology
from schakel.contracts.policy import default_policy
from schakel.contracts.topology import CASES_BUCKET, MESSAGES_BUCKET
from schakel.hub.natsserver import NatsServer


async def test_buckets_of_an_earlier_version_get_direct_reads(nats_server: NatsServer) -> None:
    """Buckets made without direct gets (earlier versions) are switched to them at the next
    start, keeping what they hold; new ones are made with them."""
    async with Bus(nats_server.url, name="test") as bus:
        for bucket in (CASES_BUCKET, MESSAGES_BUCKET):
            kv = await bus.js.create_key_value(api.KeyValueConfig(bucket=bucket, history=1))
            await kv.put("kept", b"value")
        await Topology(bus, default_policy().limits).ensure()
        for bucket in (CASES_BUCKET, MESSAGES_BUCKET):
            info = await bus.js.stream_info(f"KV_{bucket}")
            assert info.config.allow_direct is True
            entry = await (await bus.kv(bucket)).get("kept")
            assert entry is not None and entry.value == b"value"
