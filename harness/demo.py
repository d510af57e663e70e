"""``make demo``: one command, a real case through the real hub.

Starts an embedded ``nats-server`` with JetStream in a temporary directory, provisions the
topology and the partners' public keys, starts the hub, connects simulated partners (RvdK, ZVH,
gemeente Westerstad, politie, OM, IND, KMar) and plays acceptance scenario 1 of PROCESS.md,
including the refusals. Then it prints the case's audit trail and verifies the hash chain.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import structlog

from schakel.contracts.enums import MessageType, ReasonCode
from schakel.contracts.ids import OrgId
from schakel.contracts.policy import Policy, default_policy
from schakel.harness.local import local_hub
from schakel.harness.scenarios import GEM, IND, KMAR, OM, POL, RVDK, SCENARIOS, ZVH
from schakel.harness.simulation import ScenarioRunner, Step
from schakel.hub.audit import format_record, parse_record, read_trail, verify_chain
from schakel.hub.logconfig import configure_logging
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
    return report.ok
