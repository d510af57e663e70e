"""``make demo``: one command, a real case through the real hub.

Starts an embedded ``nats-server`` with JetStream in a temporary directory, provisions the
topology and the partners' public keys, starts the hub, connects simulated partners (RvdK, ZVH,
gemeente Westerstad, politie, OM, IND, KMar) and plays acceptance scenario 1 of PROCESS.md,
including the refusals. Then it prints the case's audit trail and verifies the hash chain,
and shows two back offices that know only HTTP: one sends a signal to its adapter with a plain
POST, the other receives it from its adapter by a signed webhook.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from schakel.adapters.client import PartnerClient
from schakel.adapters.http import AdapterApi, QuietRunner
from schakel.adapters.webhook import Webhook, signature
from schakel.contracts.enums import MessageType, ReasonCode
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.ids import OrgId
from schakel.contracts.policy import Policy, default_policy
from schakel.harness.http_partner import message_request
from schakel.harness.local import local_hub
from schakel.harness.scenarios import GEM, IND, KMAR, OM, POL, RVDK, SCENARIOS, ZVH
from schakel.harness.simulation import ScenarioRunner, Step
from schakel.hub.audit import format_record, parse_record, read_trail, verify_chain
from schakel.hub.logconfig import configure_logging
from schakel.hub.natsserver import free_port
from schakel.keys.identity import PartnerIdentity

__all__ = ["run_demo"]

DEMO_PARTNERS = (RVDK, ZVH, GEM, POL, OM, IND, KMAR)


async def run_demo(out: Callable[[str], None] = print) -> bool:
    """Play the demo; return whether everything went as the scenario says."""
    policy = default_policy()
    with tempfile.TemporaryDirectory(prefix="schakel-demo-") as tmp:
        data = Path(tmp)
        log_file = (data / "hub.log").open("w")
        configure_logging(json=True, level=logging.INFO, stream=log_file)
        try:
            ok = await _play(data, policy, out)
        finally:
            structlog.reset_defaults()
            log_file.close()
    out("\nDone. Run `make test` for scenarios 1-7 and the attacks, `make bench` for figures.")
    return ok


async def _play(data: Path, policy: Policy, out: Callable[[str], None]) -> bool:
    out("Schakel demo: scenario 1 of PROCESS.md through a real hub\n")
    hub_identity = PartnerIdentity.generate(OrgId("HUB.demo"))
    async with local_hub(
        DEMO_PARTNERS, data_dir=data, policy=policy, hub_identity=hub_identity
    ) as system:
        hub, clients = system.hub, system.clients
        assert hub is not None and hub.bus is not None
        out(f"1. Embedded nats-server with JetStream at {system.url}")
        out(f"2. Provisioned streams, buckets and the public keys of {len(clients)} partners")
        out(f"3. Hub {hub.settings.instance} running; partners connected: "
            f"{', '.join(clients)}\n")  # fmt: skip
        out("4. The case, step by step (each message is sealed by its sender, checked")
        out("   by the hub without being opened, and opened by each recipient):\n")
        runner = ScenarioRunner(clients, policy, narrate=out)
        steps = list(SCENARIOS[1].steps)
        steps.insert(
            8,
            Step(KMAR, MessageType.M7, (ZVH,), expect=ReasonCode.NOT_PERMITTED,
                 note="KMar, never invited, asks about the case"),
        )  # fmt: skip
        await runner.run(steps)
        await runner.assert_quiet()
        case_id = runner.case_id("A")
        trail = [item async for item in read_trail(hub.bus)]
        out(f"\n5. The audit trail of case {case_id} (metadata only, no content):\n")
        for _, raw in trail:
            record = parse_record(raw)
            if record is not None and record.case_id == case_id:
                out(format_record(record))
        report = verify_chain(trail)
        verdict = "intact" if report.ok else f"BROKEN at {report.broken_at}"
        out(f"\n6. Audit chain verified: {report.records} records, {verdict}")
        pushed = await _back_offices_over_http(clients, data, out)
    return report.ok and pushed


async def _back_offices_over_http(
    clients: Mapping[str, PartnerClient], data: Path, out: Callable[[str], None]
) -> bool:
    """Step 7: the politie's back office speaks only HTTP (plain requests to its adapter, no
    SDK); the gemeente's back office only receives HTTP (its adapter pushes by webhook)."""
    secret = secrets.token_bytes(32)
    pushed: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def gemeente_back_office(request: web.Request) -> web.Response:
        body = await request.read()
        stamp = request.headers.get("Schakel-Timestamp", "")
        if not hmac.compare_digest(request.headers.get("Schakel-Signature", ""),
                                   signature(secret, stamp, body)):  # fmt: skip
            return web.Response(status=401)
        await pushed.put(json.loads(body))
        return web.Response(status=204)

    back_office = web.Application()
    back_office.router.add_post("/schakel", gemeente_back_office)
    runners: list[web.AppRunner] = [web.AppRunner(back_office, access_log=None)]
    hook_port, pol_port = free_port(), free_port()
    webhook = Webhook(f"http://127.0.0.1:{hook_port}/schakel", secret)
    runners.append(QuietRunner(AdapterApi(clients[POL], state_dir=data / "pol").app()))
    runners.append(QuietRunner(
        AdapterApi(clients[GEM], state_dir=data / "gem", webhook=webhook).app()
    ))  # fmt: skip
    out("\n7. Back offices that know only HTTP: the politie's POSTs a signal to its adapter,")
    out("   the gemeente's adapter pushes it to the gemeente's back office (signed webhook):\n")
    try:
        for runner, port in zip(runners, (hook_port, pol_port, None), strict=True):
            await runner.setup()
            if port is not None:
                await web.TCPSite(runner, "127.0.0.1", port).start()
        body = example_body(MessageType.M1)
        request = message_request(body, example_draft(MessageType.M1, body), [GEM, ZVH])
        async with aiohttp.ClientSession() as session, session.post(
            f"http://127.0.0.1:{pol_port}/v1/messages", json=request,
            headers={"Idempotency-Key": "demo-signal-1"},
        ) as response:  # fmt: skip
            sent = await response.json()
            out(f"   POST /v1/messages -> {response.status} {json.dumps(sent)}")
        item = await asyncio.wait_for(pushed.get(), 20)
        out(f"   webhook -> {item['kind']} {item['message_type']} from {item['sender']}, "
            f"{item['message_id']}, case {item['case_id']} (signature verified)")  # fmt: skip
        zvh = await clients[ZVH].receive(timeout=20)  # the other recipient, by the SDK
        if zvh is not None:
            await zvh.ack()  # type: ignore[union-attr]
        return bool(item["message_id"] == sent["message_id"])
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
