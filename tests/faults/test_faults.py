"""Fault tests with real processes: kill -9 the hub, restart nats-server, run two hubs.

Each test prints its counts: sent (stored by JetStream), delivered to the back office, lost,
delivered twice to the back office, redeliveries the SDK suppressed, and recovery seconds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from schakel.adapters.client import Delivery, PartnerClient
from schakel.bus import Bus, TransportError
from schakel.contracts.enums import CaseState, MessageType
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.ids import CaseId, OrgId
from schakel.contracts.policy import default_policy
from schakel.contracts.topology import HUB_STATUS_SUBJECT
from schakel.harness.scenarios import GEM, OM, POL, SCENARIOS, ZVH, open_cases
from schakel.harness.simulation import ScenarioRunner
from schakel.hub.audit import read_trail, verify_chain
from schakel.hub.natsserver import NatsServer, free_port
from schakel.hub.service import provision, registration
from schakel.hub.stores import KvCaseStore
from schakel.keys.crypto import SigningKey
from schakel.keys.envelope import seal, split_envelope
from schakel.keys.identity import PartnerIdentity
from schakel.keys.keystore import PASSPHRASE_ENV, KdfParams, save_keystore

ACK_WAIT = 2.0
CASES = 8
ORGS = (GEM, ZVH, POL, OM, "RVDK.noord", "IND.landelijk")


@dataclass
class Rig:
    """nats-server (file storage), hub processes, partner clients and escalated cases."""

    servers: list[NatsServer]
    tmp: Path
    authority: SigningKey
    identities: dict[str, PartnerIdentity]
    clients: dict[str, PartnerClient] = field(default_factory=dict)
    hubs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    cases: list[CaseId] = field(default_factory=list)
    replicas: int = 1

    @property
    def server(self) -> NatsServer:
        """The first (or only) server."""
        return self.servers[0]

    @property
    def url(self) -> str:
        """All servers' URLs, comma-separated."""
        return ",".join(s.url for s in self.servers)

    def start_hub(self) -> subprocess.Popen[bytes]:
        public = base64.b64encode(self.authority.public.raw).decode()
        log = (self.tmp / f"hub{len(self.hubs)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "schakel", "hub", "run", "--nats", self.url,
             "--replicas", str(self.replicas),
             "--authority-public", public, "--ack-wait", str(ACK_WAIT),
             "--identity", str(self.tmp / "hub.keystore"),
             "--data-dir", str(self.tmp / "hubdata")],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, PASSPHRASE_ENV: "hub-pass"},
        )  # fmt: skip
        log.close()
        self.hubs.append(process)
        return process

    def envelopes(self, count: int) -> list[tuple[str, bytes]]:
        body = example_body(MessageType.M7)
        gem, zvh = self.identities[GEM], self.identities[ZVH].public_record()
        out = []
        for n in range(count):
            draft = example_draft(MessageType.M7, body, case_id=self.cases[n % len(self.cases)])
            draft = draft.model_copy(update={"step": CaseState.CASUSOVERLEG})
            raw = seal(body, draft, sender=gem, recipients=[zvh])
            out.append((json.loads(split_envelope(raw)[0])["message_id"], raw))
        return out


@contextlib.asynccontextmanager
async def running(tmp_path: Path, servers: list[NatsServer], replicas: int) -> AsyncIterator[Rig]:
    """Provision, start one hub process, connect partners and escalate some cases."""
    authority = SigningKey.generate()
    identities = {o: PartnerIdentity.generate(OrgId(o)) for o in ORGS}
    hub = PartnerIdentity.generate(OrgId("HUB.faults"))
    save_keystore(hub, tmp_path / "hub.keystore", SecretStr("hub-pass"), KdfParams.for_tests())
    requests = [registration(i) for i in (*identities.values(), hub)]
    rig = Rig(servers, tmp_path, authority, identities, replicas=replicas)
    for _ in range(60):  # a fresh cluster elects its JetStream leader first
        try:
            await provision(rig.url, default_policy(), requests, authority, ack_wait=ACK_WAIT,
                            replicas=replicas)  # fmt: skip
            break
        except Exception:
            await asyncio.sleep(0.5)
    rig.start_hub()
    try:
        async with contextlib.AsyncExitStack() as stack:
            for org, identity in identities.items():
                rig.clients[org] = await stack.enter_async_context(
                    PartnerClient(identity, rig.url, authority=authority.public)
                )
            runner = ScenarioRunner(rig.clients, default_policy(), timeout=30)
            rig.cases = await open_cases(runner, [f"c{n}" for n in range(CASES)])
            yield rig
    finally:
        for process in rig.hubs:
            process.kill()
            process.wait()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    """A running system on one file-backed nats-server."""
    async with NatsServer(tmp_path / "nats") as server, running(tmp_path, [server], 1) as rig:
        yield rig


@pytest.fixture
async def cluster_rig(tmp_path: Path) -> AsyncIterator[Rig]:
    """A running system on a 3-node cluster with R3 streams."""
    ports = [free_port() for _ in range(3)]
    servers = [NatsServer(tmp_path / f"n{i}", name=f"n{i}", cluster=(ports[i], ports))
               for i in range(3)]  # fmt: skip
    await asyncio.gather(*(s.start() for s in servers))
    try:
        async with running(tmp_path, servers, 3) as rig:
            yield rig
    finally:
        await asyncio.gather(*(s.stop(kill=True) for s in servers))


async def publish_all(rig: Rig, envelopes: list[tuple[str, bytes]], rate: float) -> int:
    """Publish every envelope at ``rate`` per second, retrying until JetStream stores it."""
    sender = rig.clients[GEM]
    start = time.perf_counter()
    for n, (message_id, raw) in enumerate(envelopes):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        while True:
            try:
                await sender.publish_raw(raw, message_id)
                break
            except Exception:
                await asyncio.sleep(0.2)
    return len(envelopes)


async def back_office(
    rig: Rig, expected: set[str], timeout: float, seen: Counter[str] | None = None
) -> tuple[Counter[str], float]:
    """Receive until every expected message arrived (or timeout); count arrivals per id
    (into ``seen``, which the caller may watch)."""
    receiver = rig.clients[ZVH]
    seen = Counter() if seen is None else seen
    start = time.perf_counter()
    last = start
    while set(seen) < expected and time.perf_counter() - start < timeout:
        item = await receiver.receive(timeout=1.0)
        if isinstance(item, Delivery):
            seen[item.message_id] += 1
            last = time.perf_counter()
            await item.ack()
    return seen, last


def report(name: str, sent: int, seen: Counter[str], expected: set[str], rig: Rig,
           recovery: float) -> tuple[int, int]:  # fmt: skip
    lost = len(expected - set(seen))
    twice = sum(1 for c in seen.values() if c > 1)
    print(f"\n{name}: sent {sent}, delivered {len(set(seen) & expected)}, lost {lost}, "
          f"delivered twice {twice}, redeliveries suppressed by the SDK "
          f"{rig.clients[ZVH].duplicates_suppressed}, recovery {recovery:.1f} s")  # fmt: skip
    return lost, twice


async def test_kill_9_hub_repeatedly_loses_nothing(rig: Rig) -> None:
    """kill -9 the hub three times during 1200 messages: none lost or twice to the back office."""
    envelopes = rig.envelopes(1200)
    expected = {m for m, _ in envelopes}
    collecting = asyncio.create_task(back_office(rig, expected, timeout=90))
    publishing = asyncio.create_task(publish_all(rig, envelopes, rate=300))
    restarted_at = time.perf_counter()
    for _ in range(3):
        await asyncio.sleep(1.0)
        rig.hubs[-1].kill()
        rig.hubs[-1].wait()
        rig.start_hub()
        restarted_at = time.perf_counter()
    sent = await publishing
    seen, last = await collecting
    lost, twice = report("kill -9 hub x3", sent, seen, expected, rig, last - restarted_at)
    assert (lost, twice) == (0, 0)


async def test_kill_9_in_the_middle_of_a_batch_loses_and_doubles_nothing(rig: Rig) -> None:
    """1,500 envelopes wait before a hub starts, so that every fetch is a full batch (claims,
    case commits, deliveries, audit and settles each one wave for the batch); kill -9 the hub
    once a fifth of them has arrived and again at three fifths, each time while it is in the
    middle of batches: the next hub finishes, none lost, none twice, none stored twice."""
    rig.hubs[-1].kill()
    rig.hubs[-1].wait()
    envelopes = rig.envelopes(1500)
    expected = {m for m, _ in envelopes}
    sent = await publish_all(rig, envelopes, rate=100_000)
    seen: Counter[str] = Counter()
    collecting = asyncio.create_task(back_office(rig, expected, timeout=120, seen=seen))
    rig.start_hub()
    restarted_at = time.perf_counter()
    for mark in (300, 900):
        while len(seen) < mark and not collecting.done():
            await asyncio.sleep(0.005)
        rig.hubs[-1].kill()
        rig.hubs[-1].wait()
        rig.start_hub()
        restarted_at = time.perf_counter()
    seen, last = await collecting
    lost, twice = report("kill -9 mid-batch x2", sent, seen, expected, rig, last - restarted_at)
    assert (lost, twice, rig.clients[ZVH].duplicates_suppressed) == (0, 0, 0)


async def test_nats_server_restart_loses_nothing(rig: Rig) -> None:
    """Restart nats-server (file storage) during traffic: everything stored is delivered."""
    envelopes = rig.envelopes(600)
    expected = {m for m, _ in envelopes}
    collecting = asyncio.create_task(back_office(rig, expected, timeout=90))
    publishing = asyncio.create_task(publish_all(rig, envelopes, rate=300))
    await asyncio.sleep(1.0)
    await rig.server.stop()
    await asyncio.sleep(0.5)
    await rig.server.start()
    back = time.perf_counter()
    sent = await publishing
    seen, last = await collecting
    lost, twice = report("nats-server restart", sent, seen, expected, rig, last - back)
    assert (lost, twice) == (0, 0)


async def test_two_hubs_share_the_work_without_corrupting_cases(rig: Rig) -> None:
    """Two hub instances at once: every message exactly once, scenario 1 correct, chain intact."""
    rig.start_hub()
    envelopes = rig.envelopes(800)
    expected = {m for m, _ in envelopes}
    publishing = asyncio.create_task(publish_all(rig, envelopes, rate=400))
    seen, _ = await back_office(rig, expected, timeout=90)
    sent = await publishing
    lost, twice = report("two hubs", sent, seen, expected, rig, 0.0)
    assert (lost, twice) == (0, 0)
    runner = ScenarioRunner(rig.clients, default_policy(), timeout=30)
    steps = [s for s in SCENARIOS[1].steps if s.sender in ORGS and set(s.to) <= set(ORGS)]
    await runner.run(steps)
    assert runner.believed_state("A") is CaseState.AFGESLOTEN
    async with Bus(rig.url, name="check") as bus:
        trail = [item async for item in read_trail(bus)]
        case, _ = await _case(bus, runner.case_id("A"))
    assert verify_chain(trail).ok
    assert case == CaseState.AFGESLOTEN


async def test_a_killed_hubs_share_is_taken_over(rig: Rig) -> None:
    """Two hub processes share the inbound partitions; one is killed with -9 while 600
    messages come in: once its "alive" expires the other reads its partitions too (and what
    the killed one held comes back after the ack wait). None lost, none twice."""
    rig.start_hub()
    await _hub_says(rig, lambda s: s["instances"] == 2 and len(s["partitions"]) == 2)
    envelopes = rig.envelopes(600)
    expected = {m for m, _ in envelopes}
    seen: Counter[str] = Counter()
    collecting = asyncio.create_task(back_office(rig, expected, timeout=90, seen=seen))
    publishing = asyncio.create_task(publish_all(rig, envelopes, rate=300))
    while len(seen) < 100 and not collecting.done():
        await asyncio.sleep(0.005)
    rig.hubs[0].kill()
    rig.hubs[0].wait()
    killed_at = time.perf_counter()
    sent = await publishing
    seen, last = await collecting
    lost, twice = report("kill -9 of one of two hubs", sent, seen, expected, rig, last - killed_at)
    assert (lost, twice) == (0, 0)
    await _hub_says(rig, lambda s: s["instances"] == 1 and len(s["partitions"]) == 4)


async def _hub_says(rig: Rig, condition: Callable[[dict[str, Any]], bool]) -> None:
    """Ask ``hub status`` (any running instance answers) until an answer meets
    ``condition``."""
    deadline = time.monotonic() + 30
    async with Bus(rig.url, name="check") as bus:
        while True:
            with contextlib.suppress(TransportError):
                answer = await bus.request(HUB_STATUS_SUBJECT, b"", timeout=2)
                if condition(json.loads(answer)):
                    return
            assert time.monotonic() < deadline, "no hub said so"
            await asyncio.sleep(0.1)


async def _case(bus: Bus, case_id: CaseId) -> tuple[CaseState | None, int]:
    record, revision = await KvCaseStore(await bus.kv("schakel-cases")).get(case_id)
    return (record.state if record else None), revision


async def test_adapter_offline_backlog_delivered_in_case_order(rig: Rig) -> None:
    """The recipient's adapter is down while 2000 messages pile up: all arrive, in case order."""
    zvh = rig.clients.pop(ZVH)
    await zvh.__aexit__(None, None, None)
    envelopes = rig.envelopes(2000)
    expected = [m for m, _ in envelopes]
    case_of = {m: n % CASES for n, (m, _) in enumerate(envelopes)}
    start = time.perf_counter()
    sent = await publish_all(rig, envelopes, rate=2000)
    async with PartnerClient(rig.identities[ZVH], rig.url,
                             authority=rig.authority.public) as back:  # fmt: skip
        rig.clients[ZVH] = back
        seen, last = await back_office(rig, set(expected), timeout=120)
        arrival: dict[int, list[str]] = {}
        for message_id in seen:  # Counter keeps first-arrival order
            arrival.setdefault(case_of[message_id], []).append(message_id)
    lost, twice = report("adapter offline backlog", sent, seen, set(expected), rig, last - start)
    assert (lost, twice) == (0, 0)
    for case, ids in arrival.items():
        assert ids == [m for m in expected if case_of[m] == case], f"case {case} out of order"


async def test_cluster_node_killed_during_traffic_loses_nothing(cluster_rig: Rig) -> None:
    """3-node cluster, R3 streams: kill -9 a node during traffic; hub and adapters carry on."""
    rig = cluster_rig
    envelopes = rig.envelopes(1000)
    expected = {m for m, _ in envelopes}
    collecting = asyncio.create_task(back_office(rig, expected, timeout=120))
    publishing = asyncio.create_task(publish_all(rig, envelopes, rate=250))
    await asyncio.sleep(1.0)
    await rig.servers[1].stop(kill=True)
    killed = time.perf_counter()
    sent = await publishing
    seen, last = await collecting
    lost, twice = report("cluster node killed", sent, seen, expected, rig, last - killed)
    assert (lost, twice) == (0, 0)


async def test_sigterm_stops_the_hub_gracefully(rig: Rig) -> None:
    """SIGTERM during traffic: the hub finishes what it holds, drains and exits 0; nothing lost."""
    envelopes = rig.envelopes(800)
    expected = {m for m, _ in envelopes}
    collecting = asyncio.create_task(back_office(rig, expected, timeout=90))
    publishing = asyncio.create_task(publish_all(rig, envelopes, rate=300))
    await asyncio.sleep(1.0)
    hub = rig.hubs[-1]
    stopping = time.perf_counter()
    hub.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(hub.wait, 15)
    stopped = time.perf_counter() - stopping
    rig.start_hub()
    sent = await publishing
    seen, last = await collecting
    lost, twice = report("SIGTERM hub", sent, seen, expected, rig, last - stopping)
    print(f"hub stopped in {stopped:.1f} s with exit status {code}")
    assert code == 0
    assert (lost, twice) == (0, 0)
    assert "hub_stopped" in (rig.tmp / "hub0.log").read_text()
