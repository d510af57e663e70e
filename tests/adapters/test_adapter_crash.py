"""kill -9 of the adapter process while 500 deliveries come in, polled or pushed by webhook:
the back office gets every one, and gets one again only where its acknowledgement (poll) or
the adapter's record of its 2xx (webhook) was cut off by the kill."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from schakel.adapters.client import Delivery, PartnerClient
from schakel.contracts.enums import MessageType
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.ids import OrgId
from schakel.harness.http_partner import message_request, serve
from schakel.harness.scenarios import GEM, ZVH
from schakel.hub.natsserver import NatsServer, free_port
from schakel.keys.crypto import SigningKey
from schakel.keys.identity import PartnerIdentity
from schakel.keys.keystore import PASSPHRASE_ENV, KdfParams, save_keystore
from tests.hub.conftest import World, world_of

COUNT = 500
TOKEN = "k" * 40
SECRET = b"w" * 40


class Adapter:
    """``schakel adapter run`` for an organisation (GEM) as a process, restartable."""

    def __init__(self, world: World, server: NatsServer, tmp: Path, webhook: str | None,
                 org: str = GEM) -> None:  # fmt: skip
        save_keystore(world.identities[org], tmp / "gem.keystore", SecretStr("pw"),
                      KdfParams.for_tests())  # fmt: skip
        (tmp / "token").write_text(TOKEN)
        (tmp / "secret").write_bytes(SECRET)
        self.port = free_port()
        self.command = [
            sys.executable, "-m", "schakel", "adapter", "run",
            "--listen", f"127.0.0.1:{self.port}", "--nats", server.url,
            "--keystore", str(tmp / "gem.keystore"), "--state-dir", str(tmp / "state"),
            "--api-token-file", str(tmp / "token"),
            "--authority-public", base64.b64encode(world.authority.public.raw).decode(),
        ]  # fmt: skip
        if webhook == "folder":
            self.command += ["--folder", str(tmp / "folder")]
        elif webhook is not None:
            self.command += ["--webhook-url", webhook, "--webhook-secret-file", str(tmp / "secret")]
        self.log = tmp / "adapter.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, PASSPHRASE_ENV: "pw"},
            )  # fmt: skip

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()


@contextlib.asynccontextmanager
async def incoming(world: World, count: int) -> AsyncIterator[list[str]]:
    """``count`` signals from POL to GEM and ZVH, sent by POL's SDK while inside; their ids."""
    pol: PartnerClient = world.clients["POL.west"]
    body = example_body(MessageType.M1)
    ids: list[str] = []

    async def send() -> None:
        for _ in range(count):
            ids.append(await pol.send(body, example_draft(MessageType.M1, body),
                                      [OrgId(GEM), OrgId(ZVH)]))  # fmt: skip

    task = asyncio.create_task(send())
    try:
        yield ids
    finally:
        await task


async def _kill_at(adapter: Adapter, got: Counter[str], marks: tuple[int, ...]) -> None:
    for mark in marks:
        deadline = time.monotonic() + 60
        while len(got) < mark and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        adapter.kill()
        adapter.start()


@pytest.fixture
async def world(
    nats_server: NatsServer,
    tmp_path: Path,
    partner_identities: dict[str, PartnerIdentity],
    hub_identity: PartnerIdentity,
    authority: SigningKey,
) -> AsyncIterator[World]:
    """A system whose deliveries come back 2 s after a consumer stops acknowledging (what
    the killed adapter held), not the default 30 s."""
    backoff = (2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
    async with world_of(nats_server, tmp_path, partner_identities, hub_identity, authority,
                        ack_wait=2.0, redelivery=backoff) as running:  # fmt: skip
        yield running


@pytest.mark.parametrize("mode", ["poll", "webhook", "folder"])
async def test_kill_9_of_the_adapter_loses_nothing(
    world: World, nats_server: NatsServer, tmp_path: Path, mode: str
) -> None:
    """500 deliveries to GEM, its adapter killed at a fifth and three fifths of them: every
    one reaches the back office; one again only where the kill cut off its acknowledgement."""
    got: Counter[str] = Counter()
    cut_off: set[str] = set()  # acknowledged by the back office while the adapter died
    runner = None
    url = None
    if mode == "webhook":

        async def back_office(request: web.Request) -> web.Response:
            got[request.headers["Schakel-Delivery"]] += 1
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/in", back_office)
        runner = web.AppRunner(app, access_log=None)
        port = await serve(runner)
        url = f"http://127.0.0.1:{port}/in"
    adapter = Adapter(world, nats_server, tmp_path, "folder" if mode == "folder" else url)
    adapter.start()
    try:
        async with incoming(world, COUNT) as ids, aiohttp.ClientSession() as session:
            t0 = time.monotonic()
            killing = asyncio.create_task(_kill_at(adapter, got, (COUNT // 5, COUNT * 3 // 5)))
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and (len(got) < COUNT or not killing.done()):
                if mode == "poll":
                    await _poll_once(session, adapter.port, got, cut_off)
                elif mode == "folder":  # the back office takes each file and removes it
                    for path in sorted((tmp_path / "folder" / "inbox").glob("*.json")):
                        got[path.name.removesuffix(".json")] += 1
                        path.unlink()
                    await asyncio.sleep(0.02)
                else:
                    await asyncio.sleep(0.05)
            await killing
            print(f"\n  drained in {time.monotonic() - t0:.1f} s, sent {len(ids)} by then")
        missing = set(ids) - set(got)
        repeated = {m for m, n in got.items() if n > 1}
        print(
            f"\nadapter kill -9 x2 ({mode}): sent {len(ids)}, got {len(set(got))}, lost "
            f"{len(missing)}, repeated {len(repeated)} (cut off by a kill: {len(cut_off)})"
        )
        assert not missing
        if mode == "poll":
            assert repeated <= cut_off  # again only what the kill kept from being acknowledged
        else:  # at most the one between the back office having it and the ack, per kill
            assert len(repeated) <= 2
    finally:
        adapter.kill()
        if runner is not None:
            await runner.cleanup()


async def _poll_once(
    session: aiohttp.ClientSession, port: int, got: Counter[str], cut_off: set[str]
) -> None:
    """One long poll and the acknowledgements, as a back office that keeps the ids it did."""
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with session.get(base + "/v1/inbox?wait=1", headers=headers) as response:
            if response.status != 200:
                await asyncio.sleep(0.1)
                return
            items = (await response.json())["items"]
    except aiohttp.ClientError:  # the adapter is down or restarting
        await asyncio.sleep(0.1)
        return
    for item in items:
        if item["kind"] != "delivery":
            continue
        got[item["message_id"]] += 1
        try:
            async with session.post(base + f"/v1/inbox/{item['id']}/ack",
                                    headers=headers) as response:  # fmt: skip
                if response.status != 204:
                    cut_off.add(item["message_id"])
        except aiohttp.ClientError:
            cut_off.add(item["message_id"])


async def test_an_idempotent_post_retried_after_a_crash_is_sent_once(
    world: World, nats_server: NatsServer, tmp_path: Path
) -> None:
    """The back office POSTs with an Idempotency-Key, the adapter is killed (-9) and started
    again, the back office POSTs the same request again: the same message id, and the
    recipient gets the message once."""
    adapter = Adapter(world, nats_server, tmp_path, None, org="POL.west")
    body = example_body(MessageType.M1)
    request = message_request(body, example_draft(MessageType.M1, body), [GEM, ZVH])
    headers = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "signal-7"}
    ids = []
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(2):
                adapter.start()
                ids.append(await _post_when_up(session, adapter.port, request, headers))
                adapter.kill()
    finally:
        if adapter.process is not None and adapter.process.poll() is None:
            adapter.kill()
    assert ids[0] == ids[1]
    got = []
    while (item := await world.clients[GEM].receive(timeout=2.0)) is not None:
        if isinstance(item, Delivery):
            got.append(item.message_id)
            await item.ack()
    assert got == ids[:1]


async def _post_when_up(
    session: aiohttp.ClientSession, port: int, request: dict[str, object],
    headers: dict[str, str],
) -> str:  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            async with session.post(f"http://127.0.0.1:{port}/v1/messages", json=request,
                                    headers=headers) as response:  # fmt: skip
                assert response.status == 202, await response.text()
                return str((await response.json())["message_id"])
        except aiohttp.ClientConnectionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("listen", ["0.0.0.0", "unix"])
async def test_the_adapter_process_listens_where_told_and_only_with_the_token_beyond_loopback(
    world: World, nats_server: NatsServer, tmp_path: Path, listen: str
) -> None:
    """On all interfaces, the adapter answers a caller without the token 401 (the liveness
    probe aside); on a unix socket it serves the API to whoever may open the socket."""
    adapter = Adapter(world, nats_server, tmp_path, None)
    socket = tmp_path / "adapter.sock"
    where = f"unix:{socket}" if listen == "unix" else f"0.0.0.0:{adapter.port}"
    adapter.command[adapter.command.index("--listen") + 1] = where
    adapter.start()
    try:
        connector = aiohttp.UnixConnector(path=str(socket)) if listen == "unix" else None
        base = "http://adapter" if listen == "unix" else f"http://127.0.0.1:{adapter.port}"
        async with aiohttp.ClientSession(connector=connector) as session:
            deadline = time.monotonic() + 30
            while True:
                try:
                    async with session.get(base + "/healthz") as response:
                        assert response.status == 200
                        break
                except (aiohttp.ClientConnectionError, FileNotFoundError):
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
            async with session.get(base + "/v1/inbox") as response:
                assert response.status == 401
                assert response.content_type == "application/problem+json"
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            async with session.get(base + "/v1/inbox", headers=bearer) as response:
                assert response.status == 200
    finally:
        adapter.kill()


async def test_beyond_loopback_mutual_tls_stands_in_for_the_token(
    world: World, nats_server: NatsServer, tmp_path: Path
) -> None:
    """With a client CA and no token, the adapter listens on all interfaces over TLS and
    serves only callers with a certificate from that CA."""
    import ssl

    import trustme

    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1")
    client_cert = ca.issue_cert("back-office.example")
    for name, blob in (("server.pem", server_cert.cert_chain_pems[0].bytes()),
                       ("server.key", server_cert.private_key_pem.bytes()),
                       ("ca.pem", ca.cert_pem.bytes())):  # fmt: skip
        (tmp_path / name).write_bytes(blob)
    adapter = Adapter(world, nats_server, tmp_path, None)
    command = adapter.command
    at = command.index("--api-token-file")
    del command[at : at + 2]
    command[command.index("--listen") + 1] = f"0.0.0.0:{adapter.port}"
    command += ["--api-tls-cert", str(tmp_path / "server.pem"),
                "--api-tls-key", str(tmp_path / "server.key"),
                "--api-tls-client-ca", str(tmp_path / "ca.pem")]  # fmt: skip
    adapter.start()
    url = f"https://127.0.0.1:{adapter.port}/readyz"
    try:
        anonymous = ssl.create_default_context()
        ca.configure_trust(anonymous)
        known = ssl.create_default_context()
        ca.configure_trust(known)
        client_cert.configure_cert(known)
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 30
            while True:
                try:
                    async with session.get(url, ssl=known) as response:
                        assert response.status == 200
                        break
                except aiohttp.ClientConnectorError:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
            with pytest.raises(aiohttp.ClientError):
                async with session.get(url, ssl=anonymous) as response:
                    await response.read()
    finally:
        adapter.kill()


def test_what_counts_as_loopback() -> None:
    from schakel.adapters.http import is_loopback

    for host in ("127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
    for host in (
        "0.0.0.0",
        "::",
        "[::]",
        "",
        "10.0.0.1",
        "::ffff:10.0.0.1",
        "no.such.host.invalid",
    ):
        assert not is_loopback(host), host
