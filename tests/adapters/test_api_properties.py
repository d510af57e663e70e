"""Property tests of the adapter's HTTP API against its committed OpenAPI document
(schemathesis): whatever the generated requests hold, no 5xx, and every 4xx is an RFC 9457
problem document. A real hub and nats-server behind a real adapter, in a thread of their own
(schemathesis calls synchronously)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from schakel.adapters.http import AdapterApi, QuietRunner
from schakel.adapters.openapi import COMMITTED
from schakel.harness.http_partner import serve
from schakel.harness.local import local_hub
from schakel.harness.scenarios import GEM, ZVH

schema = schemathesis.openapi.from_dict(json.loads(COMMITTED.read_text("utf-8")))


@pytest.fixture(scope="module")
def live_adapter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """POL's adapter over a running hub (GEM and ZVH registered too); its base URL."""
    tmp: Path = tmp_path_factory.mktemp("adapter")
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        async with local_hub(["POL.west", GEM, ZVH], data_dir=tmp) as system:
            api = AdapterApi(system.clients["POL.west"], state_dir=tmp / "pol")
            runner = QuietRunner(api.app())
            port = await serve(runner)
            state.update(url=f"http://127.0.0.1:{port}", loop=asyncio.get_running_loop(),
                         stop=stop)  # fmt: skip
            ready.set()
            await stop.wait()
            await runner.cleanup()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert ready.wait(60), "the adapter did not start"
    yield str(state["url"])
    state["loop"].call_soon_threadsafe(state["stop"].set)
    thread.join(30)


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_5xx_and_every_4xx_is_a_problem(case: Any, live_adapter: str) -> None:
    with contextlib.suppress(TypeError, ValueError, KeyError):
        if 0.05 < float(case.query["wait"]) <= 30:
            case.query["wait"] = 0.05  # a long poll's length is not what is tested here
    response = case.call(base_url=live_adapter, timeout=30)
    what = (case.method, case.path, response.status_code, response.headers, response.text[:200])
    assert response.status_code < 500, what
    if 400 <= response.status_code < 500:
        content_type = response.headers.get("content-type", [""])[0]  # (schemathesis' form)
        assert content_type.startswith("application/problem+json"), what
        problem = response.json()
        assert {"type", "title", "status"} <= set(problem)
        assert problem["status"] == response.status_code
