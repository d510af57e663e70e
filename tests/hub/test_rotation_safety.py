"""A routine rotation (docs/RUNBOOK-KEYS.md, `schakel keys rotate`) while the partner's adapter
runs loses nothing and raises no compromise alarm; a delivery the adapter cannot open for want
of a key is never acknowledged and dropped: it is retried, then dead-lettered and its sender
told, as any other delivery."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from schakel.adapters.client import Delivery, NotRegistered, PartnerClient, Refusal, Rejected
from schakel.bus import append_key_event
from schakel.contracts.enums import MessageType, ReasonCode
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.ids import OrgId
from schakel.harness.local import local_hub
from schakel.harness.scenarios import POL, ZVH
from schakel.hub.service import registration
from schakel.keys.envelope import seal
from schakel.keys.identity import PartnerIdentity
from schakel.keys.keylog import add_encryption_key_request, sign_request
from schakel.keys.keystore import PASSPHRASE_ENV, KdfParams, load_keystore, save_keystore


async def _until(predicate: object, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_a_cli_rotation_reaches_the_running_adapter_without_alarm(tmp_path: Path) -> None:
    authority = PartnerIdentity.generate(OrgId("HUB.directory-authority"))
    save_keystore(authority, tmp_path / "authority.keystore", SecretStr("authority-pass"),
                  KdfParams.for_tests())  # fmt: skip
    yesterday = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)  # so the new key is newer
    ids = {o: PartnerIdentity.generate(OrgId(o), now=yesterday) for o in (POL, ZVH)}
    keystore = tmp_path / "ZVH.west.keystore"
    save_keystore(ids[ZVH], keystore, SecretStr("zvh-pass"), KdfParams.for_tests())
    async with local_hub(ids, data_dir=tmp_path / "hub", authority=authority.signing_key,
                         connect=False) as system:  # fmt: skip
        key = system.authority.public
        async with (
            PartnerClient(ids[POL], system.url, authority=key) as pol,
            PartnerClient(
                ids[ZVH], system.url, authority=key,
                identity_source=lambda: load_keystore(keystore, SecretStr("zvh-pass")),
            ) as zvh,
        ):  # fmt: skip
            env = {**os.environ, PASSPHRASE_ENV: "zvh-pass",
                   "SCHAKEL_AUTHORITY_PASSPHRASE": "authority-pass"}  # fmt: skip
            rotate = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "schakel", "keys", "rotate", "--keystore", str(keystore),
                 "--authority", str(tmp_path / "authority.keystore"), "--nats", system.url],
                capture_output=True, text=True, env=env, check=False,
            )  # fmt: skip
            assert rotate.returncode == 0, rotate.stderr
            new_kid = load_keystore(keystore, SecretStr("zvh-pass")).certificates[-1].kid
            await _until(lambda: pol.directory.record(OrgId(ZVH)).current_encryption_key(
                dt.datetime.now(dt.UTC)).kid == new_kid)  # fmt: skip
            body = example_body(MessageType.M1)
            sent = await pol.send(body, example_draft(MessageType.M1, body), [OrgId(ZVH)])
            item = await zvh.receive(timeout=30)
            assert isinstance(item, Delivery), item
            assert item.message_id == sent
            await item.ack()
            assert zvh.alarms == []
            assert new_kid in {c.kid for c in zvh.identity.certificates}


async def test_a_delivery_for_a_key_not_held_is_dead_lettered_not_dropped(tmp_path: Path) -> None:
    yesterday = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)  # so the new key is newer
    ids = {o: PartnerIdentity.generate(OrgId(o), now=yesterday) for o in (POL, ZVH)}
    async with local_hub(ids, data_dir=tmp_path, redelivery=(0.2, 0.2)) as system:
        assert system.hub is not None and system.hub.bus is not None
        pol, zvh = system.client(POL), system.client(ZVH)
        now = dt.datetime.now(dt.UTC)
        elsewhere = ids[ZVH].with_new_encryption_key(now=now)  # a key this adapter never gets
        await append_key_event(
            system.hub.bus,
            sign_request(add_encryption_key_request(elsewhere, now), elsewhere.signing_key),
            system.authority,
        )
        new_kid = elsewhere.certificates[-1].kid
        await _until(lambda: pol.directory.record(OrgId(ZVH)).current_encryption_key(
            dt.datetime.now(dt.UTC)).kid == new_kid)  # fmt: skip
        body = example_body(MessageType.M1)
        sent = await pol.send(body, example_draft(MessageType.M1, body), [OrgId(ZVH)])
        # The adapter keeps pulling (as a running one does): it never acknowledges what it
        # cannot open, so JetStream retries it and then reports it to the hub.
        pulling = asyncio.create_task(zvh.receive(timeout=8))
        notice = await pol.receive(timeout=20)
        assert await pulling is None
        assert isinstance(notice, Refusal), notice
        assert notice.notice.reason is ReasonCode.UNDELIVERABLE
        assert notice.notice.message_id == sent
        await notice.ack()


async def test_the_keystore_is_read_again_at_most_every_few_seconds() -> None:
    """A flood of deliveries sealed to a key of ours we do not hold costs one key derivation
    per interval, not one per delivery."""
    identity = PartnerIdentity.generate(OrgId(ZVH))
    reads = []

    def source() -> PartnerIdentity:
        reads.append(1)
        return identity

    client = PartnerClient(identity, "nats://127.0.0.1:1", authority=identity.signing_key.public,
                           identity_source=source)  # fmt: skip
    await asyncio.gather(*(client._reload_identity() for _ in range(100)))
    assert len(reads) == 1
    await client._reload_identity(force=True)  # news from the key log: always read
    assert len(reads) == 2


async def test_an_unregistered_partner_is_told_at_connect(tmp_path: Path) -> None:
    """The SDK fails at connect with a clear error, rather than sending into the void and
    looping on fetch errors: for an organisation the directory does not know, and for a
    keystore whose keys are not the registered ones."""
    ids = {o: PartnerIdentity.generate(OrgId(o)) for o in (POL, ZVH)}
    async with local_hub(ids, data_dir=tmp_path, connect=False, run_hub=False) as system:
        key = system.authority.public
        stranger = PartnerIdentity.generate(OrgId("RVDK.noord"))
        with pytest.raises(NotRegistered, match="not in the key directory"):
            async with PartnerClient(stranger, system.url, authority=key):
                pass
        impostor = PartnerIdentity.generate(OrgId(POL))  # other keys, same name
        with pytest.raises(NotRegistered, match="does not hold"):
            async with PartnerClient(impostor, system.url, authority=key):
                pass
        async with PartnerClient(ids[POL], system.url, authority=key):
            pass


async def test_a_delivery_to_a_key_we_pruned_is_rejected_not_held(tmp_path: Path) -> None:
    """A sender that seals to an old key of ours, still listed but whose private half we
    destroyed, gets nothing held in our queue: no later attempt could open it."""
    now = dt.datetime.now(dt.UTC)
    pol = PartnerIdentity.generate(OrgId(POL), now=now - dt.timedelta(days=3))
    first = PartnerIdentity.generate(OrgId(ZVH), now=now - dt.timedelta(days=3))
    async with local_hub({POL: pol, ZVH: first}, data_dir=tmp_path, connect=False) as system:
        assert system.hub is not None and system.hub.bus is not None
        key = system.authority.public
        rotated = first.with_new_encryption_key(now=now - dt.timedelta(days=2))
        await append_key_event(
            system.hub.bus,
            sign_request(add_encryption_key_request(rotated, now), rotated.signing_key),
            system.authority,
        )
        pruned = rotated.prune_encryption_keys(now, dt.timedelta(hours=1))  # the old one gone
        assert len(pruned.certificates) == 1
        async with (
            PartnerClient(pol, system.url, authority=key) as sender,
            PartnerClient(pruned, system.url, authority=key) as receiver,
        ):
            await _until(lambda: len(sender.directory.record(OrgId(ZVH)).encryption_keys) == 2)
            record = sender.directory.record(OrgId(ZVH))
            old_only = record.model_copy(update={"encryption_keys": record.encryption_keys[:1]})
            body = example_body(MessageType.M1)
            raw = seal(body, example_draft(MessageType.M1, body), sender=pol, recipients=[old_only])
            await sender.publish_raw(raw, "old-key")
            item = await receiver.receive(timeout=10)
            refused = await sender.receive(timeout=1)
            assert isinstance(item, Rejected), (item, refused)
            assert receiver.alarms == []  # a key we pruned is not a foreign key


def test_an_uncertain_rotation_keeps_the_new_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When publishing fails and the log cannot be read, the new private key stays: restoring
    the keystore could destroy the private half of a key that did reach the log."""
    from schakel import cli
    from schakel.bus import TransportError

    authority = PartnerIdentity.generate(OrgId("HUB.directory-authority"))
    save_keystore(authority, tmp_path / "authority.keystore", SecretStr("a"), KdfParams.for_tests())
    zvh = PartnerIdentity.generate(OrgId(ZVH))
    keystore = tmp_path / "zvh.keystore"
    save_keystore(zvh, keystore, SecretStr("z"), KdfParams.for_tests())
    monkeypatch.setenv(PASSPHRASE_ENV, "z")
    monkeypatch.setenv("SCHAKEL_AUTHORITY_PASSPHRASE", "a")

    async def lost_ack(*_: object) -> None:
        raise TransportError("publish: TimeoutError")

    monkeypatch.setattr(cli, "_append", lost_ack)
    args = ["keys", "rotate", "--keystore", str(keystore), "--authority",
            str(tmp_path / "authority.keystore"), "--nats", "nats://127.0.0.1:1"]  # fmt: skip
    for published, kept in ((None, 2), (True, 3), (False, 3)):

        def answer(*_: object, value: bool | None = published) -> bool | None:
            return value

        monkeypatch.setattr(cli, "_key_published", answer)
        assert cli.main(args) == 2
        assert len(load_keystore(keystore, SecretStr("z")).certificates) == kept


async def test_a_keystore_read_under_way_is_waited_for_not_taken_for_a_miss() -> None:
    """The race the walkthrough found: a delivery sealed to the rotated key starts a keystore
    read (a key derivation, in a thread); the key log's news of that key arrives meanwhile.
    The check waits for the read under way and sees the key as ours: no compromise alarm."""
    import time

    from schakel.keys.crypto import SigningKey
    from schakel.keys.directory import KeyDirectory
    from schakel.keys.keylog import KeyLog

    old = PartnerIdentity.generate(OrgId(ZVH))
    new = old.with_new_encryption_key()

    def slow_source() -> PartnerIdentity:
        time.sleep(0.3)  # a derivation's worth
        return new

    client = PartnerClient(old, "nats://127.0.0.1:1", authority=old.signing_key.public,
                           identity_source=slow_source)  # fmt: skip
    client.directory = KeyDirectory([new.public_record()])
    delivery = asyncio.create_task(client._reload_identity())  # for the delivery
    while not client._reload_lock.locked():  # the read is under way
        await asyncio.sleep(0)
    client._check_own_keys(KeyLog(SigningKey.generate().public))  # the key log's news
    await asyncio.gather(delivery, *set(client._checks))
    assert client.alarms == []
    assert new.certificates[-1].kid in client.identity.encryption_keys


def _keystores(
    tmp_path: Path,
) -> tuple[PartnerIdentity, dict[str, PartnerIdentity], Path]:
    """The authority's keystore and POL's on disk (cheap key derivation), and the identities."""
    authority = PartnerIdentity.generate(OrgId("HUB.directory-authority"))
    save_keystore(authority, tmp_path / "authority.keystore", SecretStr("authority-pass"),
                  KdfParams.for_tests())  # fmt: skip
    ids = {o: PartnerIdentity.generate(OrgId(o)) for o in (POL, ZVH)}
    keystore = tmp_path / "POL.west.keystore"
    save_keystore(ids[POL], keystore, SecretStr("pol-pass"), KdfParams.for_tests())
    return authority, ids, keystore


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "schakel", *args], capture_output=True,
                          text=True, env=env, check=False, timeout=120)  # fmt: skip


async def test_signing_key_rotation_and_recovery_through_the_cli(tmp_path: Path) -> None:
    """`keys rotate-signing` while the adapter runs: it switches to the new key when the log
    shows it (no alarm) and what it signs from then on is routed. `keys recover` after the
    keystore is lost: the authority alone revokes the old keys and installs a fresh
    keystore's, which connects and sends; the old key is refused."""
    authority, ids, keystore = _keystores(tmp_path)
    env = {**os.environ, PASSPHRASE_ENV: "pol-pass", "SCHAKEL_AUTHORITY_PASSPHRASE":
           "authority-pass"}  # fmt: skip
    async with local_hub(ids, data_dir=tmp_path / "hub", authority=authority.signing_key,
                         connect=False) as system:  # fmt: skip
        key, url = system.authority.public, system.url
        nats = ["--nats", url, "--authority", str(tmp_path / "authority.keystore")]
        body = example_body(MessageType.M1)
        draft = example_draft(MessageType.M1, body)
        async with (
            PartnerClient(ids[ZVH], url, authority=key) as zvh,
            PartnerClient(ids[POL], url, authority=key,
                          identity_source=lambda: load_keystore(keystore, SecretStr("pol-pass")),
                          ) as pol,
        ):  # fmt: skip
            old_kid = pol.identity.signing_kid
            rotated = await asyncio.to_thread(
                _cli, "keys", "rotate-signing", "--keystore", str(keystore), *nats, env=env
            )
            assert rotated.returncode == 0, rotated.stderr
            new_kid = load_keystore(keystore, SecretStr("pol-pass")).signing_kid
            assert new_kid != old_kid
            await _until(lambda: pol.identity.signing_kid == new_kid)
            sent = await pol.send(body, draft, [OrgId(ZVH)])
            item = await zvh.receive(timeout=30)
            assert isinstance(item, Delivery), item
            assert item.message_id == sent
            await item.ack()
            assert pol.alarms == []

            # The keystore is lost; a fresh one, and the authority's recovery.
            init = await asyncio.to_thread(
                _cli, "keys", "init", "--org", POL, "--out", str(tmp_path / "fresh"), env=env
            )
            assert init.returncode == 0, init.stderr
            recovered = await asyncio.to_thread(
                _cli, "keys", "recover", str(tmp_path / "fresh" / f"{POL}.register.json"),
                *nats, env=env)  # fmt: skip
            assert recovered.returncode == 0, recovered.stderr
            fresh = load_keystore(tmp_path / "fresh" / f"{POL}.keystore", SecretStr("pol-pass"))
            await _until(lambda: zvh.directory.record(OrgId(POL)).signing_key.kid
                         == fresh.signing_kid)  # fmt: skip
            async with PartnerClient(fresh, url, authority=key) as again:
                sent = await again.send(body, draft, [OrgId(ZVH)])
                item = await zvh.receive(timeout=30)
                assert isinstance(item, Delivery), item
                assert item.message_id == sent
                await item.ack()
                # The lost key signs nothing any more.
                await pol.send(body, draft, [OrgId(ZVH)])
                notice = await again.receive(timeout=30)
                assert isinstance(notice, Refusal), notice
                assert notice.notice.reason is ReasonCode.KEY_REVOKED


async def test_a_signing_rotation_handed_over_is_settled_never_guessed(tmp_path: Path) -> None:
    """The hostile review's cases: a request that cannot be written changes nothing; an
    encryption rotation while a signing rotation waits at the authority keeps signing with
    the registered key (it used to promote the unpublished one and lose the registered);
    once the authority appended it, the next command settles the keystore first; a recovery
    with one invalid event appends none (it used to revoke every key and install nothing)."""
    authority, ids, keystore = _keystores(tmp_path)
    registered = ids[POL].signing_kid
    env = {**os.environ, PASSPHRASE_ENV: "pol-pass", "SCHAKEL_AUTHORITY_PASSPHRASE":
           "authority-pass"}  # fmt: skip

    def load() -> PartnerIdentity:
        return load_keystore(keystore, SecretStr("pol-pass"))

    async with local_hub(ids, data_dir=tmp_path / "hub", authority=authority.signing_key,
                         connect=False) as system:  # fmt: skip
        nats = ["--nats", system.url]
        auth = ["--authority", str(tmp_path / "authority.keystore")]

        async def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return await asyncio.to_thread(_cli, *args, env=env)

        before = keystore.read_bytes()
        nowhere = await cli("keys", "rotate-signing", "--keystore", str(keystore),
                            "--request-out", str(tmp_path / "missing" / "r.json"))  # fmt: skip
        assert nowhere.returncode == 2 and "Traceback" not in nowhere.stderr
        assert keystore.read_bytes() == before
        request = tmp_path / "rotate-signing.json"
        handed = await cli("keys", "rotate-signing", "--keystore", str(keystore),
                           "--request-out", str(request))  # fmt: skip
        assert handed.returncode == 0, handed.stderr
        pending = load().next_signing_key
        assert pending is not None
        enc = await cli("keys", "rotate", "--keystore", str(keystore), *auth, *nats)
        assert enc.returncode == 0, enc.stderr
        assert load().signing_kid == registered  # still the registered key
        assert load().next_signing_key is not None
        appended = await cli("keys", "register", str(request), *auth, *nats)
        assert appended.returncode == 0, appended.stderr
        again = await cli("keys", "rotate", "--keystore", str(keystore), *auth, *nats)
        assert again.returncode == 0, again.stderr
        assert "now signs with" in again.stdout
        assert load().signing_kid != registered and load().next_signing_key is None

        fresh = PartnerIdentity.generate(OrgId(POL))
        bad = json.loads(registration(fresh).model_dump_json())
        bad["event"]["encryption_cert_signature"] = bad["event"]["org_signature"] = (
            base64.b64encode(bytes(64)).decode()
        )
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        recovered = await cli("keys", "recover", str(tmp_path / "bad.json"), *auth, *nats)
        assert recovered.returncode == 2
        public = base64.b64encode(authority.signing_key.public.raw).decode()
        listed = await cli("keys", "list", "--authority-public", public, *nats)
        assert "REVOKED" not in listed.stdout, listed.stdout


def test_a_key_our_directory_view_does_not_know_yet_is_never_given_up() -> None:
    """The hub delivers only to keys its directory lists; ours may be a resync behind (a key
    the security officer just appended). Such a delivery is treated as one for a key newer
    than ours (left unacknowledged, retried, dead-lettered with the sender told), not as one
    for a key we pruned (acknowledged and given up): the review found that drop window."""
    from schakel.contracts.ids import KeyId
    from schakel.keys.directory import KeyDirectory

    zvh = PartnerIdentity.generate(OrgId(ZVH))
    client = PartnerClient(zvh, "nats://127.0.0.1:1", authority=zvh.signing_key.public)
    client.directory = KeyDirectory([zvh.public_record()])
    unknown = KeyId("enc-" + "0" * 32)
    assert client._newer_than_held(unknown)
    client.directory = KeyDirectory()  # not even our organisation yet
    assert client._newer_than_held(unknown)
    older = zvh.with_new_encryption_key(now=dt.datetime.now(dt.UTC) - dt.timedelta(days=400))
    client.directory = KeyDirectory([older.public_record()])
    assert not client._newer_than_held(KeyId(older.certificates[-1].kid))  # a key we pruned
