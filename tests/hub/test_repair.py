"""What the hub cannot process is set aside, and what does not belong in its logs is skipped.

- An inbound message the hub fails on is retried a bounded number of times, then quarantined
  (dead-letter stream, audit record, notice to its sender); other traffic flows meanwhile.
- A foreign entry in the key log or the audit stream (only the hub's own user can write there;
  here it plays the intruder) stops nothing: every reader skips it and raises an alarm, the
  hub goes on routing and auditing, and the authority can still append to the key log.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import time
from collections.abc import Callable

from schakel.adapters.client import Delivery, PartnerClient, Refusal
from schakel.bus import append_key_event
from schakel.cli import _dead_letters
from schakel.contracts.enums import MessageType, ReasonCode
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.ids import MessageId, OrgId, case_id_for, new_message_id
from schakel.contracts.topology import AUDIT_SUBJECT, CASES_BUCKET, DLQ_STREAM, KEYLOG_SUBJECT
from schakel.harness.scenarios import POL, ZVH
from schakel.hub.audit import parse_record, read_trail, verify_chain
from schakel.keys.identity import PartnerIdentity
from schakel.keys.keylog import add_encryption_key_request, sign_request
from tests.hub.conftest import PairFactory, World


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


async def _send(client: PartnerClient, message_id: MessageId | None = None) -> str:
    body = example_body(MessageType.M1)
    draft = example_draft(MessageType.M1, body)
    return await client.send(body, draft, [OrgId(ZVH)], message_id=message_id)


async def test_message_the_hub_fails_on_is_quarantined_after_bounded_attempts(
    pair: PairFactory,
) -> None:
    """A message that makes the hub fail (here: its case record is corrupt) is tried twice,
    then parked in quarantine, audited and its sender told; the next message is routed; once
    the cause is repaired, the operator's replay routes it."""
    async with pair(inbound_attempts=2) as system:
        pol, zvh, hub = system.pol, system.zvh, system.hub
        assert hub.bus is not None
        # Storage corruption under the id the next signal will open (derived from its id).
        poisoned_id = new_message_id()
        case_id = case_id_for(poisoned_id)
        kv = await hub.bus.kv(CASES_BUCKET)
        assert await kv.create(case_id, b"not a case record") is not None
        poisoned = await _send(pol, message_id=poisoned_id)
        notice = await pol.receive(timeout=30)
        assert isinstance(notice, Refusal)
        assert notice.notice.reason is ReasonCode.PROCESSING_FAILED
        assert notice.notice.message_id == poisoned
        await notice.ack()
        healthy = await _send(pol)
        item = await zvh.receive(timeout=10)
        assert isinstance(item, Delivery)
        assert item.message_id == healthy
        await item.ack()
        info = await hub.bus.counts(DLQ_STREAM, ">")
        assert info == {f"schakel.quarantine.{POL}": 1}
        records = [parse_record(raw) async for _, raw in read_trail(hub.bus)]
        quarantined = [r for r in records if r is not None and r.event == "quarantined"]
        assert len(quarantined) == 1
        assert quarantined[0].sender == POL
        assert quarantined[0].reason is ReasonCode.PROCESSING_FAILED
        assert quarantined[0].message_id == poisoned
        assert not any(r is not None and r.event == "routed" and r.message_id == poisoned
                       for r in records)  # fmt: skip
        assert await _dead_letters(system.url, replay=False) == 1
        # The operator repairs the cause and replays it: it is routed (its id is its own).
        await kv.delete(case_id)
        assert await _dead_letters(system.url, replay=True) == 1
        item = await zvh.receive(timeout=10)
        assert isinstance(item, Delivery)
        assert item.message_id == poisoned
        await item.ack()
        # The hub did the replay (the operator's user may only ask) and recorded it.
        records = [parse_record(raw) async for _, raw in read_trail(hub.bus)]
        replayed = [r for r in records if r is not None and r.event == "replayed"]
        assert [(r.sender, r.message_id) for r in replayed] == [(POL, poisoned)]
        assert await _dead_letters(system.url, replay=False) == 0


async def test_foreign_entries_in_the_key_log_and_audit_stream_stop_nothing(
    world: World,
) -> None:
    """Junk in the key log and in the audit stream is skipped by every reader and reported;
    routing, auditing and appending to the key log go on (the documented repair)."""
    hub = world.hub
    assert hub.bus is not None
    bus = hub.bus
    pol, zvh = world.clients[POL], world.clients[ZVH]
    junk_key = await bus.publish(KEYLOG_SUBJECT, b'{"not": "a key event"}')
    junk_audit = await bus.publish(AUDIT_SUBJECT, b"\xff not an audit record")
    message_id = await _send(pol)
    item = await zvh.receive(timeout=10)
    assert isinstance(item, Delivery)
    assert item.message_id == message_id
    await item.ack()
    deadline = time.monotonic() + 10  # the delivery goes out before its audit record
    while True:
        trail = [entry async for entry in read_trail(bus)]
        records = [parse_record(raw) for _, raw in trail]
        if any(r is not None and r.message_id == message_id for r in records):
            break
        assert time.monotonic() < deadline, "the routed message was not audited"
        await asyncio.sleep(0.02)
    report = verify_chain(trail)
    assert report.ok, report
    assert report.foreign == (junk_audit,)
    for client in (pol, zvh):
        follower = client.directory_follower
        assert follower is not None
        await _until(lambda f=follower: bool(f.skipped))  # type: ignore[misc]
        assert [seq for seq, _ in follower.skipped] == [junk_key]
    # The authority appends after the junk; every reader applies it.
    assert pol.directory_follower is not None
    length = pol.directory_follower.log.length
    rotated: PartnerIdentity = pol.identity.with_new_encryption_key()
    request = sign_request(
        add_encryption_key_request(rotated, rotated.certificates[-1].body.not_before),
        rotated.signing_key,
    )
    await append_key_event(hub.bus, request, world.authority)
    await _until(lambda: pol.directory_follower.log.length == length + 1)  # type: ignore[union-attr]
    public = base64.b64encode(world.authority.public.raw).decode()
    verify = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "schakel", "audit", "verify", "--nats", world.server.url],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verify.returncode == 1, verify.stderr
    assert f"ALARM: entry at stream sequence {junk_audit}" in verify.stdout
    assert "audit chain intact" in verify.stdout
    keys = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "schakel", "keys", "verify-directory", "--authority-public", public,
         "--nats", world.server.url],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert keys.returncode == 1, keys.stderr
    assert f"ALARM: entry at stream sequence {junk_key}" in keys.stdout
    assert f"key log: {length + 1} valid events" in keys.stdout
