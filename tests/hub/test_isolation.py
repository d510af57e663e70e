"""Partner isolation at the NATS layer, attacked with every partner's real credentials.

The server runs the configuration ``schakel nats-config`` generates: one NKey user per partner
with exact permissions. Every attack below must be denied by the server itself (a permissions
violation), and the permitted path must still work end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
import trustme
from nats.aio.client import Client

from schakel.adapters.client import Delivery, PartnerClient
from schakel.bus import Credentials
from schakel.contracts.enums import MessageType
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.ids import OrgId
from schakel.contracts.policy import default_policy
from schakel.contracts.topology import inbox_prefix
from schakel.hub.natsconfig import TlsFiles, write_config
from schakel.hub.natsserver import NatsServer, free_port
from schakel.hub.service import Hub, provision, registration
from schakel.hub.settings import HubSettings
from schakel.keys.crypto import SigningKey
from schakel.keys.identity import PartnerIdentity

PARTNERS = [
    OrgId(o) for o in ("POL.west", "OM.west", "ZVH.west", "GEM.westerstad", "IND.landelijk")
]
ATTACKER, VICTIM = OrgId("POL.west"), OrgId("OM.west")


@dataclass
class Secured:
    """A server on the generated configuration, with a hub and two partner clients."""

    server: NatsServer
    config_dir: Path
    identities: dict[OrgId, PartnerIdentity]
    authority: SigningKey

    def seed(self, org: str) -> Path:
        return self.config_dir / "creds" / f"{org}.nk"


@pytest.fixture
async def secured(
    tmp_path: Path, hub_identity: PartnerIdentity, authority: SigningKey
) -> AsyncIterator[Secured]:
    """A secured system: generated NATS config, hub with its credentials, partners provisioned."""
    port = free_port()
    config = write_config(tmp_path / "cfg", PARTNERS, port=port, store_dir=tmp_path / "js")
    identities = {o: PartnerIdentity.generate(o) for o in PARTNERS}
    hub_creds = Credentials(nkey_seed=tmp_path / "cfg" / "creds" / "hub.nk")
    async with NatsServer(tmp_path, port=port, config=config) as server:
        requests = [registration(i) for i in (*identities.values(), hub_identity)]
        await provision(server.url, default_policy(), requests, authority, credentials=hub_creds)
        settings = HubSettings(
            nats_url=server.url,
            data_dir=tmp_path,
            credentials=hub_creds,
            authority=authority.public,
        )
        async with Hub(settings, hub_identity):
            yield Secured(server, tmp_path / "cfg", identities, authority)


@contextlib.asynccontextmanager
async def partner_connection(
    url: str, seed: Path, org: OrgId, **options: Any
) -> AsyncIterator[tuple[Client, list[str]]]:
    """A bare NATS connection with ``org``'s credentials, collecting the server's errors."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())

    nc = await nats.connect(url, nkeys_seed=str(seed), inbox_prefix=inbox_prefix(org).encode(),
                            error_cb=on_error, **options)  # fmt: skip
    try:
        yield nc, errors
    finally:
        await nc.close()


def raw_client(
    secured: Secured, org: OrgId
) -> contextlib.AbstractAsyncContextManager[tuple[Client, list[str]]]:
    """A bare connection with ``org``'s credentials to the secured server, no reconnecting."""
    return partner_connection(secured.server.url, secured.seed(org), org, allow_reconnect=False)


async def refused(url: str, **options: Any) -> BaseException:
    """Try to connect; return why it failed (and close what a failed attempt leaves open)."""
    nc = Client()
    try:
        await asyncio.wait_for(
            nc.connect(
                url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2, **options
            ),
            timeout=5,
        )
    except (nats.errors.Error, ssl.SSLError, OSError, TimeoutError) as exc:
        return exc
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), timeout=2)
        if nc._transport is not None:  # a failed handshake leaves the socket open
            nc._transport.close()  # type: ignore[no-untyped-call]
    raise AssertionError("the connection was accepted")


async def _publish(nc: Client, subject: str) -> None:
    await nc.publish(subject, b"{}")


async def _request(nc: Client, subject: str) -> None:
    with contextlib.suppress(nats.errors.TimeoutError, nats.errors.NoRespondersError):
        await nc.request(subject, b'{"batch":1}', timeout=0.3)


async def _subscribe(nc: Client, subject: str) -> None:
    await nc.subscribe(subject)


Attack = tuple[str, Callable[[Client, str], Awaitable[None]], str]
V = "deliver-OM-west"
VS = "SCHAKEL_OUT_OM-west"  # the victim's delivery stream
ATTACKS: list[Attack] = [
    ("publish to another partner's inbound subject", _publish, "schakel.in.OM.west"),
    ("publish to another partner's inbound partition", _publish, "schakel.in.OM.west.1"),
    ("publish to an inbound partition that is none", _publish, "schakel.in.POL.west.4"),
    ("write the hub instances alive", _publish, "schakel.hubs.hub-evil"),
    ("pull from another's consumer", _request, f"$JS.API.CONSUMER.MSG.NEXT.{VS}.{V}"),
    ("acknowledge on another partner's consumer", _publish, f"$JS.ACK.{VS}.{V}.1.1.1.1.0"),
    ("create a consumer", _request, f"$JS.API.CONSUMER.CREATE.{VS}"),
    ("create a named consumer on another's subject", _request,
     f"$JS.API.CONSUMER.CREATE.{VS}.evil.schakel.out.OM.west"),
    ("create a durable consumer", _request, f"$JS.API.CONSUMER.DURABLE.CREATE.{VS}.evil"),
    ("inspect another partner's consumer", _request, f"$JS.API.CONSUMER.INFO.{VS}.{V}"),
    ("delete another partner's consumer", _request, f"$JS.API.CONSUMER.DELETE.{VS}.{V}"),
    ("list consumers", _request, f"$JS.API.CONSUMER.NAMES.{VS}"),
    ("read deliveries by sequence", _request, f"$JS.API.STREAM.MSG.GET.{VS}"),
    ("read the audit trail by sequence", _request, "$JS.API.STREAM.MSG.GET.SCHAKEL_AUDIT"),
    ("direct-get deliveries", _request, f"$JS.API.DIRECT.GET.{VS}"),
    ("direct-get case metadata", _request, "$JS.API.DIRECT.GET.KV_schakel-cases"),
    ("list streams", _request, "$JS.API.STREAM.LIST"),
    ("list stream names", _request, "$JS.API.STREAM.NAMES"),
    ("account info", _request, "$JS.API.INFO"),
    ("create a stream", _request, "$JS.API.STREAM.CREATE.EVIL"),
    ("delete the audit stream", _request, "$JS.API.STREAM.DELETE.SCHAKEL_AUDIT"),
    ("purge another's inbound stream", _request, "$JS.API.STREAM.PURGE.SCHAKEL_IN_OM-west"),
    ("subscribe to everything", _subscribe, ">"),
    ("subscribe to all inboxes", _subscribe, "_INBOX.>"),
    ("subscribe to another partner's inbox", _subscribe, "_INBOX_OM-west.>"),
    ("subscribe to another partner's deliveries", _subscribe, "schakel.out.OM.west"),
    ("subscribe to all inbound traffic", _subscribe, "schakel.in.>"),
    ("publish into the audit stream", _publish, "schakel.audit"),
    ("publish into its own delivery subject", _publish, "schakel.out.POL.west"),
    ("publish into another's delivery subject", _publish, "schakel.out.OM.west"),
    ("append to the key directory log", _publish, "schakel.keylog"),
    ("read dead letters", _request, "$JS.API.STREAM.MSG.GET.SCHAKEL_DLQ"),
    ("write case metadata", _publish, "$KV.schakel-cases.case-aaaaaaaaaaaaaaaaaaaaaaaaaa"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "act", "subject"), ATTACKS, ids=[a[0] for a in ATTACKS])
async def test_attack_is_denied(
    secured: Secured, name: str, act: Callable[[Client, str], Awaitable[None]], subject: str
) -> None:
    """A partner's credentials cannot do anything outside its own lane (the server says no)."""
    async with raw_client(secured, ATTACKER) as (nc, errors):
        await act(nc, subject)
        await nc.flush()
        with contextlib.suppress(nats.errors.TimeoutError):
            await nc.request(f"{inbox_prefix(ATTACKER)}.ping", b"", timeout=0.2)
    assert any("permissions violation" in e and subject.lower() in e for e in errors), errors


RoleAttack = tuple[str, str, Callable[[Client, str], Awaitable[None]], str]
_EITHER: list[Attack] = [
    ("publish into a partner's inbound subject", _publish, "schakel.in.OM.west"),
    ("publish into a partner's inbound partition", _publish, "schakel.in.OM.west.3"),
    ("publish into a partner's deliveries", _publish, "schakel.out.OM.west.POL.west"),
    ("pull a partner's deliveries", _request, f"$JS.API.CONSUMER.MSG.NEXT.{VS}.{V}"),
    ("read deliveries by direct get", _request, f"$JS.API.DIRECT.GET.{VS}"),
    ("read case metadata", _request, "$JS.API.DIRECT.GET.KV_schakel-cases"),
    ("write case metadata", _publish, "$KV.schakel-cases.case-aaaaaaaaaaaaaaaaaaaaaaaaaa"),
    ("publish into the audit stream", _publish, "schakel.audit"),
    ("delete a dead letter itself", _request, "$JS.API.STREAM.MSG.DELETE.SCHAKEL_DLQ"),
    ("stream info", _request, "$JS.API.STREAM.INFO.SCHAKEL_AUDIT"),
    ("create a consumer", _request, "$JS.API.CONSUMER.CREATE.SCHAKEL_AUDIT"),
    ("delete the key log", _request, "$JS.API.STREAM.DELETE.SCHAKEL_KEYLOG"),
    ("ask about a partner's message", _request, "schakel.status.OM.west"),
    ("subscribe to everything", _subscribe, ">"),
    ("subscribe to a partner's deliveries", _subscribe, "schakel.out.>"),
    ("subscribe to a partner's inbox", _subscribe, "_INBOX_OM-west.>"),
]
ROLE_ATTACKS: list[RoleAttack] = [
    (role, name, act, subject)
    for role in ("operator", "security")
    for name, act, subject in _EITHER
] + [
    ("operator", "append to the key log", _publish, "schakel.keylog"),
    ("operator", "publish a registry", _publish, "schakel.registry"),
    ("operator", "read the key log", _request, "$JS.API.DIRECT.GET.SCHAKEL_KEYLOG"),
    ("security", "read the audit trail", _request, "$JS.API.DIRECT.GET.SCHAKEL_AUDIT"),
    ("security", "read dead letters", _request, "$JS.API.DIRECT.GET.SCHAKEL_DLQ"),
    ("security", "replay a dead letter", _request, "schakel.admin.replay"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("role", "name", "act", "subject"), ROLE_ATTACKS, ids=[f"{a[0]}: {a[1]}" for a in ROLE_ATTACKS]
)
async def test_an_administrative_user_can_do_only_its_role(
    secured: Secured,
    role: str,
    name: str,
    act: Callable[[Client, str], Awaitable[None]],
    subject: str,
) -> None:
    """The operator reads metadata and asks for replays; the security officer appends to and
    reads the key log and the registry. Anything else the server refuses."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())

    nc = await nats.connect(secured.server.url, nkeys_seed=str(secured.seed(role)),
                            allow_reconnect=False, error_cb=on_error)  # fmt: skip
    try:
        await act(nc, subject)
        await nc.flush()
        with contextlib.suppress(nats.errors.TimeoutError):
            await nc.request("_INBOX.ping", b"", timeout=0.2)
    finally:
        await nc.close()
    assert any("permissions violation" in e and subject.lower() in e for e in errors), errors


async def test_every_partner_is_confined_to_its_own_subject(secured: Secured) -> None:
    """With each partner's credentials, publishing as any other partner is denied."""
    for org in PARTNERS:
        async with raw_client(secured, org) as (nc, errors):
            for other in PARTNERS:
                if other != org:
                    await nc.publish(f"schakel.in.{other}", b"{}")
            await nc.flush()
            with contextlib.suppress(nats.errors.TimeoutError):
                await nc.request(f"{inbox_prefix(org)}.ping", b"", timeout=0.2)
        denied = [e for e in errors if "permissions violation" in e and "schakel.in." in e]
        assert len(denied) == len(PARTNERS) - 1, (org, errors)


async def test_permitted_path_still_works(secured: Secured) -> None:
    """With exact permissions only, a partner still sends, and another still receives and acks."""
    pol, zvh = OrgId("POL.west"), OrgId("ZVH.west")
    url, key = secured.server.url, secured.authority.public
    async with (
        PartnerClient(
            secured.identities[pol], url, authority=key, nkey_seed=secured.seed(pol)
        ) as a,
        PartnerClient(
            secured.identities[zvh], url, authority=key, nkey_seed=secured.seed(zvh)
        ) as b,
    ):
        body = example_body(MessageType.M1)
        message_id = await a.send(body, example_draft(MessageType.M1, body), [zvh])
        item = await b.receive(timeout=10)
        assert isinstance(item, Delivery)
        assert item.message_id == message_id
        await item.ack()


async def test_unknown_and_anonymous_clients_refused(secured: Secured, tmp_path: Path) -> None:
    """Without a registered NKey nobody connects."""
    from schakel.hub.natsconfig import ensure_seed

    stranger = tmp_path / "stranger.nk"
    ensure_seed(stranger)
    for options in ({}, {"nkeys_seed": str(stranger)}):
        assert "Authorization Violation" in str(await refused(secured.server.url, **options))


async def test_reload_adds_and_removes_a_partner(secured: Secured, tmp_path: Path) -> None:
    """Regenerating the config and reloading admits a new partner and shuts out a removed one."""
    newcomer = OrgId("KMAR.landelijk")
    seed = secured.seed(newcomer)
    config = write_config(secured.config_dir, [*PARTNERS, newcomer], port=secured.server.port,
                          store_dir=tmp_path / "js")  # fmt: skip
    assert seed.exists()
    await secured.server.reload()
    async with raw_client(secured, newcomer) as (nc, errors):
        await nc.publish(f"schakel.in.{newcomer}", b"{}")
        await nc.flush()
        # Its imports work: the key directory answers (after one reload they did not).
        answer = await nc.request("$JS.API.DIRECT.GET.SCHAKEL_KEYLOG", b'{"seq":1}', timeout=5)
        assert answer.headers is not None and answer.headers.get("Nats-Sequence") == "1"
    assert errors == []
    write_config(secured.config_dir, PARTNERS, port=secured.server.port, store_dir=tmp_path / "js")
    await secured.server.reload()
    assert "Authorization Violation" in str(await refused(secured.server.url, nkeys_seed=str(seed)))
    assert config.exists()


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    """A test CA and a server certificate for 127.0.0.1."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = TlsFiles(
        cert=tmp_path / "server.pem", key=tmp_path / "server.key", ca=tmp_path / "ca.pem"
    )
    cert.cert_chain_pems[0].write_to_path(str(files.cert))
    cert.private_key_pem.write_to_path(str(files.key))
    ca.cert_pem.write_to_path(str(files.ca))
    return files


async def test_tls_requires_trusting_the_ca(tmp_path: Path, tls_files: TlsFiles) -> None:
    """Clients verify the server: without the CA the connection is refused; with it, it works."""
    port = free_port()
    config = write_config(tmp_path / "cfg", PARTNERS, port=port, store_dir=tmp_path / "js",
                          tls=tls_files)  # fmt: skip
    seed = str(tmp_path / "cfg" / "creds" / "POL.west.nk")
    async with NatsServer(tmp_path, port=port, config=config) as server:
        url = f"tls://127.0.0.1:{port}"
        untrusting = await refused(url, nkeys_seed=seed, tls=ssl.create_default_context())
        assert "certificate verify failed" in str(untrusting).lower() or untrusting
        await refused(server.url, nkeys_seed=seed)  # plaintext to a TLS server
        trusting = ssl.create_default_context(cafile=str(tls_files.ca))
        nc = await nats.connect(url, nkeys_seed=seed, allow_reconnect=False, tls=trusting)
        assert nc.is_connected
        await nc.close()


async def test_a_server_that_verifies_clients_takes_the_certificate_the_settings_name(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    """With `nats-config --verify-clients`, a client without a certificate from the CA is
    refused; every command and the SDK present one with --tls-cert/--tls-key."""
    import dataclasses

    from schakel.bus import Bus

    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1")
    files = dataclasses.replace(tls_files, verify_clients=True)
    server_cert.cert_chain_pems[0].write_to_path(str(files.cert))
    server_cert.private_key_pem.write_to_path(str(files.key))
    ca.cert_pem.write_to_path(str(files.ca))
    client = ca.issue_cert("client.schakel.test")
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    client.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    port = free_port()
    config = write_config(tmp_path / "cfg", PARTNERS, port=port, store_dir=tmp_path / "js",
                          tls=files)  # fmt: skip
    seed = tmp_path / "cfg" / "creds" / "operator.nk"
    async with NatsServer(tmp_path, port=port, config=config):
        url = f"tls://127.0.0.1:{port}"
        trusting = ssl.create_default_context(cafile=str(files.ca))
        await refused(url, nkeys_seed=str(seed), tls=trusting)  # no client certificate
        credentials = Credentials(nkey_seed=seed, tls_ca=files.ca,
                                  tls_cert=tmp_path / "client.pem",
                                  tls_key=tmp_path / "client.key")  # fmt: skip
        async with Bus(url, name="test", credentials=credentials) as bus:
            await bus.flush()
