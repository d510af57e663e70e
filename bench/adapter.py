"""The adapter's benchmark: its HTTP API beside the SDK doing the same, in the same run.

1. **Sending**: N signals, 32 in flight, from ``POST /v1/messages`` to stored in JetStream
   (the adapter validates, seals and publishes; 202 comes once JetStream stored it), beside
   the SDK's ``send`` with 32 in flight. Ratio = adapter / SDK.
2. **Receiving**: N envelopes waiting in the partner's delivery stream, from delivery to the
   back office's webhook answering 2xx (the adapter opens, validates, POSTs, acknowledges and
   receipts each, one at a time), beside the SDK receiving and acknowledging them itself.
   Ratio = webhook / SDK.

No hub runs: what is measured is the adapter's own work over the SDK's. Last line:
``adapter send ratio: S, webhook receive ratio: W``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from schakel.adapters.http import AdapterApi, QuietRunner
from schakel.adapters.webhook import Webhook
from schakel.bus import Bus
from schakel.contracts.enums import MessageType
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.ids import OrgId
from schakel.contracts.topology import HEADER_KIND, HEADER_MSG_ID, KIND_ENVELOPE, delivery_subject
from schakel.harness.http_partner import message_request, serve
from schakel.harness.local import local_hub
from schakel.harness.scenarios import GEM, POL, ZVH
from schakel.hub.logconfig import configure_logging
from schakel.keys.envelope import seal

WINDOW = 32


async def _in_flight(count: int, one: object) -> float:
    """Run ``one(i)`` for i < count with WINDOW in flight; messages per second."""
    gate = asyncio.Semaphore(WINDOW)

    async def run(i: int) -> None:
        async with gate:
            await one(i)  # type: ignore[operator]

    start = time.perf_counter()
    await asyncio.gather(*(run(i) for i in range(count)))
    return count / (time.perf_counter() - start)


async def main(count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="schakel-bench-adapter-") as tmp_name, \
            open(os.devnull, "w") as sink:  # fmt: skip
        tmp = Path(tmp_name)
        configure_logging(json=True, stream=sink)
        async with local_hub((POL, GEM, ZVH), data_dir=tmp, run_hub=False) as system:
            pol, gem = system.clients[POL], system.clients[GEM]
            body = example_body(MessageType.M1)
            draft = example_draft(MessageType.M1, body)
            request = message_request(body, draft, [GEM, ZVH])
            runner = QuietRunner(AdapterApi(pol, state_dir=tmp / "pol").app())
            port = await serve(runner)
            async with aiohttp.ClientSession() as session:

                async def post(_: int) -> None:
                    async with session.post(f"http://127.0.0.1:{port}/v1/messages",
                                            json=request) as response:  # fmt: skip
                        assert response.status == 202, await response.text()

                async def send(_: int) -> None:
                    await pol.send(body, draft, [OrgId(GEM), OrgId(ZVH)])

                await _in_flight(50, post)  # warm up
                adapter_rate = await _in_flight(count, post)
                sdk_rate = await _in_flight(count, send)
            await runner.cleanup()
            s = adapter_rate / sdk_rate
            print(f"sending, {WINDOW} in flight: adapter POST {adapter_rate:,.0f} msg/s, "
                  f"SDK send {sdk_rate:,.0f} msg/s", flush=True)  # fmt: skip

            # Receiving: envelopes for GEM put straight into its delivery stream.
            records = [system.identities[GEM].public_record()]
            async with Bus(system.url, name="bench-loader") as bus:

                async def load(n: int) -> None:
                    for _ in range(n):
                        raw = seal(body, draft, sender=system.identities[POL], recipients=records)
                        message_id = raw.split(b'"message_id":"', 1)[1][:36].decode()
                        await bus.publish(delivery_subject(OrgId(GEM), OrgId(POL)), raw,
                                          {HEADER_MSG_ID: f"{message_id}:{GEM}",
                                           HEADER_KIND: KIND_ENVELOPE})  # fmt: skip

                await load(count)
                start = time.perf_counter()
                taken = 0
                while taken < count:
                    item = await gem.receive(timeout=30)
                    if item is None:
                        raise RuntimeError("SDK receive stalled")
                    await item.ack()  # type: ignore[union-attr]
                    taken += 1
                sdk_receive = count / (time.perf_counter() - start)

                await load(count)
                got = 0
                done = asyncio.Event()

                async def back_office(_: web.Request) -> web.Response:
                    nonlocal got
                    got += 1
                    if got >= count:
                        done.set()
                    return web.Response(status=204)

                hook = web.Application()
                hook.router.add_post("/in", back_office)
                hook_runner = web.AppRunner(hook, access_log=None)
                hook_port = await serve(hook_runner)
                start = time.perf_counter()
                gem_runner = QuietRunner(AdapterApi(
                    gem, state_dir=tmp / "gem",
                    webhook=Webhook(f"http://127.0.0.1:{hook_port}/in", b"x" * 32),
                ).app())  # fmt: skip
                await gem_runner.setup()
                await asyncio.wait_for(done.wait(), 600)
                webhook_rate = count / (time.perf_counter() - start)
                await gem_runner.cleanup()
                await hook_runner.cleanup()
            w = webhook_rate / sdk_receive
            print(f"receiving: adapter to webhook 2xx {webhook_rate:,.0f} msg/s, SDK receive and "
                  f"ack {sdk_receive:,.0f} msg/s", flush=True)  # fmt: skip
    print(f"adapter send ratio: {s:.2f}, webhook receive ratio: {w:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000, help="messages per measurement")
    asyncio.run(main(parser.parse_args().count))
