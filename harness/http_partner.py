"""Playing scenarios through adapters' HTTP APIs with a plain HTTP client (no SDK): what a
back office that knows only HTTP does.

:class:`HttpScenarioRunner` builds each step's message as :class:`ScenarioRunner` does, then
``POST /v1/messages`` to the sender's adapter, long-polls ``GET /v1/inbox`` at each recipient
(or at the sender, for a refusal) and acknowledges with ``POST /v1/inbox/{id}/ack``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
from aiohttp import web

from schakel.contracts.bodies import Body
from schakel.contracts.enums import MessageType
from schakel.contracts.header import MessageDraft
from schakel.contracts.ids import case_id_for, new_message_id
from schakel.contracts.policy import Policy
from schakel.harness.simulation import ScenarioFailure, ScenarioRunner, Step, StepResult
from schakel.hub.natsserver import free_port

__all__ = ["HttpScenarioRunner", "message_request", "serve"]


def message_request(
    body: Body, draft: MessageDraft, to: Sequence[str], **extra: object
) -> dict[str, Any]:
    """The JSON of ``POST /v1/messages`` for a body, its draft and its recipients."""
    return {
        "message_type": body.MESSAGE_TYPE.value,
        "contract_version": body.CONTRACT_VERSION,
        "recipients": list(to),
        **draft.model_dump(mode="json", exclude_none=True),
        "body": body.model_dump(mode="json"),
        **extra,
    }


class HttpScenarioRunner(ScenarioRunner):
    """A :class:`ScenarioRunner` whose partners are adapters' base URLs."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        adapters: Mapping[str, str],
        policy: Policy,
        *,
        timeout: float = 15.0,
    ) -> None:
        super().__init__({}, policy, timeout=timeout)
        self._session = session
        self._adapters = dict(adapters)

    async def play(self, step: Step) -> StepResult:
        """Play one step over HTTP and check its outcome as the SDK runner does."""
        world = self._world
        message_id = new_message_id()
        alias = step.case.removeprefix("attach:")
        if step.message_type is MessageType.M1 and alias not in world.cases:
            world.cases[alias] = case_id_for(message_id)
        if step.message_type is MessageType.M16 and step.opens and step.expect == "delivered":
            world.cases[step.opens] = case_id_for(message_id)
        opens = step.message_type is MessageType.M1 and world.cases.get(alias) == case_id_for(
            message_id
        )
        body, draft = self._body_and_draft(step)
        if opens:  # a new case: the adapter gives it its id (from the message id it chooses)
            draft = draft.model_copy(update={"case_id": None, "step": None})
        label = f"{step.sender} -> {', '.join(step.to)}: {step.message_type}"
        request = message_request(body, draft, step.to)
        status, answer = await self._post(
            step.sender, "/v1/messages", request, {"Idempotency-Key": message_id}
        )
        if step.expect == "sdk":
            if status != 422:
                raise ScenarioFailure(f"{label}: the adapter took what it should refuse")
            return StepResult(step, None, "sdk")
        if status != 202:
            raise ScenarioFailure(f"{label}: POST answered {status}: {answer}")
        message_id = answer["message_id"]
        if opens:
            world.cases[alias] = answer["case_id"]
        if step.name:
            world.messages[step.name] = message_id
        if step.expect == "delivered":
            for org in step.to:
                item = await self._next(org)
                if item["kind"] != "delivery" or item["message_id"] != message_id:
                    raise ScenarioFailure(f"{label}: {org} got {item} instead of the message")
                await self._ack(org, item["id"])
            self._advance(step)
            result = StepResult(step, message_id, "delivered")
        else:
            item = await self._next(step.sender)
            if item["kind"] != "refusal" or item["message_id"] != message_id:
                raise ScenarioFailure(f"{label}: expected refusal {step.expect}, got {item}")
            await self._ack(step.sender, item["id"])
            if item["reason"] != step.expect:
                raise ScenarioFailure(f"{label}: refused with {item['reason']}, expected "
                                      f"{step.expect}")  # fmt: skip
            result = StepResult(step, message_id, item["reason"], item["text"])
        if step.expect_state is not None and world.states.get(step.case) != step.expect_state:
            raise ScenarioFailure(f"{label}: case should now be {step.expect_state}")
        return result

    async def _post(
        self, org: str, path: str, doc: object | None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, Any]:
        async with self._session.post(
            self._adapters[org] + path, json=doc, headers=headers
        ) as response:
            text = await response.text()
            return response.status, (await response.json()) if text else None

    async def _next(self, org: str) -> dict[str, Any]:
        """The first item waiting in ``org``'s inbox (long-polling up to the timeout)."""
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            async with self._session.get(self._adapters[org] + "/v1/inbox?wait=2") as response:
                if response.status != 200:
                    raise ScenarioFailure(f"{org}: inbox answered {response.status}")
                items = (await response.json())["items"]
            if items:
                return dict(items[0])
        raise ScenarioFailure(f"{org}: nothing arrived within {self._timeout:g} s")

    async def _ack(self, org: str, item_id: str) -> None:
        status, _ = await self._post(org, f"/v1/inbox/{item_id}/ack", None)
        if status != 204:
            raise ScenarioFailure(f"{org}: ack answered {status}")

    async def assert_quiet(self, seconds: float = 0.3) -> None:
        """Check that no adapter holds anything for its back office."""
        await asyncio.sleep(seconds)
        for org, base in self._adapters.items():
            async with self._session.get(base + "/v1/inbox?wait=0") as response:
                items = (await response.json())["items"]
            if items:
                raise ScenarioFailure(f"{org} received something unexpected: {items[0]}")


async def serve(runner: web.AppRunner) -> int:
    """Set ``runner`` up and listen on a free loopback port (an adapter's API, or a back
    office's webhook receiver, in a test, the benchmark or the demo); the port."""
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return port
