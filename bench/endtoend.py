"""End-to-end benchmark: the hub beside a bare JetStream relay, in the same run.

Both paths carry the same pre-sealed envelopes (M7 CASUSINFORMATIE, GEM -> ZVH, ~1 KiB body,
spread over 64 cases in CASUSOVERLEG) from one publisher to one consumer:

- hub:   publish -> hub (verify, duplicate/time/key checks, policy, case CAS, delivery, audit)
         -> the recipient's SDK yields the opened, validated message;
- relay: publish -> a relay task that pulls and republishes (no crypto, no policy)
         -> a consumer that pulls it.

Measured: throughput at saturation (N messages published as fast as JetStream acks them) and
latency percentiles at a fixed offered rate. The last line is what the issue asks for.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
from nats.aio.msg import Msg
from nats.js import api

from schakel.adapters.client import Delivery, PartnerClient
from schakel.contracts.enums import CaseState, Decision, MessageType
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.ids import CaseId, OrgId
from schakel.contracts.policy import default_policy_text, parse_policy, with_limits
from schakel.harness.local import local_hub
from schakel.harness.scenarios import GEM, OM, POL, ZVH
from schakel.harness.simulation import ScenarioRunner, Step
from schakel.hub.logconfig import configure_logging
from schakel.keys.envelope import seal, split_envelope
from schakel.keys.identity import PartnerIdentity

CASES = 64


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def paced(count: int, rate: float | None, send: Callable[[int], Awaitable[None]]) -> None:
    """Call ``send(i)`` for each i, at ``rate`` per second or as fast as acks allow."""
    window = asyncio.Semaphore(256)
    start = time.perf_counter()

    async def one(i: int) -> None:
        try:
            await send(i)
        finally:
            window.release()

    tasks = []
    for i in range(count):
        if rate is not None:
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await window.acquire()
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)


async def relay_process(url: str) -> None:
    """The bare relay, run in its own process like the hub: pull, republish, ack; for ever."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    inbound = await js.pull_subscribe("relay.in", durable="relay", stream="RELAY_IN")

    async def worker(queue: asyncio.Queue[Msg]) -> None:
        while True:
            msg = await queue.get()
            await js.publish("relay.out", msg.data, headers=msg.headers)
            await msg.ack()

    queues: list[asyncio.Queue[Msg]] = [asyncio.Queue(64) for _ in range(8)]
    workers = [asyncio.create_task(worker(q)) for q in queues]
    n = 0
    while True:
        try:
            batch = await inbound.fetch(64, timeout=0.5)
        except (nats.errors.TimeoutError, TimeoutError):
            continue
        for msg in batch:
            n += 1
            await queues[n % len(queues)].put(msg)
    del workers


async def relay_run(
    url: str, payloads: list[bytes], rate: float | None
) -> tuple[float, list[float]]:
    """Messages through a bare JetStream relay: (throughput msg/s, latencies in ms)."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    outbound = await js.pull_subscribe("relay.out", durable="sink", stream="RELAY_OUT")
    sent: dict[int, float] = {}
    latencies: list[float] = []
    done = asyncio.Event()

    async def sink() -> None:
        while len(latencies) < len(payloads):
            try:
                batch = await outbound.fetch(64, timeout=0.5)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            for msg in batch:
                seq = int((msg.headers or {})["Bench-Seq"])
                latencies.append((time.perf_counter() - sent[seq]) * 1000)
                await msg.ack()
        done.set()

    async def send(i: int) -> None:
        sent[i] = time.perf_counter()
        await js.publish("relay.in", payloads[i], headers={"Bench-Seq": str(i)})

    sinking = asyncio.create_task(sink())
    start = time.perf_counter()
    await paced(len(payloads), rate, send)
    await done.wait()
    elapsed = time.perf_counter() - start
    await sinking
    await nc.close()
    return len(payloads) / elapsed, latencies


async def hub_run(
    sender: PartnerClient,
    receiver: PartnerClient,
    envelopes: list[tuple[str, bytes]],
    rate: float | None,
) -> tuple[float, list[float]]:
    """Messages through the hub to the recipient's SDK: (throughput msg/s, latencies in ms)."""
    sent: dict[str, float] = {}
    latencies: list[float] = []

    async def receive() -> None:
        while len(latencies) < len(envelopes):
            item = await receiver.receive(timeout=30)
            if item is None:
                raise RuntimeError(f"stalled after {len(latencies)} messages")
            assert isinstance(item, Delivery), item
            latencies.append((time.perf_counter() - sent[item.message_id]) * 1000)
            await item.ack()

    async def send(i: int) -> None:
        message_id, raw = envelopes[i]
        sent[message_id] = time.perf_counter()
        await sender.publish_raw(raw, message_id)

    receiving = asyncio.create_task(receive())
    start = time.perf_counter()
    await paced(len(envelopes), rate, send)
    await receiving
    return len(envelopes) / (time.perf_counter() - start), latencies


def seal_many(
    gem: PartnerIdentity, zvh_record: object, cases: list[CaseId], n: int
) -> list[tuple[str, bytes]]:
    """Pre-seal ``n`` M7 envelopes spread over ``cases``."""
    body = example_body(MessageType.M7, size=1024)
    out = []
    for i in range(n):
        draft = example_draft(MessageType.M7, body, case_id=cases[i % len(cases)])
        draft = draft.model_copy(update={"step": CaseState.CASUSOVERLEG})
        raw = seal(body, draft, sender=gem, recipients=[zvh_record])  # type: ignore[list-item]
        out.append((json.loads(split_envelope(raw)[0])["message_id"], raw))
    return out


async def main(count: int, rate: float, seconds: float, hub_count: int) -> None:
    """Run both paths and print the comparison."""
    # A throughput benchmark from one sender: the per-sender rate and backlog share (which
    # protect other partners, tests/hub/test_hostile_partner.py) are lifted, nothing else.
    text = with_limits(
        default_policy_text(),
        max_inbound_per_second=1_000_000,
        max_inbound_burst=1_000_000,
        max_backlog_per_sender=10_000,
    )
    policy = parse_policy(text)
    with tempfile.TemporaryDirectory(prefix="schakel-bench-") as tmp, open(os.devnull, "w") as sink:
        policy_path = Path(tmp) / "policy.toml"
        policy_path.write_text(text, encoding="utf-8")
        configure_logging(json=True, stream=sink)  # as in production: JSON lines
        orgs = (GEM, ZVH, POL, OM)
        hub_id = PartnerIdentity.generate(OrgId("HUB.bench"))
        async with local_hub(
            orgs, data_dir=Path(tmp), policy=policy, hub_identity=hub_id, run_hub=False,
            receipts=False,  # the figure is send -> yielded, as the issue defines it
        ) as system, contextlib.AsyncExitStack() as stack:  # fmt: skip
            url, ids, clients = system.url, system.identities, system.clients
            public = base64.b64encode(system.authority.public.raw).decode()
            await make_relay_streams(url)
            relay = spawn([sys.executable, __file__, "--relay", url], Path(tmp) / "relay.log")
            stack.callback(relay.terminate)
            hub_cmd = [sys.executable, "-m", "schakel", "hub", "run", "--nats", url,
                       "--authority-public", public, "--policy", str(policy_path),
                       "--data-dir", str(Path(tmp) / "hub")]  # fmt: skip
            for n in range(hub_count):
                stack.callback(spawn(hub_cmd, Path(tmp) / f"hub{n}.log").terminate)
            runner = ScenarioRunner(clients, policy)
            for n in range(CASES):
                alias = f"c{n}"
                await runner.run([
                    Step(POL, MessageType.M1, (GEM, ZVH), case=alias),
                    Step(ZVH, MessageType.M3, (OM,), case=alias),
                    Step(GEM, MessageType.M5, (ZVH, POL, OM), case=alias,
                         decision=Decision.OPSCHALEN),
                ])  # fmt: skip
            cases = [runner.case_id(f"c{n}") for n in range(CASES)]
            fixed = int(rate * seconds)
            batches = seal_many(ids[GEM], ids[ZVH].public_record(), cases, count + fixed + 200)
            warm, batches = batches[:200], batches[200:]
            await hub_run(clients[GEM], clients[ZVH], warm, None)
            payloads = [raw for _, raw in batches]
            relay_tp, _ = await relay_run(url, payloads[:count], None)
            hub_tp, hub_sat = await hub_run(clients[GEM], clients[ZVH], batches[:count], None)
            relay_fixed_tp, relay_lat = await relay_run(url, payloads[count:], rate)
            hub_fixed_tp, hub_lat = await hub_run(
                clients[GEM], clients[ZVH], batches[count:], rate
            )
    report(
        rate, seconds, relay_tp, relay_lat, relay_fixed_tp, hub_tp, hub_sat, hub_lat, hub_fixed_tp
    )


def report(
    rate: float,
    seconds: float,
    relay_tp: float,
    relay_lat: list[float],
    relay_fixed_tp: float,
    hub_tp: float,
    hub_sat: list[float],
    hub_lat: list[float],
    hub_fixed_tp: float,
) -> None:
    """Print the comparison; the last line is the one the issue asks for."""
    p = percentile
    print(f"saturation: msg/s  (p50, p99 ms)   | offered {rate:.0f} msg/s for {seconds:.0f} s")
    print(
        f"relay {relay_tp:>10,.0f}                   | "
        f"p50 {p(relay_lat, 50):6.1f}  p99 {p(relay_lat, 99):6.1f}  max {max(relay_lat):6.1f} ms"
        f"  ({relay_fixed_tp:,.0f} msg/s achieved)"
    )
    print(
        f"hub   {hub_tp:>10,.0f}  ({p(hub_sat, 50):6.0f}, {p(hub_sat, 99):6.0f})  | "
        f"p50 {p(hub_lat, 50):6.1f}  p99 {p(hub_lat, 99):6.1f}  max {max(hub_lat):6.1f} ms"
        f"  ({hub_fixed_tp:,.0f} msg/s achieved, mean {statistics.mean(hub_lat):.1f} ms)"
    )
    print(
        f"hub/relay throughput ratio: {hub_tp / relay_tp:.2f}, "
        f"hub p99 at {rate:.0f} msg/s: {p(hub_lat, 99):.1f} ms"
    )


def spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start a helper process (hub or relay) with its output in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


async def make_relay_streams(url: str) -> None:
    """The relay's two work-queue streams."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    for name, subject in (("RELAY_IN", "relay.in"), ("RELAY_OUT", "relay.out")):
        await js.add_stream(
            api.StreamConfig(
                name=name, subjects=[subject], retention=api.RetentionPolicy.WORK_QUEUE
            )
        )
    await nc.close()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--relay":
        asyncio.run(relay_process(sys.argv[2]))
        raise SystemExit(0)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=3000, help="messages at saturation")
    parser.add_argument("--rate", type=float, default=500.0, help="fixed offered rate, msg/s")
    parser.add_argument("--seconds", type=float, default=6.0, help="duration at the fixed rate")
    parser.add_argument("--hubs", type=int, default=1, help="hub instances sharing the work")
    args = parser.parse_args()
    asyncio.run(main(args.count, args.rate, args.seconds, args.hubs))
