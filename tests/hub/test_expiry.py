"""Undelivered messages expire, are removed, and their sender is told."""

from __future__ import annotations

import datetime as dt

from schakel.adapters.client import Refusal
from schakel.contracts.enums import MessageType, ReasonCode
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.ids import OrgId
from schakel.harness.scenarios import ZVH
from schakel.hub.audit import AuditRecord, read_trail
from tests.hub.conftest import PairFactory


async def test_expired_undelivered_message_is_removed_and_sender_told(pair: PairFactory) -> None:
    """A message nobody took before its expiry disappears from the queue; the sender hears."""
    async with pair(expiry_sweep=0.3) as system:
        pol, zvh, hub = system.pol, system.zvh, system.hub
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
        assert hub.bus is not None
        records = [AuditRecord.model_validate_json(r) async for _, r in read_trail(hub.bus)]
        assert [(r.message_id, r.recipients) for r in records if r.event == "expired"] == [
            (message_id, (ZVH,))
        ]
