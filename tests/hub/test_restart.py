"""The hub can stop and start in the middle of a case without losing state or messages."""

from __future__ import annotations

import asyncio
from pathlib import Path

from schakel.contracts.enums import CaseState
from schakel.contracts.policy import default_policy
from schakel.harness.demo import run_demo
from schakel.harness.local import local_hub
from schakel.harness.scenarios import SCENARIOS
from schakel.harness.simulation import ScenarioRunner
from schakel.hub.natsserver import NatsServer
from schakel.hub.service import Hub
from schakel.hub.settings import HubSettings
from schakel.keys.crypto import SigningKey
from schakel.keys.identity import PartnerIdentity


async def test_restart_mid_scenario_keeps_case_state(
    nats_server: NatsServer,
    tmp_path: Path,
    partner_identities: dict[str, PartnerIdentity],
    hub_identity: PartnerIdentity,
    authority: SigningKey,
) -> None:
    """Scenario 1 completes across a hub restart; a message sent while no hub runs is delivered."""
    steps = SCENARIOS[1].steps
    async with local_hub(
        partner_identities, url=nats_server.url, authority=authority, hub_identity=hub_identity,
        run_hub=False,
    ) as system:  # fmt: skip
        runner = ScenarioRunner(system.clients, default_policy())
        async with Hub(
            HubSettings(nats_url=nats_server.url, data_dir=tmp_path, authority=authority.public),
            hub_identity,
        ):
            await runner.run(steps[:7])
        assert runner.believed_state("A") is CaseState.CASUSOVERLEG
        # No hub is running: the partner still sends; the message waits in JetStream.
        pending = asyncio.create_task(runner.play(steps[7]))
        await asyncio.sleep(0.5)
        assert not pending.done()
        async with Hub(
            HubSettings(nats_url=nats_server.url, data_dir=tmp_path, authority=authority.public),
            hub_identity,
        ):
            await pending
            await runner.run(steps[8:])
        await runner.assert_quiet()


async def test_demo_runs_scenario_one() -> None:
    """`make demo` plays scenario 1 with its refusals and ends with an intact audit chain."""
    lines: list[str] = []
    assert await run_demo(lines.append)
    text = "\n".join(lines)
    assert "refused NOT_PERMITTED" in text
    assert "refused CATEGORY_NOT_ALLOWED" in text
    assert "intact" in text
