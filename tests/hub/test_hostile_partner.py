"""A hostile partner with its own real credentials, against a real hub process.

The server runs the configuration ``schakel nats-config`` generates (accounts, per-partner
users); the hub runs as its own process with its own NKey; the attacker is ``POL.west`` using
its own seed, and ``OM.west`` and ``ZVH.west`` are the victims who keep exchanging traffic.
Each test attacks a class, not an instance, prints attempted / denied / leaked, and asserts
that no other partner's message was lost, delayed beyond a stated bound, or revealed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from pydantic import SecretStr

from schakel.adapters.client import Delivery, PartnerClient, Refusal, Rejected
from schakel.bus import Bus, Credentials
from schakel.contracts.enums import MessageType, ReasonCode
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.ids import MessageId, OrgId
from schakel.contracts.notice import RECEIPT_LABEL, Receipt
from schakel.contracts.policy import default_policy, default_policy_text, with_limits
from schakel.contracts.topology import (
    AUDIT_STREAM,
    AUDIT_SUBJECT,
    CASES_BUCKET,
    DLQ_PREFIX,
    DLQ_STREAM,
    INBOUND_PARTITIONS,
    KEYLOG_STREAM,
    KEYLOG_SUBJECT,
    MESSAGES_BUCKET,
    REGISTRY_STREAM,
    REGISTRY_SUBJECT,
    REPLAY_SUBJECT,
    delivery_consumer,
    delivery_filter,
    delivery_stream,
    delivery_subject,
    hub_consumer,
    inbound_stream,
    inbound_subject,
    inbound_subjects,
    inbox_prefix,
    quarantine_subject,
)
from schakel.hub.audit import AuditRecord, parse_record, read_trail, verify_chain
from schakel.hub.natsconfig import (
    ADMIN_ROLES,
    PARTNER_MAX_CONNECTIONS,
    partner_permissions,
    write_config,
)
from schakel.hub.natsserver import NatsServer, free_port
from schakel.hub.service import provision, registration
from schakel.keys.crypto import SigningKey
from schakel.keys.envelope import MAGIC, seal, split_envelope
from schakel.keys.identity import PartnerIdentity
from schakel.keys.keystore import PASSPHRASE_ENV, KdfParams, save_keystore
from schakel.keys.statement import sign_statement
from tests.hub.conftest import World
from tests.hub.test_isolation import partner_connection, refused

POL, OM, ZVH, GEM = (OrgId(o) for o in ("POL.west", "OM.west", "ZVH.west", "GEM.westerstad"))
PARTNERS = [POL, OM, ZVH, GEM]
ATTACKER, VICTIMS = POL, (OM, ZVH)
DEFAULT_POLICY = Path(__file__).parents[2] / "contracts" / "policy.toml"  # as shipped


@dataclass
class Rig:
    """A secured server, a hub process, the hub's own connection for inspection, and clients."""

    tmp: Path
    server: NatsServer
    authority: SigningKey
    identities: dict[OrgId, PartnerIdentity]
    hub_nc: Client
    hub_bus: Bus
    hub: subprocess.Popen[bytes]
    clients: dict[OrgId, PartnerClient] = field(default_factory=dict)

    def seed(self, org: str) -> Path:
        return self.tmp / "cfg" / "creds" / f"{org}.nk"

    async def audit(self) -> list[AuditRecord]:
        """Every audit record that parses."""
        trail = [raw async for _, raw in read_trail(self.hub_bus)]
        return [r for r in map(parse_record, trail) if r is not None]

    async def refusals_recorded(self, org: OrgId) -> int:
        """How many of ``org``'s messages the audit trail records as refused: one by one
        within its budget, then counted together ("N refused beyond the budget")."""
        total = 0
        for record in await self.audit():
            if record.sender == org and record.event == "refused":
                counted = re.match(r"(\d+) refused beyond the budget", record.detail or "")
                total += int(counted[1]) if counted else 1
        return total

    async def recorded(self, org: OrgId, count: int, timeout: float = 30.0) -> None:
        """Wait until ``count`` refusals of ``org`` are recorded (counts are flushed each
        second)."""

        async def done() -> bool:
            return await self.refusals_recorded(org) >= count

        await until(done, timeout)
        assert await self.refusals_recorded(org) == count

    async def drained(self, org: OrgId, timeout: float = 60.0) -> None:
        """Wait until the hub has finished everything ``org`` published."""
        js = self.hub_nc.jetstream()

        async def empty() -> bool:
            return await _unfinished(js, org) == 0

        await until(empty, timeout)

    async def victim_state(self) -> dict[str, object]:
        """Everything that belongs to the victims, or to nobody but the hub."""
        js = self.hub_nc.jetstream()
        state: dict[str, object] = {}
        for org in VICTIMS:
            inbound = await js.stream_info(inbound_stream(org))
            state[f"inbound {org}"] = (inbound.state.messages, inbound.state.last_seq)
            outbound = await js.stream_info(delivery_stream(org))
            state[f"deliveries {org}"] = (outbound.state.messages, outbound.state.last_seq)
            consumer = await js.consumer_info(delivery_stream(org), delivery_consumer(org))
            acked = consumer.ack_floor.stream_seq
            state[f"consumer {org}"] = (consumer.delivered.stream_seq, acked)
        for stream in (KEYLOG_STREAM, REGISTRY_STREAM, DLQ_STREAM, f"KV_{CASES_BUCKET}",
                       f"KV_{MESSAGES_BUCKET}"):  # fmt: skip
            info = await js.stream_info(stream)
            state[stream] = (info.state.messages, info.state.last_seq)
        return state


async def _unfinished(js: JetStreamContext, org: OrgId) -> int:
    """What ``org`` published that the hub has not finished: every partition's consumer."""
    total = 0
    for partition in range(INBOUND_PARTITIONS):
        info = await js.consumer_info(inbound_stream(org), hub_consumer(partition))
        total += int(info.num_pending or 0) + int(info.num_ack_pending or 0)
    return total


async def until(condition: Callable[[], Awaitable[bool]], timeout: float) -> None:
    """Wait for ``condition`` (checked every 50 ms) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def _at_least(count: Callable[[], Awaitable[int]], minimum: int) -> bool:
    return await count() >= minimum


def policy_file(tmp: Path, **limits: float) -> Path:
    """The shipped policy with some limits changed."""
    path = tmp / "policy.toml"
    path.write_text(with_limits(default_policy_text(), **limits), encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def hostile_rig(tmp: Path, policy: Path = DEFAULT_POLICY) -> AsyncIterator[Rig]:
    """Generated config, provisioned partners, the hub as its own process, connected clients."""
    port = free_port()
    config = write_config(tmp / "cfg", PARTNERS, port=port, store_dir=tmp / "js")
    authority = SigningKey.generate()
    identities = {o: PartnerIdentity.generate(o) for o in PARTNERS}
    hub_identity = PartnerIdentity.generate(OrgId("HUB.test"))
    save_keystore(hub_identity, tmp / "hub.keystore", SecretStr("hub-pass"), KdfParams.for_tests())
    hub_creds = Credentials(nkey_seed=tmp / "cfg" / "creds" / "hub.nk")
    async with NatsServer(tmp, port=port, config=config) as server:
        requests = [registration(i) for i in (*identities.values(), hub_identity)]
        await provision(server.url, default_policy(), requests, authority, credentials=hub_creds)
        log = (tmp / "hub.log").open("wb")
        hub = subprocess.Popen(
            [sys.executable, "-m", "schakel", "hub", "run", "--nats", server.url,
             "--nkey", str(hub_creds.nkey_seed), "--policy", str(policy),
             "--authority-public", base64.b64encode(authority.public.raw).decode(),
             "--identity", str(tmp / "hub.keystore"), "--data-dir", str(tmp / "hubdata")],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, PASSPHRASE_ENV: "hub-pass"},
        )  # fmt: skip
        log.close()
        hub_nc = await nats.connect(server.url, nkeys_seed=str(hub_creds.nkey_seed))
        hub_bus = Bus(server.url, name="test-hub-reader", credentials=hub_creds)
        rig = Rig(tmp, server, authority, identities, hub_nc, hub_bus, hub)
        try:
            async with contextlib.AsyncExitStack() as stack:
                await stack.enter_async_context(hub_bus)
                for org, identity in identities.items():
                    client = PartnerClient(
                        identity, server.url, authority=authority.public, nkey_seed=rig.seed(org)
                    )
                    rig.clients[org] = await stack.enter_async_context(client)
                await until(hub_started(rig), 30)
                yield rig
        finally:
            hub.terminate()
            hub.wait(timeout=30)
            await hub_nc.close()


def hub_started(rig: Rig) -> Callable[[], Awaitable[bool]]:
    """True once the hub process has logged that it started."""

    async def started() -> bool:
        assert rig.hub.poll() is None, (rig.tmp / "hub.log").read_text()
        return b"hub_started" in (rig.tmp / "hub.log").read_bytes()

    return started


def attacker(rig: Rig) -> contextlib.AbstractAsyncContextManager[tuple[Client, list[str]]]:
    """A bare connection with the attacker's own credentials, collecting the server's errors."""
    return partner_connection(rig.server.url, rig.seed(ATTACKER), ATTACKER)


async def exchange(
    rig: Rig, sender: OrgId, recipient: OrgId, *, settle: bool = False
) -> tuple[MessageId, float]:
    """``sender`` opens a case with ``recipient``; return the id and seconds until delivered
    (with ``settle``, also wait until the recipient's receipt has reached the sender)."""
    body = example_body(MessageType.M1)
    start = time.perf_counter()
    message_id = await rig.clients[sender].send(
        body, example_draft(MessageType.M1, body), [recipient]
    )
    while True:
        item = await rig.clients[recipient].receive(timeout=60)
        assert isinstance(item, Delivery | Refusal), "the victim's message did not arrive"
        await item.ack()
        if isinstance(item, Delivery) and item.message_id == message_id:
            break
    seconds = time.perf_counter() - start
    if settle:

        async def receipted() -> bool:
            await rig.clients[sender].receive(timeout=0.2)
            return recipient in rig.clients[sender].receipted.get(message_id, set())

        await until(receipted, 30)
    return message_id, seconds


async def refusals(client: PartnerClient, count: int, timeout: float = 60) -> list[ReasonCode]:
    """The reasons of the next ``count`` refusal notices ``client`` receives."""
    reasons: list[ReasonCode] = []
    deadline = time.monotonic() + timeout
    while len(reasons) < count and time.monotonic() < deadline:
        item = await client.receive(timeout=1.0)
        if item is None:
            continue
        if isinstance(item, Refusal):
            reasons.append(item.notice.reason)
        if not isinstance(item, Rejected):
            await item.ack()
    return reasons


def report(name: str, attempted: int, leaked: int) -> None:
    print(f"\n{name}: attempted {attempted}, denied {attempted - leaked}, leaked {leaked}")


def reply_targets(case_id: str, message_id: str) -> list[str]:
    """Every subject of the hub's account an answer could be aimed at, from the topology."""
    targets = [AUDIT_SUBJECT, KEYLOG_SUBJECT, f"$KV.{CASES_BUCKET}.{case_id}",
               f"$KV.{MESSAGES_BUCKET}.{message_id}",
               f"$JS.API.STREAM.PURGE.KV_{CASES_BUCKET}",
               f"$JS.API.STREAM.DELETE.{AUDIT_STREAM}"]  # fmt: skip
    for victim in VICTIMS:
        targets += [
            inbound_subject(victim),
            delivery_subject(victim, ATTACKER),
            *(delivery_subject(victim, other) for other in VICTIMS if other != victim),
            DLQ_PREFIX + victim,
            quarantine_subject(victim),
            f"$JS.ACK.{delivery_stream(victim)}.{delivery_consumer(victim)}.1.1.1.1.0",
            f"$JS.API.CONSUMER.DELETE.{delivery_stream(victim)}.{delivery_consumer(victim)}",
            f"$JS.API.STREAM.PURGE.{delivery_stream(victim)}",
            f"$JS.API.STREAM.PURGE.{inbound_stream(victim)}",
        ]
    return targets


HOSTILE_HEADERS: list[dict[str, str]] = [
    {},
    {"KV-Operation": "PURGE"},
    {"KV-Operation": "DEL", "Nats-Rollup": "sub"},
    {"Nats-Expected-Last-Sequence": "0", "Nats-Msg-Id": "x"},
]


def grant_payload(subject: str, message_id: str) -> bytes:
    """A plausible request body for each kind of granted subject."""
    if ".MSG.NEXT." in subject:
        return b'{"batch":1,"no_wait":true}'
    if ".DIRECT.GET." in subject:
        return b'{"seq":1,"batch":3}'
    if subject.startswith("schakel.status."):
        return message_id.encode()
    return b"junk"


async def test_no_answer_lands_outside_the_askers_own_account(tmp_path: Path) -> None:
    """Every granted request, with every reply subject of the hub's topology and hostile headers,
    changes nothing that belongs to another partner or to the hub's records."""
    async with hostile_rig(tmp_path) as rig:
        victim_id, _ = await exchange(rig, OM, ZVH, settle=True)
        case_id = next(r.case_id for r in await rig.audit() if r.message_id == victim_id)
        assert case_id is not None
        audited = len(await rig.audit())
        kv = await rig.hub_nc.jetstream().key_value(CASES_BUCKET)
        case_before = await kv.get(case_id)
        before = await rig.victim_state()
        grants = partner_permissions(ATTACKER)["publish"]["allow"]
        attempted = 0
        async with attacker(rig) as (nc, _):
            for grant in grants:
                subject = grant.replace(".>", ".1.1.1.1.0")
                for reply in reply_targets(case_id, victim_id):
                    for headers in HOSTILE_HEADERS:
                        await nc.publish(subject, grant_payload(subject, victim_id),
                                         reply=reply, headers=headers or None)  # fmt: skip
                        attempted += 1
            await nc.flush()
            # A round trip through JetStream after all of them: the server has handled them.
            await nc.request(inbound_subject(ATTACKER), b"barrier", timeout=5)
        await rig.drained(ATTACKER)
        after = await rig.victim_state()
        leaked = sum(1 for key in before if before[key] != after[key])
        report("reply subjects", attempted, leaked)
        assert after == before
        case_after = await kv.get(case_id)
        assert (case_after.revision, case_after.value) == (case_before.revision, case_before.value)
        trail = [item async for item in read_trail(rig.hub_bus)]
        chain = verify_chain(trail)
        assert chain.ok and not chain.foreign, chain
        new = (await rig.audit())[audited:]
        assert new and all(r.sender == ATTACKER for r in new)
        for client in rig.clients.values():
            assert client.directory_follower is not None
            assert not client.directory_follower.skipped
        await exchange(rig, OM, ZVH)  # the victims still talk
        assert rig.hub.poll() is None


@pytest.mark.parametrize("role", sorted(ADMIN_ROLES))
async def test_no_answer_to_an_administrative_user_lands_in_the_hubs_account(
    tmp_path: Path, role: str
) -> None:
    """The operator's and the security officer's users, like a partner's, get every answer in
    their own account: each of their grants, aimed with every reply subject of the hub's
    topology and hostile headers, changes nothing of the hub's or the partners' records.
    (The security officer's appends carry an expectation that fails, so that nothing is
    stored: storing is its job, answering elsewhere is not. For the same reason its own two
    write subjects are left out as reply subjects: an answer may land where the asker could
    publish itself, and it can publish there.)"""
    async with hostile_rig(tmp_path) as rig:
        victim_id, _ = await exchange(rig, OM, ZVH, settle=True)
        case_id = next(r.case_id for r in await rig.audit() if r.message_id == victim_id)
        assert case_id is not None
        audited = len(await rig.audit())
        before = await rig.victim_state()
        attempted = 0
        nc = await nats.connect(rig.server.url, nkeys_seed=str(rig.seed(role)),
                                allow_reconnect=False)  # fmt: skip
        try:
            own = {s for s, _ in ADMIN_ROLES[role]}
            targets = [t for t in reply_targets(case_id, victim_id) if t not in own]
            for subject in own:
                writes = subject in (KEYLOG_SUBJECT, REGISTRY_SUBJECT)
                for reply in targets:
                    for headers in HOSTILE_HEADERS:
                        if writes:
                            headers = {**headers, "Nats-Expected-Last-Subject-Sequence": "999999"}
                        payload = (b"1" if subject == REPLAY_SUBJECT
                                   else grant_payload(subject, victim_id))  # fmt: skip
                        await nc.publish(subject, payload, reply=reply, headers=headers or None)
                        attempted += 1
            await nc.flush()
            # Round trips through the hub and JetStream after all of them: handled.
            if role == "operator":
                await nc.request(REPLAY_SUBJECT, b"1", timeout=5)
            else:
                await nc.request(f"$JS.API.DIRECT.GET.{KEYLOG_STREAM}", b'{"seq":1}', timeout=5)
        finally:
            await nc.close()
        after = await rig.victim_state()
        leaked = sum(1 for key in before if before[key] != after[key])
        report(f"reply subjects ({role})", attempted, leaked)
        assert after == before
        trail = [item async for item in read_trail(rig.hub_bus)]
        chain = verify_chain(trail)
        assert chain.ok and not chain.foreign, chain
        assert len(await rig.audit()) == audited
        for client in rig.clients.values():
            assert client.directory_follower is not None
            assert not client.directory_follower.skipped
        await exchange(rig, OM, ZVH)
        assert rig.hub.poll() is None


async def test_expectation_headers_reveal_nothing_of_other_partners(tmp_path: Path) -> None:
    """JetStream's expectation and dedupe headers on the inbound path answer about the
    attacker's own stream only; what gets stored with them is refused and audited."""
    async with hostile_rig(tmp_path) as rig:
        victim_ids = [(await exchange(rig, OM, ZVH))[0] for _ in range(3)]
        own = inbound_stream(ATTACKER)
        probes: list[dict[str, str]] = [
            {"Nats-Expected-Last-Msg-Id": "nope"},
            {"Nats-Expected-Last-Sequence": "999999"},
            {"Nats-Expected-Last-Subject-Sequence": "999999"},
            {"Nats-Expected-Last-Subject-Sequence": "999999",
             "Nats-Expected-Last-Subject-Sequence-Subject": inbound_subject(OM)},
            {"Nats-Expected-Stream": inbound_stream(OM)},
            {"Nats-Expected-Last-Sequence": "0"},  # true for the attacker's empty stream
            {"Nats-TTL": "1s"},
            {"Nats-Rollup": "all"},
        ]  # fmt: skip
        texts: list[str] = []
        stored = 0
        async with attacker(rig) as (nc, _):
            js = nc.jetstream()
            for headers in probes:
                try:
                    await js.publish(inbound_subject(ATTACKER), b"probe", headers=headers)
                    stored += 1
                except nats.js.errors.APIError as exc:
                    texts.append(str(exc))
        await rig.drained(ATTACKER)
        last_own = (await rig.hub_nc.jetstream().stream_info(own)).state.last_seq
        revealed = [t for t in texts if any(v in t for v in victim_ids)]
        numbers = [int(n) for t in texts for n in re.findall(r"\d+", t.split("description=")[-1])]
        leaked = len(revealed) + sum(1 for n in numbers if last_own < n < 999999)
        report("expectation headers", len(probes), leaked)
        assert leaked == 0, texts
        refused = [r for r in await rig.audit() if r.sender == ATTACKER]
        assert sum(r.reason is ReasonCode.HEADER_NOT_ALLOWED for r in refused) == stored >= 1


async def test_a_guessed_receipt_id_cannot_suppress_a_receipt(tmp_path: Path) -> None:
    """Publishing a victim's predictable receipt id first does not drop the real receipt."""
    async with hostile_rig(tmp_path) as rig:
        body = example_body(MessageType.M1)
        message_id = await rig.clients[OM].send(body, example_draft(MessageType.M1, body), [ZVH])
        async with attacker(rig) as (nc, _):
            for org in (ZVH, ATTACKER):
                await nc.jetstream().publish(
                    inbound_subject(ATTACKER), b"{}",
                    headers={"Nats-Msg-Id": f"receipt:{message_id}:{org}",
                             "Schakel-Kind": "receipt"},
                )  # fmt: skip
        item = await rig.clients[ZVH].receive(timeout=30)
        assert isinstance(item, Delivery)
        await item.ack()  # the SDK sends the signed receipt

        async def receipted() -> bool:
            await rig.clients[OM].receive(timeout=0.2)
            return ZVH in rig.clients[OM].receipted.get(message_id, set())

        await until(receipted, 30)
        report("receipt suppression", 2, 0)


def _deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def _wide(keys: int) -> bytes:
    return b",".join(b'"k%d":0' % i for i in range(keys))


def _framed(header: bytes) -> bytes:
    """Correct envelope framing around ``header``, so that the hub gets as far as parsing it."""
    ciphertext = b"\0" * 48
    framed = MAGIC + len(header).to_bytes(4, "big") + header
    return framed + len(ciphertext).to_bytes(4, "big") + ciphertext + b"\0" * 64


JUNK: dict[str, tuple[bytes, str]] = {
    "deep receipt": (b'{"signature":"","statement":' + _deep(200_000) + b"}", "receipt"),
    "deep receipt field": (b'{"statement":{"message_id":' + _deep(5_000) + b"}}", "receipt"),
    "wide receipt": (b'{"statement":{' + _wide(40_000) + b"}}", "receipt"),
    "huge receipt": (b'{"statement":"' + b"A" * 900_000 + b'"}', "receipt"),
    "deep header": (_framed(b'{"a":' + _deep(4_000) + b"}"), "envelope"),
    "huge envelope": (MAGIC + b"\xff" * 1_000_000, "envelope"),
    "not json": (b"\xff\xfe" * 1000, "receipt"),
    # A quadratic case for a depth check that rescans from each quote.
    "unterminated escaped string": (b'"' + b'\\"' * 8_000, "receipt"),
}
NAME = "Jan Jansen"  # a person's name, which must never reach the metadata


def _named_headers(rig: Rig) -> list[bytes]:
    """Envelopes whose otherwise valid header carries an unknown key, or a wrong value, that
    spells a name (with line separators and a length beyond any audit record)."""
    body = example_body(MessageType.M1)
    raw = seal(body, example_draft(MessageType.M1, body), sender=rig.identities[ATTACKER],
               recipients=[rig.identities[ZVH].public_record()])  # fmt: skip
    header = json.loads(split_envelope(raw)[0])
    variants = [
        {**header, NAME: 1},
        {**header, NAME + "\u2028" * 6_000: 1},
        {**header, "purpose": NAME},
        {**header, "recipients": [{"org": NAME, "kid": NAME}]},
    ]
    return [_framed(json.dumps(v, ensure_ascii=False).encode()) for v in variants]


async def test_deep_wide_and_huge_json_is_refused_and_routing_goes_on(tmp_path: Path) -> None:
    """Deep, wide and huge JSON in everything the hub parses (receipts, envelope headers,
    status questions) is refused and audited; nothing is retried for ever or stalls others."""
    async with hostile_rig(tmp_path) as rig:
        copies = 30
        async with attacker(rig) as (nc, _):
            js = nc.jetstream()
            junk = [*JUNK.values(), *((raw, "envelope") for raw in _named_headers(rig))]
            for data, kind in junk:
                for _ in range(copies):
                    await js.publish(inbound_subject(ATTACKER), data,
                                     headers={"Schakel-Kind": kind})  # fmt: skip
            for data in (_deep(100_000), b"A" * 500_000, b"{}"):
                with contextlib.suppress(nats.errors.TimeoutError):
                    await nc.request(f"schakel.status.{ATTACKER}", data, timeout=0.5)
        _, seconds = await exchange(rig, OM, ZVH)
        await rig.drained(ATTACKER, timeout=120)
        attempted = copies * len(junk)
        await rig.recorded(ATTACKER, attempted)
        records = [r for r in await rig.audit() if r.sender == ATTACKER]
        individual = [r for r in records if r.event == "refused" and r.detail and
                      not r.detail.endswith("beyond the budget")]  # fmt: skip
        report("deep/wide/huge JSON", attempted, 0)
        print(f"victim delivered after {seconds:.2f} s while the junk was processed; "
              f"{len(individual)} refusals recorded one by one, the rest counted")  # fmt: skip
        trail = [item async for item in read_trail(rig.hub_bus)]
        chain = verify_chain(trail)
        assert chain.ok and not chain.foreign, chain
        assert not any(NAME.encode() in raw or "\u2028".encode() in raw for _, raw in trail)
        log = (rig.tmp / "hub.log").read_bytes()
        assert NAME.encode() not in log
        assert b"\\u2028" not in log
        assert not [r for r in records if r.event == "quarantined"]
        assert rig.hub.poll() is None
        assert seconds < 10.0


async def test_a_flood_from_one_partner_delays_others_by_a_bounded_amount(tmp_path: Path) -> None:
    """5,000 junk messages from one partner cost another partner's messages at most a bounded
    delay (each sender has its own inbound stream and its own fetcher)."""
    async with hostile_rig(tmp_path) as rig:
        flood = 5_000
        latencies: list[float] = []
        backlog: list[int] = []
        js = rig.hub_nc.jetstream()

        async def pending() -> int:
            return await _unfinished(js, ATTACKER)

        async def victims() -> None:
            await until(lambda: _at_least(pending, 1_000), 60)  # the flood is under way
            for _ in range(10):
                backlog.append(await pending())
                latencies.append((await exchange(rig, OM, ZVH))[1])

        async with attacker(rig) as (nc, _):
            task = asyncio.create_task(victims())
            attack = nc.jetstream()
            acks = [attack.publish(inbound_subject(ATTACKER), b"junk %d" % n) for n in range(flood)]
            for chunk in range(0, flood, 500):
                await asyncio.gather(*acks[chunk : chunk + 500])
            await task
        latencies.sort()
        worst = latencies[-1]
        print(f"\nflood: {flood} junk messages, {backlog[0]}..{backlog[-1]} of them waiting while "
              f"the victims sent; victim latency median {latencies[len(latencies) // 2]:.3f} s, "
              f"worst {worst:.3f} s")  # fmt: skip
        await rig.drained(ATTACKER, timeout=180)
        assert worst < 2.0
        await rig.recorded(ATTACKER, flood)
        records = await rig.audit()
        print(f"audit records for the flood: {sum(r.sender == ATTACKER for r in records)}")
        assert sum(r.sender == ATTACKER for r in records) < flood / 10


async def test_quotas_per_sender(tmp_path: Path) -> None:
    """One sender cannot use up a recipient's backlog (SENDER_QUOTA) nor send faster than its
    rate (RATE_LIMITED); another sender to the same recipient is unaffected."""
    policy = policy_file(tmp_path, max_backlog=6, max_backlog_per_sender=3,
                         max_inbound_per_second=0.1, max_inbound_burst=8)  # fmt: skip
    async with hostile_rig(tmp_path, policy) as rig:
        pol = rig.clients[ATTACKER]
        for _ in range(5):  # one at a time: the quota is soft by the messages in flight
            body = example_body(MessageType.M1)
            await pol.send(body, example_draft(MessageType.M1, body), [ZVH])
            await rig.drained(ATTACKER)
        quota = await refusals(pol, 2)
        assert quota == [ReasonCode.SENDER_QUOTA] * 2
        body = example_body(MessageType.M1)
        from_om = await rig.clients[OM].send(body, example_draft(MessageType.M1, body), [ZVH])
        for n in range(8):
            await pol.publish_raw(b"junk", f"junk-{n}")
        rated = await refusals(pol, 8)
        assert rated.count(ReasonCode.RATE_LIMITED) >= 4, rated
        waiting = await rig.hub_nc.jetstream().stream_info(
            delivery_stream(ZVH), subjects_filter=delivery_filter(ZVH)
        )
        assert waiting.state.subjects == {
            delivery_subject(ZVH, ATTACKER): 3,
            delivery_subject(ZVH, OM): 1,
        }
        records = [r for r in await rig.audit() if r.message_id == from_om]
        assert [r.event for r in records] == ["routed"]
        report("quotas", 13, 0)


async def test_status_answers_only_the_askers_inbox_and_copies_no_headers(world: World) -> None:
    """Even without accounts (the embedded server), the status responder answers only to the
    asker's own inbox prefix, and its answer carries none of the request's headers."""
    nc = await nats.connect(world.server.url, inbox_prefix=inbox_prefix(ATTACKER).encode())
    try:
        stolen = await nc.subscribe(f"$KV.{CASES_BUCKET}.>")
        elsewhere = "$KV.schakel-cases.case-aaaaaaaaaaaaaaaaaaaaaaaaaa"
        headers = {"KV-Operation": "PURGE", "Nats-Expected-Last-Sequence": "0"}
        message_id = "00000000-0000-4000-8000-000000000001"
        await nc.publish(f"schakel.status.{ATTACKER}", message_id.encode(), reply=elsewhere,
                         headers=headers)  # fmt: skip
        answer = await nc.request(
            f"schakel.status.{ATTACKER}", message_id.encode(), headers=headers, timeout=5
        )
        assert json.loads(answer.data)["known"] is False
        assert not answer.headers
        with pytest.raises(nats.errors.TimeoutError):
            await stolen.next_msg(timeout=0.5)  # the misdirected question got no answer
    finally:
        await nc.close()


async def test_a_co_recipient_cannot_take_over_a_message_id(tmp_path: Path) -> None:
    """A recipient that reuses the id of a message it just received, at once and with its own
    valid signature, is refused as a duplicate: the id was taken before any delivery, so the
    sender's record, its receipts and its status stay its own."""
    async with hostile_rig(tmp_path) as rig:
        om, pol, zvh = rig.clients[OM], rig.clients[ATTACKER], rig.clients[ZVH]
        attempts = 5
        for _ in range(attempts):
            body = example_body(MessageType.M1)
            message_id = await om.send(body, example_draft(MessageType.M1, body), [ATTACKER, ZVH])
            item = await pol.receive(timeout=30)
            assert isinstance(item, Delivery)
            assert item.message_id == message_id
            mine = example_body(MessageType.M1)
            await pol.send(mine, example_draft(MessageType.M1, mine), [GEM],
                           message_id=message_id)  # fmt: skip
            await item.ack()
            assert await refusals(pol, 1) == [ReasonCode.DUPLICATE]
            delivered = await zvh.receive(timeout=30)
            assert isinstance(delivered, Delivery)
            await delivered.ack()

            async def receipted(mid: MessageId = message_id) -> bool:
                await om.receive(timeout=0.2)
                return {ATTACKER, ZVH} <= om.receipted.get(mid, set())

            await until(receipted, 30)
            state = await om.status(message_id)
            assert state.known and state.state == "receipted"
        routed = [r for r in await rig.audit() if r.event == "routed"]
        assert all(r.sender == OM for r in routed)
        report("message id take-over", attempts, 0)


async def test_a_replayed_receipt_is_relayed_and_audited_once(tmp_path: Path) -> None:
    """A recipient that signs and sends its receipt again (with a fresh NATS id, beyond the
    duplicate window) is refused; the sender's queue gets the receipt once."""
    async with hostile_rig(tmp_path) as rig:
        om, pol = rig.clients[OM], rig.clients[ATTACKER]
        body = example_body(MessageType.M1)
        message_id = await om.send(body, example_draft(MessageType.M1, body), [ATTACKER])
        item = await pol.receive(timeout=30)
        assert isinstance(item, Delivery)
        await item.ack()  # the SDK sends the one real receipt

        async def relayed() -> bool:
            return (await om.status(message_id)).state == "receipted"

        await until(relayed, 30)
        kid = pol.identity.signing_kid
        receipt = Receipt(
            message_id=message_id, recipient=ATTACKER, recipient_kid=kid, sender=OM, at=pol.now()
        )
        raw = sign_statement(receipt, pol.identity.signing_key, RECEIPT_LABEL)
        replays = 5
        async with attacker(rig) as (nc, _):
            for n in range(replays):  # on each subject it may publish on
                await nc.jetstream().publish(
                    inbound_subjects(ATTACKER)[n % (INBOUND_PARTITIONS + 1)], raw,
                    headers={"Nats-Msg-Id": f"again-{n}", "Schakel-Kind": "receipt"},
                )  # fmt: skip
        reasons = await refusals(pol, replays)
        await rig.drained(ATTACKER)
        receipted = [r for r in await rig.audit() if r.event == "receipted"]
        waiting = await rig.hub_nc.jetstream().stream_info(delivery_stream(OM))
        report("receipt replay", replays, len(receipted) - 1)
        assert reasons == [ReasonCode.DUPLICATE] * replays
        assert len(receipted) == 1
        assert waiting.state.messages == 1  # the one relayed receipt


async def test_acknowledgements_reveal_only_the_partners_own_traffic(tmp_path: Path) -> None:
    """The stream sequence in every delivery's acknowledgement subject counts the partner's own
    deliveries only: others' traffic in between does not move it."""
    async with hostile_rig(tmp_path) as rig:
        pol = rig.clients[ATTACKER]
        sequences = []
        for others in (0, 5, 10):
            for _ in range(others):
                await exchange(rig, OM, ZVH)
            body = example_body(MessageType.M1)
            await rig.clients[OM].send(body, example_draft(MessageType.M1, body), [ATTACKER])
            item = await pol.receive(timeout=30)
            assert isinstance(item, Delivery)
            sequences.append(item._msg.seq)
            await item.ack()
        report("traffic volume through acknowledgement subjects", 15, sequences[-1] - 3)
        assert sequences == [1, 2, 3]


async def test_a_partner_gets_a_handful_of_connections(tmp_path: Path) -> None:
    """Every connection can hold server resources: a partner's account takes a few only."""
    async with hostile_rig(tmp_path) as rig, contextlib.AsyncExitStack() as stack:
        seed = str(rig.seed(ATTACKER))
        for _ in range(PARTNER_MAX_CONNECTIONS - 1):  # its adapter holds one already
            nc = await nats.connect(rig.server.url, nkeys_seed=seed, allow_reconnect=False)
            stack.push_async_callback(nc.close)
        exc = await refused(rig.server.url, nkeys_seed=seed)
        assert "maximum account active connections exceeded" in str(exc).lower(), exc
        report("connections beyond the limit", 1, 0)


async def test_a_flood_of_status_questions_never_slows_routing(tmp_path: Path) -> None:
    """Hundreds of thousands of status questions from one partner (each with its own reply
    subject) cost the victims' messages a bounded delay, and nothing is quarantined: the
    questions have a connection, a queue bound and a per-partner budget of their own."""
    async with hostile_rig(tmp_path) as rig:
        questions = 300_000
        latencies: list[float] = []
        question = b"00000000-0000-4000-8000-000000000001"
        async with attacker(rig) as (nc, _):

            async def flood() -> None:
                for n in range(questions):
                    await nc.publish(f"schakel.status.{ATTACKER}", question,
                                     reply=f"{inbox_prefix(ATTACKER)}.q{n}")  # fmt: skip
                    if n % 10_000 == 0:
                        await nc.flush(timeout=30)

            task = asyncio.create_task(flood())
            while not task.done():
                latencies.append((await exchange(rig, OM, ZVH))[1])
            await task
            for _ in range(3):  # and just after
                latencies.append((await exchange(rig, OM, ZVH))[1])
        records = await rig.audit()
        print(f"\nstatus flood: {questions} questions; {len(latencies)} victim messages, "
              f"worst {max(latencies):.3f} s")  # fmt: skip
        assert not [r for r in records if r.event == "quarantined"]
        assert rig.hub.poll() is None
        assert max(latencies) < 2.0
        report("status flood", questions, 0)


async def test_the_repair_commands_reach_a_secured_deployment(tmp_path: Path) -> None:
    """`audit verify`, `dlq list` and `keys verify-directory` connect to the account-separated
    server as the narrowest user that may do each: the operator's and the security officer's
    users, never the hub's NKey."""
    async with hostile_rig(tmp_path) as rig:
        await exchange(rig, OM, ZVH)
        public = base64.b64encode(rig.authority.public.raw).decode()
        commands = {
            ("audit", "verify", "--nkey", str(rig.seed("operator"))): "audit chain intact",
            ("dlq", "list", "--nkey", str(rig.seed("operator"))): "0 dead letter(s)",
            ("keys", "verify-directory", "--authority-public", public,
             "--nkey", str(rig.seed("security"))): "valid events",
            ("keys", "list", "--authority-public", public,
             "--nkey", str(rig.seed("security"))): "organisation(s), key log of",
        }  # fmt: skip
        for command, expected in commands.items():
            result = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "schakel", *command,
                                 "--nats", rig.server.url],
                capture_output=True, text=True, check=False, timeout=60,
            )  # fmt: skip
            assert result.returncode == 0, (command, result.stdout, result.stderr)
            assert expected in result.stdout, (command, result.stdout)
