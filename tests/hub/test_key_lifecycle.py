"""Key lifecycle through real NATS: rotation under traffic, revocation, forgery, alarms."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest
import structlog
from structlog.testing import capture_logs

from schakel.adapters.client import Delivery, DirectoryStale, PartnerClient, Refusal
from schakel.bus import append_key_event
from schakel.contracts.canonical import canonical_json
from schakel.contracts.enums import MessageType, ReasonCode
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.ids import KeyId, OrgId
from schakel.contracts.keyevents import KeyEventRequest
from schakel.contracts.topology import KEYLOG_SUBJECT
from schakel.harness.scenarios import POL, ZVH
from schakel.hub.service import registration
from schakel.keys.crypto import SigningKey
from schakel.keys.envelope import seal
from schakel.keys.identity import PartnerIdentity
from schakel.keys.keylog import (
    add_encryption_key_request,
    countersign,
    revoke_request,
    sign_request,
)
from tests.hub.conftest import World


async def _append(world: World, request: KeyEventRequest) -> None:
    assert world.hub.bus is not None
    await append_key_event(world.hub.bus, request, world.authority)


async def _until(predicate: object, timeout: float = 5.0) -> float:
    start = time.perf_counter()
    while not predicate():  # type: ignore[operator]
        if time.perf_counter() - start > timeout:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)
    return time.perf_counter() - start


async def test_rotation_under_traffic_loses_nothing(world: World) -> None:
    """ZVH rotates its encryption key while POL keeps sending: every message opens."""
    pol, zvh = world.clients[POL], world.clients[ZVH]
    total, rotate_after = 60, 20
    sent = set()
    for n in range(total):
        if n == rotate_after:
            rotated = zvh.identity.with_new_encryption_key(now=dt.datetime.now(dt.UTC))
            zvh.update_identity(rotated)  # keep the new private key before publishing it
            request = sign_request(
                add_encryption_key_request(rotated, dt.datetime.now(dt.UTC)), rotated.signing_key
            )
            await _append(world, request)
        body = example_body(MessageType.M1)
        sent.add(await pol.send(body, example_draft(MessageType.M1, body), [OrgId(ZVH)]))
    kids = set()
    for _ in range(total):
        item = await zvh.receive(timeout=10)
        assert isinstance(item, Delivery), item
        kids.add(item.header.recipients[0].kid)
        sent.discard(item.message_id)
        await item.ack()
    assert sent == set()
    assert len(kids) == 2  # both keys were used: the switch happened during the traffic
    print(f"\nrotation under traffic: sent {total}, delivered {total}, undecryptable 0, lost 0")


async def test_revocation_takes_effect_within_seconds(world: World) -> None:
    """Revoking POL's signing key: adapters see it and the hub refuses POL, within seconds."""
    pol, zvh = world.clients[POL], world.clients[ZVH]
    kid = KeyId(pol.identity.signing_kid)
    follower = zvh.directory_follower
    assert follower is not None
    before = follower.log.length
    start = time.perf_counter()
    await _append(
        world,
        sign_request(revoke_request(OrgId(POL), kid, "compromised", dt.datetime.now(dt.UTC)), None),
    )
    appended = time.perf_counter() - start
    seen = await _until(lambda: follower.log.length > before)
    body = example_body(MessageType.M1)
    raw = seal(body, example_draft(MessageType.M1, body), sender=pol.identity,
               recipients=[world.identities[ZVH].public_record()])  # fmt: skip
    await pol.publish_raw(raw, "after-revocation")
    item = await pol.receive(timeout=10)
    hub_seen = time.perf_counter() - start
    assert isinstance(item, Refusal)
    assert item.notice.reason is ReasonCode.KEY_REVOKED
    await item.ack()
    print(
        f"\nrevocation propagation: appended {appended * 1000:.0f} ms, adapter view "
        f"{seen * 1000:.0f} ms after that, hub refusal {hub_seen * 1000:.0f} ms after revoking"
    )
    assert hub_seen < 3.0


async def test_refusals_for_revoked_and_expired_recipient_keys(world: World) -> None:
    """Envelopes to a revoked or expired encryption key are refused before routing."""
    pol, zvh = world.clients[POL], world.clients[ZVH]
    stale_record = world.identities[ZVH].public_record()
    kid = stale_record.encryption_keys[0].kid
    now = dt.datetime.now(dt.UTC)
    revoke = revoke_request(OrgId(ZVH), kid, "compromised", now)
    await _append(world, sign_request(revoke, zvh.identity.signing_key))
    await _until(lambda: pol.directory.record(OrgId(ZVH)).encryption_keys == ())
    body = example_body(MessageType.M1)
    raw = seal(
        body, example_draft(MessageType.M1, body), sender=pol.identity, recipients=[stale_record]
    )
    await pol.publish_raw(raw, "to-revoked")
    item = await pol.receive(timeout=10)
    assert isinstance(item, Refusal)
    assert item.notice.reason is ReasonCode.RECIPIENT_KEY_STALE
    await item.ack()
    # An organisation whose only encryption key has expired: nobody can send to it.
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    expired = PartnerIdentity.generate(
        OrgId("GEM.zeedorp"), now=past, validity=dt.timedelta(days=1)
    )
    await _append(world, registration(expired, past))
    await _until(lambda: OrgId("GEM.zeedorp") in pol.directory)
    raw = seal(body, example_draft(MessageType.M1, body), sender=pol.identity,
               recipients=[expired.public_record()], now=past + dt.timedelta(hours=1))  # fmt: skip
    await pol.publish_raw(raw, "to-expired")
    item = await pol.receive(timeout=10)
    assert isinstance(item, Refusal)
    assert item.notice.reason is ReasonCode.RECIPIENT_KEY_STALE
    await item.ack()


async def test_forged_directory_event_is_skipped_named_and_the_log_goes_on(world: World) -> None:
    """An event not countersigned by the authority is skipped by every reader and named in an
    alarm; it changes no key, and the authority can still append after it (the repair)."""
    assert world.hub.bus is not None
    pol = world.clients[POL]
    evil = pol.identity.with_new_encryption_key()
    follower = world.clients[ZVH].directory_follower
    assert follower is not None
    length = follower.log.length
    forged = countersign(
        sign_request(add_encryption_key_request(evil, dt.datetime.now(dt.UTC)), evil.signing_key),
        index=length, prev=follower.log.head, authority=SigningKey.generate(),
    )  # fmt: skip
    await world.hub.bus.publish(KEYLOG_SUBJECT, canonical_json(forged))
    await _until(lambda: bool(follower.skipped))
    [(_, problem)] = follower.skipped
    assert problem.index == length
    assert "authority" in problem.reason
    kids = {c.kid for c in world.clients[ZVH].directory.record(OrgId(POL)).encryption_keys}
    assert evil.certificates[-1].kid not in kids
    # The same key, requested by POL and countersigned by the authority, applies after it.
    await _append(
        world,
        sign_request(add_encryption_key_request(evil, dt.datetime.now(dt.UTC)), evil.signing_key),
    )
    await _until(lambda: follower.log.length == length + 1)
    kids = {c.kid for c in world.clients[ZVH].directory.record(OrgId(POL)).encryption_keys}
    assert evil.certificates[-1].kid in kids
    assert len(follower.skipped) == 1


async def test_self_monitoring_alarm_fires(world: World) -> None:
    """A key appearing under our organisation that we did not create raises an alarm."""
    pol = world.clients[POL]
    stolen = world.identities[POL].with_new_encryption_key()  # someone with POL's signing key
    await _append(world, sign_request(
        add_encryption_key_request(stolen, dt.datetime.now(dt.UTC)), stolen.signing_key
    ))  # fmt: skip
    await _until(lambda: bool(pol.alarms))
    assert "did not create" in pol.alarms[0]
    assert world.clients[ZVH].alarms == []


async def test_adapter_fails_closed_when_directory_is_stale(world: World) -> None:
    """An adapter whose directory view is older than its bound refuses to send."""
    client = PartnerClient(
        world.identities[POL],
        world.server.url,
        authority=world.authority.public,
        max_directory_age=dt.timedelta(seconds=0.5),
        resync_every=3600,
    )
    async with client:
        body = example_body(MessageType.M1)
        await client.send(body, example_draft(MessageType.M1, body), [OrgId(ZVH)])
        await asyncio.sleep(0.7)
        with pytest.raises(DirectoryStale):
            await client.send(body, example_draft(MessageType.M1, body), [OrgId(ZVH)])


async def test_hub_warns_before_a_key_expires(world: World) -> None:
    """A partner whose only encryption key expires soon is logged as expiring by the hub."""
    soon = PartnerIdentity.generate(OrgId("LSE.tijdelijk"), validity=dt.timedelta(days=5))
    with capture_logs() as logs:
        await _append(world, registration(soon))
        await _until(lambda: OrgId("LSE.tijdelijk") in world.hub.directory)
        await asyncio.sleep(0.05)
    warnings = [e for e in logs if e["event"] == "key_expiring" and e["org"] == "LSE.tijdelijk"]
    assert warnings
    assert warnings[0]["days_left"] in (4, 5)
    structlog.reset_defaults()
