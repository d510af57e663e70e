"""Bad input is refused with a reason code and recorded; the hub keeps serving and leaks nothing."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from pathlib import Path

import pytest
import structlog

from schakel.adapters.client import Delivery, PartnerClient, Refusal
from schakel.contracts.enums import MessageType, ReasonCode
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.ids import CaseId, MessageId, OrgId, case_id_for, new_message_id
from schakel.contracts.policy import default_policy
from schakel.contracts.topology import CASES_BUCKET, MESSAGES_BUCKET
from schakel.harness.scenarios import GEM, KMAR, OM, POL, RVDK, ZVH
from schakel.harness.simulation import ScenarioRunner, Step
from schakel.hub.audit import AuditRecord, read_trail, verify_chain
from schakel.hub.logconfig import configure_logging
from schakel.keys.envelope import seal, split_envelope
from schakel.keys.identity import PartnerIdentity
from tests.hub.conftest import World

CANARY = "CANARY-7f3a9c1e"


async def _refusal(client: PartnerClient) -> Refusal:
    item = await client.receive(timeout=10)
    assert isinstance(item, Refusal), item
    await item.ack()
    return item


async def _signal(world: World, *, canary: str = "") -> tuple[MessageId, CaseId]:
    body = example_body(MessageType.M1, canary=canary)
    draft = example_draft(MessageType.M1, body)
    message_id = await world.clients[POL].send(body, draft, [OrgId(ZVH)])
    item = await world.clients[ZVH].receive(timeout=10)
    assert isinstance(item, Delivery)
    assert item.message_id == message_id
    assert canary in item.body.model_dump_json()
    await item.ack()
    assert item.header.case_id == case_id_for(message_id)  # a signal opens its own case
    return message_id, case_id_for(message_id)


async def _audit(world: World) -> list[AuditRecord]:
    assert world.hub.bus is not None
    return [AuditRecord.model_validate_json(raw) async for _, raw in read_trail(world.hub.bus)]


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda raw: b"not an envelope at all", ReasonCode.MALFORMED),
        (lambda raw: raw[:-10], ReasonCode.MALFORMED),
        (lambda raw: raw[:7] + b"\x09" + raw[8:], ReasonCode.UNSUPPORTED_FORMAT),
        (lambda raw: raw[:-1] + bytes([raw[-1] ^ 1]), ReasonCode.BAD_SIGNATURE),
        (lambda raw: b"\x00" * 900_000, ReasonCode.TOO_LARGE),
    ],
    ids=["garbage", "truncated", "unknown-version", "forged-signature", "oversized"],
)
async def test_bad_envelopes_refused_and_hub_keeps_serving(
    world: World, mangle: object, reason: ReasonCode
) -> None:
    """Malformed, forged and oversized input gets its reason code; the next message still flows."""
    client = world.clients[POL]
    body = example_body(MessageType.M1)
    raw = seal(body, example_draft(MessageType.M1, body), sender=client.identity,
               recipients=[world.identities[ZVH].public_record()])  # fmt: skip
    hint = new_message_id()
    await client.publish_raw(mangle(raw), hint)  # type: ignore[operator]
    notice = (await _refusal(client)).notice
    assert notice.reason == reason
    assert notice.message_id in (hint, None) or notice.message_id
    await _signal(world)  # the hub is still serving
    refused = [r for r in await _audit(world) if r.event == "refused"]
    assert refused[-1].reason == reason


async def test_replayed_envelope_refused(world: World) -> None:
    """An envelope sent again with the same message id is refused as a duplicate."""
    client = world.clients[POL]
    body = example_body(MessageType.M1)
    raw = seal(body, example_draft(MessageType.M1, body), sender=client.identity,
               recipients=[world.identities[ZVH].public_record()])  # fmt: skip
    message_id = json.loads(split_envelope(raw)[0])["message_id"]
    await client.publish_raw(raw, message_id)
    delivered = await world.clients[ZVH].receive(timeout=10)
    assert isinstance(delivered, Delivery)
    await delivered.ack()
    # A replay a while later (outside JetStream's own duplicate window, which a different
    # Nats-Msg-Id simulates) must be caught by the hub itself.
    await client.publish_raw(raw, "replay-" + message_id)
    assert (await _refusal(client)).notice.reason == ReasonCode.DUPLICATE
    assert await world.clients[ZVH].receive(timeout=0.5) is None


async def test_expired_and_future_envelopes_refused(world: World) -> None:
    """Envelopes past their expiry, or created in the future, are refused with their codes."""
    client = world.clients[POL]
    zvh = [world.identities[ZVH].public_record()]
    body = example_body(MessageType.M1)
    now = dt.datetime.now(dt.UTC)
    old = example_draft(MessageType.M1, body).model_copy(
        update={"lifetime": dt.timedelta(seconds=5)}
    )
    raw = seal(body, old, sender=client.identity, recipients=zvh, now=now - dt.timedelta(minutes=1))
    await client.publish_raw(raw, "x")
    assert (await _refusal(client)).notice.reason == ReasonCode.EXPIRED
    raw = seal(body, example_draft(MessageType.M1, body), sender=client.identity, recipients=zvh,
               now=now + dt.timedelta(hours=1))  # fmt: skip
    await client.publish_raw(raw, "y")
    assert (await _refusal(client)).notice.reason == ReasonCode.NOT_YET_VALID
    long = example_draft(MessageType.M1, body).model_copy(
        update={"lifetime": dt.timedelta(days=90)}
    )
    await client.publish_raw(seal(body, long, sender=client.identity, recipients=zvh), "z")
    assert (await _refusal(client)).notice.reason == ReasonCode.LIFETIME_TOO_LONG


async def test_sender_bound_to_its_subject(world: World) -> None:
    """A partner cannot publish a message signed by another partner on its own subject."""
    body = example_body(MessageType.M1)
    raw = seal(body, example_draft(MessageType.M1, body), sender=world.identities[OM],
               recipients=[world.identities[ZVH].public_record()])  # fmt: skip
    await world.clients[POL].publish_raw(raw, "m")
    assert (await _refusal(world.clients[POL])).notice.reason == ReasonCode.SENDER_MISMATCH


async def test_unknown_signer_and_stale_recipient_key(world: World) -> None:
    """A signing key not in the directory, or a recipient key it does not know, is refused."""
    client = world.clients[POL]
    stranger = PartnerIdentity.generate(OrgId(POL))
    body = example_body(MessageType.M1)
    raw = seal(body, example_draft(MessageType.M1, body), sender=stranger,
               recipients=[world.identities[ZVH].public_record()])  # fmt: skip
    await client.publish_raw(raw, "a")
    assert (await _refusal(client)).notice.reason == ReasonCode.UNKNOWN_KEY
    ghost_zvh = PartnerIdentity.generate(OrgId(ZVH)).public_record()
    raw = seal(body, example_draft(MessageType.M1, body), sender=client.identity,
               recipients=[ghost_zvh])  # fmt: skip
    await client.publish_raw(raw, "b")
    assert (await _refusal(client)).notice.reason == ReasonCode.RECIPIENT_KEY_STALE


async def test_no_access_looks_like_no_such_case(world: World) -> None:
    """A partner without access gets exactly the same answer for a real and an unknown case."""
    runner = ScenarioRunner(world.clients, default_policy())
    await runner.run([Step(POL, MessageType.M1, (GEM, ZVH))])
    real = await runner.play(Step(KMAR, MessageType.M4, (ZVH,), expect=ReasonCode.NOT_PERMITTED))
    ghost = await runner.play(
        Step(KMAR, MessageType.M4, (ZVH,), case="GHOST", expect=ReasonCode.NOT_PERMITTED)
    )
    assert (real.outcome, real.text) == (ghost.outcome, ghost.text)
    records = {r.message_id: r for r in await _audit(world)}
    assert records[real.message_id].case_id == runner.case_id("A")  # the attempt is recorded
    assert records[ghost.message_id].reason == ReasonCode.NOT_PERMITTED


async def test_canary_appears_nowhere_but_at_the_recipient(world: World, tmp_path: Path) -> None:
    """A plaintext canary reaches the recipient and nothing else: logs, audit, KV, disk."""
    log = io.StringIO()
    configure_logging(json=True, stream=log, level=logging.DEBUG)  # the most detailed lines
    try:
        _, case_id = await _signal(world, canary=CANARY)
        runner = ScenarioRunner(world.clients, default_policy())
        await runner.run([Step(RVDK, MessageType.M1, (ZVH,))])
    finally:
        structlog.reset_defaults()
    assert "message_routed" in log.getvalue()
    assert CANARY not in log.getvalue()
    for record in await _audit(world):
        assert CANARY not in record.model_dump_json()
    assert world.hub.bus is not None
    for bucket in (CASES_BUCKET, MESSAGES_BUCKET):
        kv = await world.hub.bus.kv(bucket)
        for key in await kv.keys():
            entry = await kv.get(key)
            assert entry is not None
            assert CANARY.encode() not in entry.value
            assert b"Noor" not in entry.value
    assert case_id in await (await world.hub.bus.kv(CASES_BUCKET)).keys()
    await world.hub.bus.flush()
    stored = [p for p in (world.server.data_dir / "jetstream").rglob("*") if p.is_file()]
    assert stored, "the NATS store should hold files"
    for path in stored:
        data = path.read_bytes()
        assert CANARY.encode() not in data, path
        assert b"van Fictief" not in data, path


async def test_audit_verify_names_the_first_broken_link(world: World) -> None:
    """The chain verifies, and any altered, removed or reordered record is pinpointed."""
    await _signal(world)
    await _signal(world)
    assert world.hub.bus is not None
    trail = [item async for item in read_trail(world.hub.bus)]
    assert verify_chain(trail).ok
    assert len(trail) >= 2
    seq, raw = trail[0]
    altered = raw.replace(b'"routed"', b'"refused"')
    report = verify_chain([(seq, altered), *trail[1:]])
    assert report.broken_at == seq
    assert verify_chain(trail[1:]).broken_at == trail[1][0]
    assert verify_chain([trail[1], trail[0], *trail[2:]]).broken_at == trail[1][0]


async def test_recipient_rejects_body_breaking_contract(world: World) -> None:
    """A validly signed message whose body breaks its contract is rejected by the recipient."""
    from schakel.keys.envelope import assemble

    runner = ScenarioRunner(world.clients, default_policy())
    await runner.run([Step(RVDK, MessageType.M1, (ZVH,))])
    zvh = world.clients[ZVH]
    body = example_body(MessageType.M2)
    good = seal(body, example_draft(MessageType.M2, body, case_id=runner.case_id("A")),
                sender=zvh.identity, recipients=[world.identities[RVDK].public_record()],
                content_key=b"\x01" * 32)  # fmt: skip
    header, _, _ = split_envelope(good)
    bad = assemble(header, b'{"status":"ONTVANGEN","besluit":"OPSCHALEN"}',
                    content_key=b"\x01" * 32, nonce=b"\x02" * 24,
                    signing_key=zvh.identity.signing_key)  # fmt: skip
    await zvh.publish_raw(bad, json.loads(header)["message_id"])
    item = await world.clients[RVDK].receive(timeout=10)
    assert item is not None
    assert type(item).__name__ == "Rejected"
    assert "extra_forbidden" in item.reason  # type: ignore[union-attr]
