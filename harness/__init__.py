"""The harness that is part of the product: a local hub with provisioned partners
(:func:`local_hub`), simulated partners playing the scenarios of PROCESS.md, and the demo.

It sits above ``hub`` and ``adapters`` and may use both; nothing below imports it. The demo,
the benchmark and the tests all start their systems through :func:`local_hub`.
"""

from schakel.harness.demo import run_demo
from schakel.harness.local import LocalHub, local_hub
from schakel.harness.simulation import ScenarioFailure, ScenarioRunner, Step

__all__ = [
    "LocalHub",
    "ScenarioFailure",
    "ScenarioRunner",
    "Step",
    "local_hub",
    "run_demo",
]
