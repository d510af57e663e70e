"""The hub's benchmark: what it routes, beside what bare NATS does on the same machine, in the
same run (the machine is shared and noisy: only ratios within one run mean much).

1. **Hub-only.** N envelopes (M7 CASUSINFORMATIE, GEM -> ZVH, ~1 KiB body, spread over 64 cases
   in CASUSOVERLEG, each on its case's inbound partition) are loaded into the sender's inbound
   stream first; then one hub process drains them. Measured from the first delivery stored to
   the N-th: messages/s, and CPU per message of the hub process and of nats-server (from
   ``/proc``). **Scale-out**: 1, 2 and 4 hub processes first agree on their shares of the
   partitions (a few seconds after they start), then N envelopes are published while they
   route; the same measures, and the ratio to one process measured the same way.
   Beside it, a **pipelined bare relay** drains N messages of the same size from one work
   queue into another (fetch a batch, publish all of it with the acknowledgements awaited
   together, ack): the most NATS itself does here. ``H`` = hub (1 process) / relay.
2. **End to end with receipts on**, SDK to SDK: the sender publishes N envelopes as fast as
   JetStream acknowledges (256 in flight), the receiver opens, validates and acknowledges each
   (sending its signed receipt). Beside it, the same clients with a **do-nothing hub** in the
   hub's place (it moves each envelope to the recipient and drops receipts): the ceiling the
   clients allow. ``E`` = hub / do-nothing hub.
3. **Latency at fixed offered rates** (500, 1,000, 2,000 msg/s, receipts on, one hub): each
   message's latency runs from its *intended* send time (start + i/rate) to the moment the
   receiver has it, so a sender held up by a slow system does not hide the wait (no
   coordinated omission). p50, p99 and max.

The last line is exactly:
``hub-only ratio: H, e2e vs null-hub: E, p99 at 500 msg/s: P ms, p99 at 2000 msg/s: Q ms``
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import nats
from nats.js import api

from schakel.adapters.client import Delivery, PartnerClient
from schakel.contracts.enums import CaseState, MessageType
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.ids import CaseId, OrgId
from schakel.contracts.policy import default_policy_text, parse_policy, with_limits
from schakel.contracts.topology import (
    HEADER_KIND,
    HEADER_MSG_ID,
    HUB_INSTANCES_STREAM,
    INBOUND_PARTITIONS,
    KIND_ENVELOPE,
    delivery_stream,
    delivery_subject,
    header_case_id,
    hub_consumer,
    inbound_stream,
    inbound_subject,
    message_partition,
)
from schakel.harness.local import local_hub
from schakel.harness.scenarios import GEM, OM, POL, ZVH, open_cases
from schakel.harness.simulation import ScenarioRunner
from schakel.hub.logconfig import configure_logging
from schakel.hub.share import ANNOUNCE_EVERY
from schakel.keys.envelope import seal, split_envelope
from schakel.keys.identity import PartnerIdentity

CASES = 64
RATES = (500, 1000, 2000)
_TICK = os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds the processes have used so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


@dataclass
class Drain:
    """One drain: messages/s and CPU milliseconds per message, of the worker and of NATS."""

    rate: float
    worker_ms: float
    nats_ms: float


async def drain(
    js: nats.js.JetStreamContext, stream: str, target: int, workers: list[int], server: int
) -> Drain:
    """Wait until ``stream`` holds ``target`` messages (or nothing arrives for 10 s: what
    was refused never arrives); measure from the first one stored to the last."""
    first: tuple[float, int, float, float] | None = None
    held, last, progress = 0, 0.0, time.monotonic()
    while held < target and time.monotonic() - progress < 10:
        now_held = (await js.stream_info(stream)).state.messages
        if now_held > held:
            held, last, progress = now_held, time.perf_counter(), time.monotonic()
            if first is None:
                first = (last, held, cpu_seconds(workers), cpu_seconds([server]))
        await asyncio.sleep(0.02)
    if first is None:
        raise RuntimeError(f"{stream}: nothing arrived")
    if held < target:
        print(f"  ({target - held} of {target} never arrived: refused?)", flush=True)
    now = last
    start, done, worker0, server0 = first
    moved = max(1, held - done)
    return Drain(
        rate=moved / max(now - start, 1e-6),
        worker_ms=(cpu_seconds(workers) - worker0) * 1000 / moved,
        nats_ms=(cpu_seconds([server]) - server0) * 1000 / moved,
    )


async def publish_all(
    js: nats.js.JetStreamContext, items: list[tuple[str, bytes, dict[str, str]]]
) -> None:
    """Store every (subject, payload, headers), 256 acknowledgements awaited together."""
    for start in range(0, len(items), 256):
        await asyncio.gather(*(
            js.publish(subject, data, headers=headers)
            for subject, data, headers in items[start:start + 256]
        ))  # fmt: skip


async def relay_process(url: str, source: str, durables: str, target: str) -> None:
    """A pipelined bare relay, in its own process like the hub: from each of the consumers
    ``durables`` (comma-separated; the hub reads one per partition), fetch up to 256, publish
    them all with the acknowledgements awaited together, ack them; for ever. With ``target``
    ``-``, it drops what it takes (a do-nothing hub's receipt side)."""
    nc = await nats.connect(url)
    js = nc.jetstream()

    async def relay(durable: str) -> None:
        sub = await js.pull_subscribe_bind(durable, stream=source)
        while True:
            try:
                batch = await sub.fetch(256, timeout=0.5)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            if target != "-":
                await asyncio.gather(*(
                    js.publish(target, m.data, headers={HEADER_KIND: KIND_ENVELOPE,
                                                        HEADER_MSG_ID: f"r:{m.reply}"})
                    for m in batch
                ))  # fmt: skip
            await asyncio.gather(*(m.ack() for m in batch))

    await asyncio.gather(*(relay(durable) for durable in durables.split(",")))


def spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start a helper process (hub or relay) with its output in ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


@contextlib.asynccontextmanager
async def processes(commands: list[list[str]], log: Path) -> AsyncIterator[list[int]]:
    """Run the commands while inside; their pids."""
    started = [spawn(c, log) for c in commands]
    try:
        yield [p.pid for p in started]
    finally:
        for p in started:
            p.terminate()
        for p in started:
            await asyncio.to_thread(p.wait)


async def agreed(js: nats.js.JetStreamContext, k: int) -> None:
    """Wait until ``k`` hub processes say they are alive, then until each has read that
    (its next announcement) and its fetchers of partitions it gave away have ended."""
    deadline = time.monotonic() + 60
    while True:
        info = await js.stream_info(HUB_INSTANCES_STREAM, subjects_filter=">")
        if len(info.state.subjects or {}) >= k:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{k} hub processes never all said they are alive")
        await asyncio.sleep(0.1)
    await asyncio.sleep(ANNOUNCE_EVERY + 1.5)  # a bench may wait; a test never does


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


async def through_clients(
    sender: PartnerClient, receiver: PartnerClient, envelopes: list[tuple[str, bytes]],
    rate: float | None,
) -> tuple[float, list[float], float]:  # fmt: skip
    """Envelopes from the sender's SDK to the receiver's (which acks, and so sends receipts):
    (msg/s, latencies in ms from each message's intended send time, CPU ms per message of
    this process, where both clients run)."""
    intended: dict[str, float] = {}
    latencies: list[float] = []

    async def receive() -> None:
        while len(latencies) < len(envelopes):
            item = await receiver.receive(timeout=60)
            if item is None:
                raise RuntimeError(f"stalled after {len(latencies)} messages")
            if isinstance(item, Delivery):
                latencies.append((time.perf_counter() - intended[item.message_id]) * 1000)
            await item.ack()  # type: ignore[union-attr]

    window = asyncio.Semaphore(256)

    async def send(message_id: str, raw: bytes) -> None:
        try:
            await sender.publish_raw(raw, message_id)
        finally:
            window.release()

    receiving = asyncio.create_task(receive())
    start = time.perf_counter()
    cpu = time.process_time()
    sends = []
    for i, (message_id, raw) in enumerate(envelopes):
        at = start + i / rate if rate else time.perf_counter()
        if rate and at > time.perf_counter():
            await asyncio.sleep(at - time.perf_counter())
        intended[message_id] = at
        await window.acquire()
        sends.append(asyncio.create_task(send(message_id, raw)))
    await asyncio.gather(*sends)
    await receiving
    clients_ms = (time.process_time() - cpu) * 1000 / len(envelopes)
    return len(envelopes) / (time.perf_counter() - start), latencies, clients_ms


async def main(count: int, seconds: float, hub_counts: list[int]) -> None:
    """Run every part and print the figures; the last line is the summary."""
    # One sender at full speed: the per-sender rate and backlog shares (which protect other
    # partners, tests/hub/test_hostile_partner.py) are lifted, nothing else.
    text = with_limits(
        default_policy_text(),
        max_inbound_per_second=1_000_000, max_inbound_burst=1_000_000,
        max_backlog=1_000_000, max_backlog_per_sender=1_000_000,
        max_inbound_pending=1_000_000,
    )  # fmt: skip
    policy = parse_policy(text)
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    with tempfile.TemporaryDirectory(prefix="schakel-bench-") as tmp_name, \
            open(os.devnull, "w") as sink:  # fmt: skip
        tmp = Path(tmp_name)
        (tmp / "policy.toml").write_text(text, encoding="utf-8")
        configure_logging(json=True, stream=sink)
        hub_id = PartnerIdentity.generate(OrgId("HUB.bench"))
        async with local_hub(
            (GEM, ZVH, POL, OM), data_dir=tmp, policy=policy, hub_identity=hub_id,
            run_hub=False, receipts=True,
        ) as system:  # fmt: skip
            assert system.server is not None and system.server.pid is not None
            server_pid = system.server.pid
            url, ids, clients = system.url, system.identities, system.clients
            public = base64.b64encode(system.authority.public.raw).decode()
            hub_cmd = [sys.executable, "-m", "schakel", "hub", "run", "--nats", url,
                       "--authority-public", public, "--policy", str(tmp / "policy.toml"),
                       "--data-dir", str(tmp / "hub")]  # fmt: skip
            log = tmp / "procs.log"
            nc = await nats.connect(url)
            js = nc.jetstream()
            out_zvh, in_gem = delivery_stream(OrgId(ZVH)), inbound_stream(OrgId(GEM))

            async with processes([hub_cmd], log):  # the cases, and a warm-up
                runner = ScenarioRunner(clients, policy)
                cases = await open_cases(runner, [f"c{n}" for n in range(CASES)])
                total = count * (len(hub_counts) + 2) + 400 + int(sum(RATES) * seconds)
                sealed = seal_many(ids[GEM], ids[ZVH].public_record(), cases, total)
                warm, sealed = sealed[:300], sealed[300:]
                await through_clients(clients[GEM], clients[ZVH], warm, None)
                # a freshly started hub is warmed up before anything is timed
                warm_ups = [sealed[:50], sealed[50:100]]
                sealed = sealed[100:]

            async def hub_only(k: int, *, agree_first: bool) -> Drain:
                nonlocal sealed
                batch, sealed = sealed[:count], sealed[count:]
                await js.purge_stream(out_zvh)
                gem = OrgId(GEM)
                items = [  # each on its case's partition, as the SDK publishes
                    (inbound_subject(gem, message_partition(header_case_id(raw), message_id)),
                     raw, {HEADER_MSG_ID: message_id})
                    for message_id, raw in batch
                ]  # fmt: skip
                if not agree_first:
                    await publish_all(js, items)
                async with processes([hub_cmd] * k, log) as pids:
                    publishing = None
                    if agree_first:
                        await agreed(js, k)
                        publishing = asyncio.create_task(publish_all(js, items))
                    result = await drain(js, out_zvh, count, pids, server_pid)
                    if publishing is not None:
                        await publishing
                return result

            # 1. Hub-only: one process drains a preloaded stream, beside the pipelined relay.
            say(f"hub-only: {count} envelopes preloaded, drained by one hub process")
            one = await hub_only(1, agree_first=False)
            say(f"  hub x1: {one.rate:8,.0f} msg/s   CPU/msg hub {one.worker_ms:.3f} ms, "
                f"nats-server {one.nats_ms:.3f} ms")  # fmt: skip
            # 1b. Scale-out: k processes agree on their shares of the partitions (a few
            # seconds), then the envelopes are published (pipelined) while they route.
            say(f"scale-out: {count} envelopes published once the hub processes have agreed "
                "on their shares")  # fmt: skip
            scaled: dict[int, Drain] = {}
            for k in hub_counts:
                d = scaled[k] = await hub_only(k, agree_first=True)
                say(f"  hub x{k}: {d.rate:8,.0f} msg/s ({d.rate / scaled[hub_counts[0]].rate:.2f}"
                    f" x {hub_counts[0]})   CPU/msg hubs {d.worker_ms:.3f} ms, "
                    f"nats-server {d.nats_ms:.3f} ms")  # fmt: skip
            await js.purge_stream(out_zvh)
            for name, subject in (("RELAY_IN", "relay.in"), ("RELAY_OUT", "relay.out")):
                await js.add_stream(api.StreamConfig(
                    name=name, subjects=[subject], retention=api.RetentionPolicy.WORK_QUEUE
                ))  # fmt: skip
            await js.add_consumer("RELAY_IN", api.ConsumerConfig(
                durable_name="relay", ack_policy=api.AckPolicy.EXPLICIT, max_ack_pending=4096
            ))  # fmt: skip
            await publish_all(js, [("relay.in", raw, {}) for _, raw in sealed[:count]])
            relay_cmd = [sys.executable, __file__, "--relay", url, "RELAY_IN", "relay", "relay.out"]
            async with processes([relay_cmd], log) as pids:
                relay = await drain(js, "RELAY_OUT", count, pids, server_pid)
            say(f"  relay : {relay.rate:8,.0f} msg/s   CPU/msg relay {relay.worker_ms:.3f} ms, "
                f"nats-server {relay.nats_ms:.3f} ms (pipelined, no checks)")  # fmt: skip
            h = one.rate / relay.rate

            # 2. End to end, receipts on: the hub, then a do-nothing hub in its place.
            batch, sealed = sealed[:count], sealed[count:]
            async with processes([hub_cmd], log):
                await through_clients(clients[GEM], clients[ZVH], warm_ups[0], None)
                hub_e2e, _, hub_clients = await through_clients(
                    clients[GEM], clients[ZVH], batch, None
                )
            # 3. Latency at fixed offered rates, from the intended send time.
            p99: dict[int, float] = {}
            async with processes([hub_cmd], log):
                await through_clients(clients[GEM], clients[ZVH], warm_ups[1], None)
                for rate in RATES:
                    n = int(rate * seconds)
                    batch, sealed = sealed[:n], sealed[n:]
                    achieved, lat, _ = await through_clients(clients[GEM], clients[ZVH],
                                                             batch, rate)  # fmt: skip
                    p99[rate] = percentile(lat, 99)
                    say(f"  offered {rate:5} msg/s for {seconds:g} s: p50 "
                        f"{percentile(lat, 50):7.1f}  p99 {p99[rate]:7.1f}  max {max(lat):7.1f} ms"
                        f"  ({achieved:,.0f} msg/s achieved)")  # fmt: skip
            # The do-nothing hub last: what it takes and leaves unacknowledged when it stops
            # would come back to a real hub after the ack wait and disturb what is timed.
            batch = seal_many(ids[GEM], ids[ZVH].public_record(), cases, count)
            every_partition = ",".join(hub_consumer(p) for p in range(INBOUND_PARTITIONS))
            null = [
                [sys.executable, __file__, "--relay", url, in_gem, every_partition,
                 delivery_subject(OrgId(ZVH), OrgId(GEM))],
                [sys.executable, __file__, "--relay", url, inbound_stream(OrgId(ZVH)),
                 every_partition, "-"],
            ]  # fmt: skip
            async with processes(null, log):
                null_e2e, _, null_clients = await through_clients(
                    clients[GEM], clients[ZVH], batch, None
                )
            e = hub_e2e / null_e2e
            say(f"end to end, receipts on: hub {hub_e2e:,.0f} msg/s, do-nothing hub "
                f"{null_e2e:,.0f} msg/s (CPU/msg of the clients' process {hub_clients:.3f} "
                f"and {null_clients:.3f} ms: both SDKs share it)")  # fmt: skip

            await nc.close()
    say(f"hub-only ratio: {h:.2f}, e2e vs null-hub: {e:.2f}, p99 at 500 msg/s: {p99[500]:.1f} "
        f"ms, p99 at 2000 msg/s: {p99[2000]:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--relay":
        asyncio.run(relay_process(*sys.argv[2:6]))
        raise SystemExit(0)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=4000, help="messages per drain")
    parser.add_argument("--seconds", type=float, default=4.0, help="duration per fixed rate")
    parser.add_argument("--hubs", type=int, nargs="+", default=[1, 2, 4],
                        help="hub process counts for the hub-only part")  # fmt: skip
    args = parser.parse_args()
    asyncio.run(main(args.count, args.seconds, args.hubs))
