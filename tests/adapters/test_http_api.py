"""The adapter's HTTP API with a real hub and nats-server, driven by a plain HTTP client: what a
back office that knows only HTTP can do, and what it cannot."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from schakel.adapters.http import AdapterApi, QuietRunner
from schakel.contracts.enums import MessageType
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.ids import OrgId
from schakel.contracts.policy import default_policy
from schakel.harness.http_partner import HttpScenarioRunner, message_request, serve
from schakel.harness.scenarios import GEM, SCENARIOS, ZVH
from schakel.hub.natsserver import NatsServer, free_port
from schakel.keys.crypto import SigningKey
from schakel.keys.identity import PartnerIdentity
from tests.hub.conftest import World

CANARY = "Xq7CanaryJansen"
TOKEN = "t" * 40


@contextlib.asynccontextmanager
async def adapters(
    world: World, orgs: list[str], tmp: Path, token: str | None = None
) -> AsyncIterator[dict[str, str]]:
    """An adapter (HTTP API over the partner's connected SDK client) per organisation, each
    on a free loopback port; their base URLs."""
    runners, urls = [], {}
    try:
        for org in orgs:
            api = AdapterApi(world.clients[org], state_dir=tmp / org, token=token)
            (tmp / org).mkdir(parents=True, exist_ok=True)
            runner = QuietRunner(api.app())
            port = await serve(runner)
            runners.append(runner)
            urls[org] = f"http://127.0.0.1:{port}"
        yield urls
    finally:
        for runner in runners:
            await runner.cleanup()


@pytest.mark.parametrize("number", sorted(SCENARIOS))
async def test_every_scenario_through_http_alone(world: World, tmp_path: Path, number: int) -> None:
    """Each of PROCESS.md's scenarios played entirely through the adapters' HTTP APIs with a
    plain HTTP client: the same outcomes as the SDK test (tests/hub/test_scenarios.py)."""
    steps = SCENARIOS[number].steps
    orgs = sorted({s.sender for s in steps} | {o for s in steps for o in s.to})
    async with adapters(world, orgs, tmp_path) as urls, aiohttp.ClientSession() as session:
        runner = HttpScenarioRunner(session, urls, default_policy())
        results = await runner.run(steps)
        await runner.assert_quiet()
    assert [r.outcome for r in results] == [
        "delivered" if s.expect == "delivered" else str(s.expect) for s in steps
    ]


async def test_an_item_stays_until_the_back_office_acknowledges_it(
    world: World, tmp_path: Path
) -> None:
    """A delivery is offered on every poll until acknowledged; the acknowledgement sends the
    receipt (the sender's state shows it), and a second acknowledgement finds nothing."""
    body = example_body(MessageType.M1)
    request = message_request(body, example_draft(MessageType.M1, body), [GEM, ZVH])
    async with adapters(world, ["POL.west", GEM, ZVH], tmp_path) as urls, \
            aiohttp.ClientSession() as session:  # fmt: skip
        async with session.post(urls["POL.west"] + "/v1/messages", json=request) as response:
            assert response.status == 202
            message_id = (await response.json())["message_id"]
        for _ in range(2):  # not acknowledged: offered again
            async with session.get(urls[GEM] + "/v1/inbox?wait=10") as response:
                [item] = (await response.json())["items"]
            assert (item["message_id"], item["kind"]) == (message_id, "delivery")
            assert item["body"]["persoon"]["achternaam"]  # the opened body, as JSON
        async with session.post(urls[GEM] + f"/v1/inbox/{item['id']}/ack") as response:
            assert response.status == 204
        async with session.post(urls[GEM] + f"/v1/inbox/{item['id']}/ack") as response:
            assert response.status == 404
            assert response.content_type == "application/problem+json"
        async with session.get(urls[ZVH] + "/v1/inbox?wait=10") as response:
            [item] = (await response.json())["items"]
        async with session.post(urls[ZVH] + f"/v1/inbox/{item['id']}/ack") as response:
            assert response.status == 204
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):  # the sender's receipts arrive by its inbox
                async with session.get(urls["POL.west"] + "/v1/inbox?wait=0.2") as inbox:
                    await inbox.read()  # polling lets the adapter take the relayed receipts
            async with session.get(urls["POL.west"] + f"/v1/messages/{message_id}") as response:
                state = await response.json()
            if state.get("state") == "receipted":
                break
        assert state["state"] == "receipted"
        assert sorted(state["receipted_by"]) == sorted([GEM, ZVH])


async def test_a_retried_post_with_its_idempotency_key_is_sent_once(
    world: World, tmp_path: Path
) -> None:
    """The same request with the same Idempotency-Key answers with the first message id and
    the recipient gets one message; the key with another request is a conflict."""
    body = example_body(MessageType.M1)
    request = message_request(body, example_draft(MessageType.M1, body), [GEM, ZVH])
    async with adapters(world, ["POL.west", GEM], tmp_path) as urls, \
            aiohttp.ClientSession() as session:  # fmt: skip
        ids = []
        key = {"Idempotency-Key": "order-1"}
        for _ in range(3):
            async with session.post(urls["POL.west"] + "/v1/messages", json=request,
                                    headers=key) as response:  # fmt: skip
                assert response.status == 202
                ids.append((await response.json())["message_id"])
        assert len(set(ids)) == 1
        other = {**request, "purpose": request["purpose"], "no_forward": True}
        async with session.post(urls["POL.west"] + "/v1/messages", json=other,
                                headers=key) as response:  # fmt: skip
            assert response.status == 409
        async with session.get(urls[GEM] + "/v1/inbox?wait=10") as response:
            items = (await response.json())["items"]
        async with session.get(urls[GEM] + "/v1/inbox?wait=1") as response:
            items = (await response.json())["items"]
        assert [i["message_id"] for i in items] == ids[:1]


async def test_every_field_error_is_named_and_no_value_is_echoed(
    world: World, tmp_path: Path
) -> None:
    """A request breaking its contract in several places: 422, one error per field naming the
    field and the rule, never a value or an unknown key the caller sent; junk, wrong
    content, oversized bodies and unknown items get problem documents too."""
    body = example_body(MessageType.M1)
    request = message_request(body, example_draft(MessageType.M1, body), [GEM])
    request["body"]["persoon"]["bsn"] = CANARY
    request["purpose"] = CANARY
    request[CANARY] = CANARY
    del request["legal_basis"]
    async with adapters(world, ["POL.west"], tmp_path) as urls, \
            aiohttp.ClientSession() as session:  # fmt: skip
        base = urls["POL.west"]
        async with session.post(base + "/v1/messages", json=request) as response:
            assert response.status == 422
            assert response.content_type == "application/problem+json"
            text = await response.text()
        problem = json.loads(text)
        fields = {e["field"] for e in problem["errors"]}
        assert {"body.persoon.bsn", "purpose", "legal_basis", "?"} <= fields, fields
        assert CANARY not in text
        json_type = {"Content-Type": "application/json"}
        for data, status in ((b"\x00junk", 422), (b"[" * 10_000, 422),
                             (b"x" * (3 * 1024 * 1024), 413)):  # fmt: skip
            async with session.post(base + "/v1/messages", data=io.BytesIO(data),
                                    headers=json_type) as response:  # fmt: skip
                assert response.status == status
                assert response.content_type == "application/problem+json"
        for path in ("/v1/messages/" + CANARY, "/v1/inbox/" + CANARY + "/ack", "/v1/nothing"):
            method = session.post if path.endswith("ack") else session.get
            async with method(base + path) as response:
                assert response.status == 404
                assert CANARY not in await response.text()


UNREADABLE = {  # what aiohttp's parser refuses before any handler runs; each carries the canary
    "request line": b"GET /x HTTP/1.1 %s\r\n\r\n",
    "method": b"%s / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "version": b"GET / HTTP/%s\r\nHost: 127.0.0.1\r\n\r\n",
    "target": b"GET /\xff%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "header name": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header %s\r\n\r\n",
    "header value": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: a\x01%s\r\n\r\n",
    "long header": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: %s" + b"a" * 10_000 + b"\r\n\r\n",
    "content length": b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Length: %s\r\n\r\n",
    "chunk": b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
    b"\r\nTransfer-Encoding: chunked\r\n\r\n%s\r\n\r\n",
}


async def test_a_request_the_parser_cannot_read_is_answered_without_quoting_it(
    world: World,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """aiohttp answers what its parser refuses with the parser's message, which quotes the
    request, and logs it with a traceback: the adapter's listener answers a problem document
    of its own words instead, and logs the kind of error only."""
    caplog.set_level("DEBUG")
    async with adapters(world, [GEM], tmp_path) as urls:
        host, port = urls[GEM].removeprefix("http://").split(":")
        for name, template in UNREADABLE.items():
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(template % CANARY.encode())
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.") and b" 400 " in head.split(b"\r\n")[0], name
            assert b"application/problem+json" in head, name
            assert json.loads(body)["status"] == 400, name
            assert CANARY.encode() not in answer, name
    out, err = capfd.readouterr()
    assert "http_request_unreadable" in out + err
    assert CANARY not in out + err + caplog.text


async def test_a_token_is_required_when_one_is_set(world: World, tmp_path: Path) -> None:
    """With a token configured, a caller without it (or with another) gets 401 everywhere
    but the liveness probe."""
    async with adapters(world, [GEM], tmp_path, token=TOKEN) as urls, \
            aiohttp.ClientSession() as session:  # fmt: skip
        base = urls[GEM]
        for headers in ({}, {"Authorization": "Bearer " + "x" * 40}):
            async with session.get(base + "/v1/inbox", headers=headers) as response:
                assert response.status == 401
        async with session.get(base + "/healthz") as response:
            assert response.status == 200
        good = {"Authorization": f"Bearer {TOKEN}"}
        async with session.get(base + "/v1/inbox", headers=good) as response:
            assert response.status == 200
        async with session.get(base + "/readyz", headers=good) as response:
            assert response.status == 200


def test_the_adapter_refuses_to_listen_unauthenticated_beyond_loopback(
    tmp_path: Path, partner_identities: dict[str, PartnerIdentity], authority: SigningKey
) -> None:
    """``schakel adapter run --listen 0.0.0.0:PORT`` without a token file does not start, and
    says why in one line; nothing listens."""
    import base64

    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "schakel", "adapter", "run", "--listen", f"0.0.0.0:{port}",
         "--nats", "nats://127.0.0.1:1", "--keystore", str(tmp_path / "none.keystore"),
         "--authority-public", base64.b64encode(authority.public.raw).decode()],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "api_token_file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


async def test_the_adapter_process_serves_and_stops(
    nats_server: NatsServer, tmp_path: Path, world: World
) -> None:
    """``schakel adapter run`` as a process: ready on its port, then stopped by SIGTERM."""
    import base64

    from pydantic import SecretStr

    from schakel.keys.keystore import PASSPHRASE_ENV, KdfParams, save_keystore

    org = "OM.west"
    save_keystore(world.identities[org], tmp_path / "om.keystore", SecretStr("pw"),
                  KdfParams.for_tests())  # fmt: skip
    (tmp_path / "token").write_text(TOKEN)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "schakel", "adapter", "run", "--listen", f"127.0.0.1:{port}",
         "--nats", nats_server.url, "--keystore", str(tmp_path / "om.keystore"),
         "--state-dir", str(tmp_path / "state"), "--api-token-file", str(tmp_path / "token"),
         "--authority-public", base64.b64encode(world.authority.public.raw).decode()],
        env={**os.environ, PASSPHRASE_ENV: "pw"}, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 30
            status = None
            while time.monotonic() < deadline and process.poll() is None:
                with contextlib.suppress(aiohttp.ClientError):
                    bearer = {"Authorization": f"Bearer {TOKEN}"}
                    async with session.get(f"http://127.0.0.1:{port}/readyz",
                                           headers=bearer) as r:  # fmt: skip
                        status = r.status
                        if status == 200:
                            break
                await asyncio.sleep(0.2)
            assert status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in err


async def test_webhook_mode_pushes_signed_retries_and_acknowledges_after_2xx(
    world: World, tmp_path: Path
) -> None:
    """A back office that only receives HTTP: the adapter POSTs each delivery, signed; a
    non-2xx answer is retried (the same delivery id); only after a 2xx is the message
    acknowledged (the sender sees it receipted); polling is refused in this mode."""
    from schakel.adapters.webhook import Webhook, signature

    secret = b"s" * 32
    seen: list[tuple[str, int]] = []

    async def back_office(request: web.Request) -> web.Response:
        body = await request.read()
        timestamp = request.headers["Schakel-Timestamp"]
        assert request.headers["Schakel-Signature"] == signature(secret, timestamp, body)
        delivery = request.headers["Schakel-Delivery"]
        seen.append((delivery, len(seen)))
        if len(seen) == 1:
            return web.Response(status=503)  # not now: the adapter tries again
        assert json.loads(body)["message_id"] == delivery
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/incoming", back_office)
    runner = web.AppRunner(app, access_log=None)
    port = await serve(runner)
    api = AdapterApi(world.clients[GEM], state_dir=tmp_path / "gem",
                     webhook=Webhook(f"http://127.0.0.1:{port}/incoming", secret))  # fmt: skip
    gem_runner = QuietRunner(api.app())
    gem_port = await serve(gem_runner)
    try:
        async with adapters(world, ["POL.west"], tmp_path) as urls, \
                aiohttp.ClientSession() as session:  # fmt: skip
            body = example_body(MessageType.M1)
            request = message_request(body, example_draft(MessageType.M1, body), [GEM, ZVH])
            async with session.post(urls["POL.west"] + "/v1/messages", json=request) as response:
                message_id = (await response.json())["message_id"]
            async with session.get(f"http://127.0.0.1:{gem_port}/v1/inbox") as response:
                assert response.status == 409
            deadline = time.monotonic() + 20
            while len(seen) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert [d for d, _ in seen] == [message_id, message_id]
            receipted = False
            while not receipted and time.monotonic() < deadline:
                async with session.get(urls["POL.west"] + "/v1/inbox?wait=0.2") as inbox:
                    await inbox.read()  # polling lets the adapter take the relayed receipts
                async with session.get(urls["POL.west"] + f"/v1/messages/{message_id}") as r:
                    receipted = GEM in (await r.json()).get("receipted_by", [])
            assert receipted
    finally:
        await gem_runner.cleanup()
        await runner.cleanup()


def test_the_committed_openapi_document_is_the_contracts_own() -> None:
    """adapters/openapi.json is what the contracts give now (regenerate it with
    ``schakel adapter openapi > adapters/openapi.json``), and every contract is in it."""
    from schakel.adapters.openapi import COMMITTED, rendered
    from schakel.contracts.bodies import BODIES

    assert COMMITTED.read_text("utf-8") == rendered(), "stale: run schakel adapter openapi"
    schemas = json.loads(COMMITTED.read_text("utf-8"))["components"]["schemas"]
    assert all(model.__name__ in schemas for model in BODIES.values())
    variants = schemas["SendRequest"]["oneOf"]
    assert len(variants) == len(BODIES)


async def test_folder_mode_sends_the_outbox_and_fills_the_inbox(
    world: World, tmp_path: Path
) -> None:
    """A back office that only writes and reads files: a request renamed into outbox/ is
    sent and moved to sent/ beside its message id; a broken one to failed/ beside its problem
    (no value echoed); the delivery appears in the recipient's inbox/ as JSON."""
    from schakel.adapters.folder import Folder

    body = example_body(MessageType.M1)
    request = message_request(body, example_draft(MessageType.M1, body), [GEM, ZVH])
    broken = {**request, "purpose": CANARY}
    sender, receiver = tmp_path / "pol-folder", tmp_path / "gem-folder"
    apis = [
        AdapterApi(world.clients["POL.west"], state_dir=tmp_path / "pol", folder=sender),
        AdapterApi(world.clients[GEM], state_dir=tmp_path / "gem", folder=receiver),
    ]
    runners = []
    for api in apis:
        runner = QuietRunner(api.app())
        await runner.setup()  # (the folder runs with the app; no listener needed)
        runners.append(runner)
    try:
        outbox = Folder(sender)
        for name, doc in (("signal.json", request), ("broken.json", broken)):
            outbox.write(outbox.tmp, name, json.dumps(doc).encode())
            os.replace(outbox.tmp / name, outbox.outbox / name)
        deadline = time.monotonic() + 20
        inbox = receiver / "inbox"
        while time.monotonic() < deadline and not (
            list(inbox.glob("*.json")) and (sender / "failed" / "broken.json").exists()
        ):
            await asyncio.sleep(0.05)
        sent = json.loads((sender / "sent" / "signal.sent.json").read_text())
        assert (sender / "sent" / "signal.json").exists()
        problem = (sender / "failed" / "broken.problem.json").read_text()
        assert json.loads(problem)["status"] == 422 and CANARY not in problem
        [delivered] = inbox.glob("*.json")
        item = json.loads(delivered.read_text())
        assert (delivered.name, item["message_id"]) == (f"{sent['message_id']}.json",
                                                        sent["message_id"])  # fmt: skip
        assert item["body"]["persoon"]["achternaam"]
        assert not list(sender.glob("outbox/*.json"))
    finally:
        for runner in runners:
            await runner.cleanup()


async def test_the_guides_curl_example_is_taken(world: World, tmp_path: Path) -> None:
    """The request in docs/ADAPTER.md's curl example is valid as written."""
    guide = (Path(__file__).parents[2] / "docs" / "ADAPTER.md").read_text("utf-8")
    example = json.loads(guide.split("-d '", 1)[1].split("'\n", 1)[0])
    async with adapters(world, ["POL.west"], tmp_path) as urls, \
            aiohttp.ClientSession() as session, \
            session.post(urls["POL.west"] + "/v1/messages", json=example) as response:  # fmt: skip
        assert response.status == 202, await response.text()
        assert (await response.json())["case_id"].startswith("case-")


async def test_a_web_page_cannot_use_the_adapter(world: World, tmp_path: Path) -> None:
    """A back office is a program: what a browser sends for a page (an Origin, a cross-site
    Sec-Fetch-Site, a form's text/plain body, a rebound Host name) is refused on every route,
    so no page the operator visits can send, read or acknowledge through a loopback adapter
    without a token."""
    body = example_body(MessageType.M1)
    request = json.dumps(message_request(body, example_draft(MessageType.M1, body), [GEM]))
    async with adapters(world, ["POL.west"], tmp_path) as urls, \
            aiohttp.ClientSession() as session:  # fmt: skip
        base = urls["POL.west"]
        browser = [
            ({"Origin": "https://evil.example", "Content-Type": "application/json"}, 403),
            ({"Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"}, 403),
            ({"Content-Type": "text/plain"}, 415),
            ({"Host": "rebind.evil.example", "Content-Type": "application/json"}, 421),
        ]
        for headers, status in browser:
            async with session.post(base + "/v1/messages", data=request,
                                    headers=headers) as response:  # fmt: skip
                assert response.status == status, headers
                assert response.content_type == "application/problem+json"
            if status != 415:
                async with session.get(base + "/v1/inbox", headers=headers) as response:
                    assert response.status == status, headers
        async with session.get(base + "/v1/inbox?wait=0") as response:
            assert response.status == 200  # a program, on loopback


async def test_long_polls_are_bounded_in_number_and_each_in_its_wait(
    world: World, tmp_path: Path
) -> None:
    """Concurrent long polls each end within about their own wait (one receives, the others
    answer with what is held), and beyond a bound they are told to come back (429)."""
    async with adapters(world, [GEM], tmp_path) as urls, aiohttp.ClientSession() as session:

        async def poll() -> tuple[int, float]:
            start = time.monotonic()
            async with session.get(urls[GEM] + "/v1/inbox?wait=1") as response:
                return response.status, time.monotonic() - start

        results = await asyncio.gather(*(poll() for _ in range(12)))
    statuses = sorted(s for s, _ in results)
    assert statuses.count(200) == 8 and statuses.count(429) == 4, statuses
    assert max(t for _, t in results) < 3.0


async def test_folder_mode_survives_what_a_folder_can_hold(world: World, tmp_path: Path) -> None:
    """Junk, a link to a file elsewhere, a file too large, a contract breach and a request
    under a name used before: each ends in failed/ or sent/ with its reason, none stops the
    requests after it, nothing outside the folder is read or written."""
    from schakel.adapters.folder import Folder

    body = example_body(MessageType.M1)
    request = message_request(body, example_draft(MessageType.M1, body), [GEM, ZVH])
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(request))
    root = tmp_path / "pol-folder"
    folder = Folder(root)
    api = AdapterApi(world.clients["POL.west"], state_dir=tmp_path / "pol", folder=root)
    runner = QuietRunner(api.app())
    await runner.setup()
    try:
        drops = {
            "a-junk.json": b"\x00not json",
            "b-forever.json": json.dumps({**request, "lifetime": "P999999999D"}).encode(),
            "c-large.json": b" " * (3 * 1024 * 1024),
            "d-first.json": json.dumps(request).encode(),
        }
        os.symlink(outside, folder.outbox / "a-link.json")
        for name, data in drops.items():
            folder.write(folder.outbox, name, data)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and list(folder.outbox.glob("*.json")):
            await asyncio.sleep(0.05)
        again = json.dumps({**request, "no_forward": True}).encode()
        folder.write(folder.outbox, "d-first.json", again)
        while time.monotonic() < deadline and list(folder.outbox.glob("*.json")):
            await asyncio.sleep(0.05)
        failed = {p.name for p in folder.failed.glob("*.problem.json")}
        assert failed == {"a-junk.problem.json", "a-link.problem.json",
                          "b-forever.problem.json", "c-large.problem.json"}  # fmt: skip
        sent = sorted(p.name for p in folder.sent.glob("*.sent.json"))
        assert sent == ["d-first.2.sent.json", "d-first.sent.json"]
        ids = {json.loads((folder.sent / n).read_text())["message_id"] for n in sent}
        assert len(ids) == 2  # a new request under an old name is a new message
        assert json.loads(outside.read_text()) == request  # read by nobody, written by nobody
    finally:
        await runner.cleanup()


async def test_webhook_follows_no_redirect_and_gives_an_item_up_for_the_next(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A back office answering with a redirect does not get the signed body sent elsewhere;
    an item it does not take after the attempts is handed back to JetStream (which retries
    it on its schedule and finally dead-letters it) and the next item is pushed."""
    from schakel.adapters import webhook as webhook_module
    from schakel.adapters.webhook import Webhook

    monkeypatch.setattr(webhook_module, "_ATTEMPTS", 2)
    elsewhere: list[str] = []
    taken: list[str] = []

    async def back_office(request: web.Request) -> web.Response:
        item = json.loads(await request.read())
        if item["message_id"] == first:
            raise web.HTTPTemporaryRedirect(f"http://127.0.0.1:{port}/elsewhere")
        taken.append(item["message_id"])
        return web.Response(status=204)

    async def other(request: web.Request) -> web.Response:
        elsewhere.append(await request.text())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/in", back_office)
    app.router.add_post("/elsewhere", other)
    hook = web.AppRunner(app, access_log=None)
    port = await serve(hook)
    pol = world.clients["POL.west"]
    body = example_body(MessageType.M1)
    to = [OrgId(GEM), OrgId(ZVH)]
    first = await pol.send(body, example_draft(MessageType.M1, body), to)
    second = await pol.send(body, example_draft(MessageType.M1, body), to)
    api = AdapterApi(world.clients[GEM], state_dir=tmp_path / "gem",
                     webhook=Webhook(f"http://127.0.0.1:{port}/in", b"s" * 32))  # fmt: skip
    runner = QuietRunner(api.app())
    await runner.setup()
    try:
        deadline = time.monotonic() + 20
        while second not in taken and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert second in taken and first not in taken
        assert elsewhere == []
    finally:
        await runner.cleanup()
        await hook.cleanup()
