"""PROCESS.md's acceptance scenarios 1-7, end to end through a real hub and nats-server."""

from __future__ import annotations

import pytest

from schakel.contracts.policy import default_policy
from schakel.harness.scenarios import SCENARIOS
from schakel.harness.simulation import ScenarioRunner
from tests.hub.conftest import World


@pytest.mark.parametrize("number", sorted(SCENARIOS))
async def test_scenario(world: World, number: int) -> None:
    """Every allowed step is delivered to all its recipients; every refused one gets its code."""
    runner = ScenarioRunner(world.clients, default_policy())
    results = await runner.run(SCENARIOS[number].steps)
    await runner.assert_quiet()
    assert len(results) == len(SCENARIOS[number].steps)
