"""Undelivered messages expire, are removed, and their sender is told."""

from __future__ import annotations

import contextlib
import datetime as dt
from pathlib import Path

from adapters.client import PartnerClient, Refusal
from adapters.scenarios import POL, ZVH
from contracts.enums import MessageType, ReasonCode
from contracts.examples import example_body, example_draft
from contracts.ids import OrgId
from contracts.policy import default_policy
from hub.audit import AuditRecord, read_trail
from hub.natsserver import NatsServer
from hub.service import Hub, HubSettings, provision, registration
from keys.crypto import SigningKey
from keys.identity import PartnerIdentity


async def test_expired_undelivered_message_is_removed_and_sender_told(
    nats_server: NatsServer,
    tmp_path: Path,
    partner_identities: dict[str, PartnerIdentity],
    hub_identity: PartnerIdentity,
    authority: SigningKey,
) -> None:
    """A message nobody took before its expiry disappears from the queue; the sender hears."""
    ids = {o: partner_identities[o] for o in (POL, ZVH)}
    requests = [registration(i) for i in (*ids.values(), hub_identity)]
    await provision(nats_server.url, default_policy(), requests, authority)
    settings = HubSettings(nats_url=nats_server.url, data_dir=tmp_path, expiry_sweep=0.3,
                           authority=authority.public)  # fmt: skip
    async with Hub(settings, hub_identity) as hub, contextlib.AsyncExitStack() as stack:
        pol, zvh = [
            await stack.enter_async_context(
                PartnerClient(ids[o], nats_server.url, authority=authority.public)
            )
            for o in (POL, ZVH)
        ]
        body = example_body(MessageType.M1)
        short = example_draft(MessageType.M1, body).model_copy(
            update={"lifetime": dt.timedelta(seconds=2)}
        )
        message_id = await pol.send(body, short, [OrgId(ZVH)])
        notice = await pol.receive(timeout=10)  # ZVH's back office is not taking anything
        assert isinstance(notice, Refusal)
        assert notice.notice.reason is ReasonCode.UNDELIVERED_EXPIRED
        assert notice.notice.message_id == message_id
        await notice.ack()
        assert await zvh.receive(timeout=1) is None  # removed, not delivered late
        assert (await pol.status(message_id)).expired_for == (ZVH,)
        assert hub.transport is not None
        records = [
            AuditRecord.model_validate_json(r) async for _, r in read_trail(hub.transport.js)
        ]
        assert [(r.message_id, r.recipients) for r in records if r.event == "expired"] == [
            (message_id, (ZVH,))
        ]
