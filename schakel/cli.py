"""The ``schakel`` command line: the composition root, where settings and secrets enter."""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import getpass
import json
import logging
import os
import re
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import SecretStr

from schakel.bus import Bus, Credentials, redacted
from schakel.bus.settings import CONFIG_ENV, Settings, SettingsError
from schakel.contracts.clock import system_clock
from schakel.contracts.enums import MessageType, OrgType
from schakel.contracts.errors import SchakelError
from schakel.contracts.ids import KEY_ID_PATTERN, KeyId, OrgId, org_type_of
from schakel.contracts.keyevents import KeyEventKind, KeyEventRequest, RevocationReason
from schakel.contracts.policy import default_policy
from schakel.hub.registry import Registry, default_registry, load_registry
from schakel.hub.service import registration
from schakel.keys.crypto import SigningKey, VerifyKey
from schakel.keys.directory import KeyDirectory
from schakel.keys.identity import PartnerIdentity, signing_key_id
from schakel.keys.keylog import (
    add_encryption_key_request,
    recovery_request,
    revoke_request,
    rotate_signing_key_request,
    sign_request,
)
from schakel.keys.keystore import PASSPHRASE_ENV, load_keystore, save_keystore

__all__ = ["build_parser", "main"]


def _passphrase(confirm: bool, env: str = PASSPHRASE_ENV) -> SecretStr:
    from_env = os.environ.get(env)
    if from_env:
        return SecretStr(from_env)
    if not sys.stdin.isatty():
        raise SchakelError(f"no passphrase: set {env} or run in a terminal")
    first = getpass.getpass("Keystore passphrase: ")
    if confirm and getpass.getpass("Repeat passphrase: ") != first:
        raise SchakelError("passphrases differ")
    return SecretStr(first)


def _org_id(org: str, org_type: str | None) -> OrgId:
    if "." not in org and org_type is None:
        raise SchakelError(
            f"--org {org!r} needs --type (e.g. --type POL), or give the full id (POL.{org.lower()})"
        )
    candidate = org if "." in org else f"{org_type}.{org.lower()}"
    try:
        kind = org_type_of(candidate)
    except ValueError:
        raise SchakelError(
            f"not an organisation id: {candidate!r} (type.slug, e.g. POL.west-brabant)"
        ) from None
    if org_type is not None and kind != OrgType(org_type):
        raise SchakelError(f"{candidate} is not of type {org_type}")
    return OrgId(candidate)


def _keys_init(args: argparse.Namespace) -> int:
    org = _org_id(args.org, args.type)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keystore = out / f"{org}.keystore"
    if keystore.exists() and not args.force:
        raise SchakelError(f"{keystore} exists; use --force to replace it")
    identity = PartnerIdentity.generate(org)
    save_keystore(identity, keystore, _passphrase(confirm=True))
    record = identity.public_record().model_dump_json(indent=2)
    (out / f"{org}.public.json").write_text(record + "\n", encoding="utf-8")
    request = out / f"{org}.register.json"
    request.write_text(registration(identity).model_dump_json(indent=2) + "\n", "utf-8")
    sys.stdout.write(record + "\n")
    sys.stderr.write(
        f"keystore written to {keystore} (mode 0600); "
        f"give {request} to the directory authority to register\n"
    )
    return 0


_AUTHORITY_ENV = "SCHAKEL_AUTHORITY_PASSPHRASE"


def _authority_key(path: str) -> SigningKey:
    return load_keystore(Path(path), _passphrase(confirm=False, env=_AUTHORITY_ENV)).signing_key


def _authority_init(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keystore = out / "directory-authority.keystore"
    if keystore.exists():
        raise SchakelError(f"{keystore} exists")
    identity = PartnerIdentity.generate(OrgId("HUB.directory-authority"))
    save_keystore(identity, keystore, _passphrase(confirm=True, env=_AUTHORITY_ENV))
    public = base64.b64encode(identity.signing_key.public.raw).decode()
    (out / "directory-authority.pub").write_text(public + "\n")
    sys.stdout.write(public + "\n")
    sys.stderr.write(f"authority keystore {keystore}; configure hubs and adapters with the key\n")
    return 0


class _NeverConnected(SchakelError):
    """The server was never reached: nothing was sent."""


async def _append(
    url: str,
    requests: list[KeyEventRequest],
    authority: SigningKey,
    credentials: Credentials | None = None,
) -> None:
    from schakel.bus import append_key_event, read_keylog
    from schakel.keys.keylog import KeyLog, countersign

    bus = Bus(url, name="schakel-authority", credentials=credentials)
    try:
        await bus.__aenter__()
    except SchakelError as exc:
        raise _NeverConnected(str(exc)) from exc
    try:
        # All or nothing: every event must apply, in order, to the log as it stands before
        # the first is appended (a recovery whose last event is invalid must not leave the
        # organisation with its keys revoked and nothing in their place).
        log = KeyLog(authority.public)
        for _, raw in await read_keylog(bus, 1):
            log.offer(raw)
        for request in requests:
            log.apply(countersign(request, index=log.length, prev=log.head, authority=authority))
        for request in requests:
            signed = await append_key_event(bus, request, authority)
            sys.stdout.write(
                f"key log #{signed.event.index}: {signed.event.kind} {signed.event.org}\n"
            )
    finally:
        await bus.close()


def _request_file(path: Path) -> KeyEventRequest:
    """A registration request file, or one line saying what is wrong with it."""
    try:
        return KeyEventRequest.model_validate_json(path.read_bytes())
    except OSError:
        raise SchakelError(f"{path}: cannot be read") from None
    except ValueError:
        raise SchakelError(
            f"{path}: not a key event request (make one with `schakel keys init`)"
        ) from None


_T = TypeVar("_T")


def _on_bus(settings: Settings, name: str, work: Callable[[Bus], Awaitable[_T]]) -> _T:
    """Connect with the settings' URL and credentials, do ``work``, disconnect."""

    async def run() -> _T:
        url, credentials = _nats_url(settings), settings.credentials()
        async with Bus(url, name=name, credentials=credentials) as bus:
            return await work(bus)

    return asyncio.run(run())


def _keys_register(args: argparse.Namespace) -> int:
    """Append signed requests to the key log (the security officer's user suffices)."""
    from schakel.hub.service import register

    settings = _settings(args)
    requests = [_request_file(Path(p)) for p in args.requests]
    authority = _authority_key(args.authority)

    skipped = _on_bus(settings, "schakel-authority",
                      lambda bus: register(bus, requests, authority))  # fmt: skip
    for org in skipped:
        sys.stderr.write(
            f"{org} is registered already: nothing changed (new keys: `schakel keys rotate`)\n"
        )
    sys.stdout.write(f"registered {len(requests) - len(skipped)} request(s)\n")
    return 1 if skipped else 0


def _registry_file(settings: Settings, path: str | None) -> Registry:
    if path:
        return load_registry(Path(path))
    if settings.registry:
        return load_registry(settings.registry)
    raise SchakelError("name the registry file (registry.toml) to publish")


def _registry_publish(args: argparse.Namespace) -> int:
    """Sign the registry as its next edition and publish it: every running hub takes it."""
    from schakel.hub.registry import publish_registry

    settings = _settings(args)
    registry = _registry_file(settings, args.file)
    authority = _authority_key(args.authority)

    now = system_clock()
    edition = _on_bus(settings, "schakel-registry",
                      lambda bus: publish_registry(bus, registry, authority, now))  # fmt: skip
    sys.stdout.write(
        f"registry edition {edition.version} published: {len(registry.regions)} region(s), "
        f"{len(registry.partners())} organisation(s); running hubs take it at once\n"
    )
    return 0


def _registry_show(args: argparse.Namespace) -> int:
    """The registry edition the hubs use, as the authority signed it."""
    from schakel.hub.registry import newest_edition

    settings = _settings(args)
    authority = _authority_public(settings)

    edition, _, skipped = _on_bus(settings, "schakel-registry",
                                  lambda bus: newest_edition(bus, authority))  # fmt: skip
    if edition is None:
        sys.stdout.write("no registry published: hubs use their --registry file\n")
    else:
        sys.stdout.write(f"edition {edition.version} of {edition.at:%Y-%m-%d %H:%M:%S}Z\n")
        for name, region in sorted(edition.registry.regions.items()):
            kern = ", ".join(sorted(region.zvh | region.pol | region.om))
            gemeenten = ", ".join(sorted(region.gemeenten))
            sys.stdout.write(f"  region {name}: gemeenten {gemeenten}; kern {kern}\n")
        sys.stdout.write(f"  national: {', '.join(sorted(edition.registry.national)) or '-'}\n")
    if skipped:
        sys.stdout.write(f"ALARM: {skipped} entr{'y' if skipped == 1 else 'ies'} not signed "
                         "by the directory authority skipped\n")  # fmt: skip
        return 1
    return 0


def _keys_rotate(args: argparse.Namespace) -> int:
    """A new encryption key (``keys rotate``) or signing key (``keys rotate-signing``).

    A failed command leaves the keystore as it was (or with a new private key too many, never
    one too few); a request file is written before the keystore changes.
    """
    settings = _settings(args)
    path = Path(args.keystore)
    passphrase = _passphrase(confirm=False)
    identity = load_keystore(path, passphrase)
    if not args.request_out and not args.authority:
        raise SchakelError("--authority (to publish now) or --request-out (to hand it over)")
    authority = _authority_key(args.authority) if args.authority else None
    identity = _settle_keystore(identity, path, passphrase, settings, authority)
    now = system_clock()
    validity = dt.timedelta(days=args.days)
    what = "signing key" if args.signing else "encryption key"
    if args.signing:
        # A rotation handed over and not yet in the log is published again, not replaced
        # (the authority may hold its request).
        pending = identity.next_signing_key is not None
        rotated = identity if pending else identity.with_new_signing_key(now=now, validity=validity)
        # Cross-signed: the current key signs the request for its successor.
        request = sign_request(rotate_signing_key_request(rotated, now), identity.signing_key)
    else:
        rotated = identity.with_new_encryption_key(now=now, validity=validity)
        request = sign_request(add_encryption_key_request(rotated, now), rotated.signing_key)
    # Keep superseded private keys for the overlap plus the longest message lifetime, so that
    # whatever was sealed to them can still be opened; destroy them after that.
    keep = dt.timedelta(days=args.overlap_days + default_policy().limits.max_lifetime_days)
    rotated = rotated.prune_encryption_keys(now, keep)
    new_kid = rotated.certificates[-1].kid
    if args.request_out:
        # The partner's half on the partner's machine: the signed request first (a command
        # that cannot write it changes nothing), then the keystore with the new key (a new
        # signing key as the next one: the adapter signs with it once the log shows it).
        _write_file(Path(args.request_out), request.model_dump_json(indent=2) + "\n")
        save_keystore(rotated, path, passphrase)
        sys.stdout.write(
            f"new {what} for {identity.org} kept in {path}; give "
            f"{args.request_out} to the directory authority (`schakel keys register`)\n"
        )
        return 0
    assert authority is not None
    url, credentials = _nats_url(settings), settings.credentials()
    # The new private key is kept before its public key is published (a running adapter
    # reloads the keystore when it sees the key); if the publication fails, the keystore is
    # put back as it was, unless the key reached the log after all.
    save_keystore(rotated, path, passphrase)
    try:
        asyncio.run(_append(url, [request], authority, credentials))
    except _NeverConnected:
        save_keystore(identity, path, passphrase)  # nothing was sent: nothing to keep
        sys.stderr.write("the key was not published; the keystore is as it was\n")
        raise
    except (SchakelError, OSError):
        published = _key_published(url, credentials, authority.public, identity.org, new_kid)
        if published is False:
            save_keystore(identity, path, passphrase)
            sys.stderr.write("the key was not published; the keystore is as it was\n")
        else:  # published, or unknown: a private key too many costs nothing, one too few all
            sys.stderr.write(
                f"the new key {new_kid} is kept in the keystore; run `schakel keys list` to see "
                "whether it was published, and rotate again if it was not\n"
            )
        raise
    if args.signing and rotated.next_signing_key is not None:
        # This command's own rotation is in the log now: sign with the new key from here on.
        rotated = rotated.settled(signing_key_id(rotated.next_signing_key.public))
        save_keystore(rotated, path, passphrase)
        sys.stdout.write(f"new signing key {rotated.signing_kid} for {identity.org}\n")
    sys.stdout.write(f"new encryption key {new_kid} for {identity.org}\n")
    return 0


def _settle_keystore(
    identity: PartnerIdentity,
    path: Path,
    passphrase: SecretStr,
    settings: Settings,
    authority: SigningKey | None,
) -> PartnerIdentity:
    """A signing-key rotation handed over earlier may be in the key log by now: then the
    keystore signs with the new key from here on (the SDK does the same in memory). Looked up
    only when a server and the authority's key are at hand."""
    verify_key = authority.public if authority is not None else settings.authority_key()
    if identity.next_signing_key is None or verify_key is None or not settings.nats_url:
        return identity
    directory = _read_directory(settings.nats_url, settings.credentials(), verify_key)
    if identity.org not in directory:
        return identity
    settled = identity.settled(KeyId(directory.record(identity.org).signing_key.kid))
    if settled is not identity:
        save_keystore(settled, path, passphrase)
        sys.stdout.write(
            f"the signing-key rotation is in the key log: {path} now signs with "
            f"{settled.signing_kid}\n"
        )
    return settled


def _write_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, "utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SchakelError(f"cannot write {path}: {exc.strerror}") from None


def _keys_recover(args: argparse.Namespace) -> int:
    """An organisation lost its signing key (keystore or passphrase gone): it made a fresh
    keystore with `keys init --force`; the authority revokes every key the organisation still
    has and installs the fresh keystore's keys, signed by the authority alone."""
    settings = _settings(args)
    fresh = _request_file(Path(args.request))
    if fresh.event.kind is not KeyEventKind.REGISTER:
        raise SchakelError(f"{args.request}: not a registration request (from `keys init`)")
    org = OrgId(fresh.event.org)
    url, credentials = _nats_url(settings), settings.credentials()
    authority = _authority_key(args.authority)
    now = system_clock()
    old = _unrevoked_keys(url, credentials, authority, org)
    requests = [sign_request(revoke_request(org, kid, args.reason, now), None) for kid in old]
    requests.append(sign_request(recovery_request(fresh.event, now), None))
    asyncio.run(_append(url, requests, authority, credentials))
    sys.stdout.write(
        f"{org}: {len(old)} old key(s) revoked ({args.reason}); the fresh keystore's keys are "
        "current. Messages sealed to the old keys can no longer be opened.\n"
    )
    return 0


def _read_directory(
    url: str, credentials: Credentials | None, authority: VerifyKey
) -> KeyDirectory:
    """The key directory as the verified fold of the key log.

    Raises:
        SchakelError: the log cannot be read.
    """
    from schakel.bus import DirectoryFollower

    async def read() -> KeyDirectory:
        async with Bus(url, name="schakel-authority", credentials=credentials) as bus:
            follower = DirectoryFollower(KeyDirectory(), authority)
            await follower.sync(bus)
            return follower.directory

    return asyncio.run(read())


def _key_published(
    url: str, credentials: Credentials | None, authority: VerifyKey, org: OrgId, kid: str
) -> bool | None:
    """Whether ``kid`` is in the key log under ``org``; ``None`` if the log cannot be read."""
    try:
        directory = _read_directory(url, credentials, authority)
    except SchakelError:
        return None
    record = directory.record(org) if org in directory else None
    return record is not None and record.encryption_key(kid) is not None


def _keys_revoke(args: argparse.Namespace) -> int:
    """Revoke one key (``--kid``) or every key an organisation still has (``--all``: it
    leaves, or all its keys are compromised), signed by the authority alone."""
    settings = _settings(args)
    org = _org_id(args.org, None)
    if (args.kid is None) == (not args.all):
        raise SchakelError("name the key to revoke (--kid) or revoke them all (--all)")
    if args.kid is not None and not re.fullmatch(KEY_ID_PATTERN, args.kid):
        raise SchakelError("--kid: not a key id (sig-... or enc-... and 32 hex digits)")
    url, credentials = _nats_url(settings), settings.credentials()
    authority = _authority_key(args.authority)
    now = system_clock()
    kids = [KeyId(args.kid)] if args.kid else _unrevoked_keys(url, credentials, authority, org)
    if not kids:
        raise SchakelError(f"{org} has no key that is not revoked already")
    requests = [sign_request(revoke_request(org, kid, args.reason, now), None) for kid in kids]
    asyncio.run(_append(url, requests, authority, credentials))
    return 0


def _unrevoked_keys(
    url: str, credentials: Credentials | None, authority: SigningKey, org: OrgId
) -> list[KeyId]:
    """Every key of ``org`` the key log has not revoked: encryption keys, then signing keys."""
    directory = _read_directory(url, credentials, authority.public)
    if org not in directory:
        raise SchakelError(f"{org} is not registered")
    record = directory.record(org)
    kids = [KeyId(c.kid) for c in record.encryption_keys]
    kids += [KeyId(i.kid) for i in (*record.previous_signing_keys, record.signing_key)]
    return [kid for kid in kids if directory.revoked_at(org, kid) is None]


def _keys_list(args: argparse.Namespace) -> int:
    """The key directory as every reader folds it: organisations, key ids, validity, status."""
    from schakel.bus import read_keylog
    from schakel.keys.directory import KeyDirectory
    from schakel.keys.keylog import KeyLog

    settings = _settings(args)
    log = KeyLog(_authority_public(settings))

    entries = _on_bus(settings, "schakel-keys-list", lambda bus: read_keylog(bus, 1))
    skipped = sum(log.offer(raw) is not None for _, raw in entries)
    directory = KeyDirectory()
    directory.load(log)
    now = system_clock()
    for record in sorted(directory, key=lambda r: r.org):
        sys.stdout.write(f"{record.org}\n")
        for info, role in (
            (record.signing_key, "signing, current"),
            *((i, "signing, previous") for i in record.previous_signing_keys),
        ):
            revoked = directory.revoked_at(OrgId(record.org), info.kid)
            status = f"REVOKED {revoked:%Y-%m-%d}" if revoked else role
            sys.stdout.write(f"  {info.kid}  {status}\n")
        for cert in record.encryption_keys:
            body = cert.body
            revoked = directory.revoked_at(OrgId(record.org), cert.kid)
            status = (
                f"REVOKED {revoked:%Y-%m-%d}" if revoked
                else "expired" if now >= body.not_after
                else "not yet valid" if now < body.not_before
                else "valid"
            )  # fmt: skip
            sys.stdout.write(
                f"  {cert.kid}  encryption {body.not_before:%Y-%m-%d}..{body.not_after:%Y-%m-%d}"
                f"  {status}\n"
            )
    sys.stdout.write(f"{len(directory)} organisation(s), key log of {log.length} events\n")
    if skipped:
        sys.stdout.write(f"ALARM: {skipped} foreign entr{'y' if skipped == 1 else 'ies'} "
                         "skipped (docs/RUNBOOK-KEYS.md, 'Foreign entries')\n")  # fmt: skip
        return 1
    return 0


def _verify_directory(args: argparse.Namespace) -> int:
    from schakel.bus import read_keylog
    from schakel.keys.keylog import KeyLog

    settings = _settings(args)

    entries = _on_bus(settings, "schakel-verify-directory", lambda bus: read_keylog(bus, 1))
    log = KeyLog(_authority_public(settings))
    skipped = 0
    for seq, raw in entries:
        problem = log.offer(raw)
        if problem is not None:
            skipped += 1
            sys.stdout.write(f"ALARM: entry at stream sequence {seq} skipped: {problem}\n")
    sys.stdout.write(f"key log: {log.length} valid events, head {log.head[:16]}\n")
    if skipped:
        sys.stdout.write(
            f"{skipped} foreign entr{'y' if skipped == 1 else 'ies'} skipped; every reader "
            "skips them too (docs/RUNBOOK-KEYS.md, 'Foreign entries')\n"
        )
        return 1
    return 0


def _settings(args: argparse.Namespace) -> Settings:
    """The settings: defaults < ``--config``/``SCHAKEL_CONFIG`` < ``SCHAKEL_*`` < flags."""
    flags = {name: getattr(args, name) for name in Settings.model_fields if hasattr(args, name)}
    config = getattr(args, "config", None)
    return Settings.load(Path(config) if config else None, **flags)


def _setting(parser: argparse.ArgumentParser, name: str, flag: str = "", **options: Any) -> None:
    """A flag for the setting ``name``: its help and default are the settings model's."""
    field = Settings.model_fields[name]
    default = "" if field.default is None else f"; default {field.default}"
    parser.add_argument(
        flag or "--" + name.replace("_", "-"),
        dest=name,
        default=None,
        help=f"{field.description or name} (or SCHAKEL_{name.upper()}{default})",
        **options,
    )


def _add_nats(parser: argparse.ArgumentParser) -> None:
    _setting(parser, "nats_url", "--nats")
    _setting(parser, "nats_nkey", "--nkey")
    _setting(parser, "nats_tls_ca", "--tls-ca")
    _setting(parser, "nats_tls_cert", "--tls-cert")
    _setting(parser, "nats_tls_key", "--tls-key")


def _nats_url(settings: Settings) -> str:
    if not settings.nats_url:
        raise SchakelError("no NATS server: pass --nats URL or set SCHAKEL_NATS_URL")
    return settings.nats_url


def _authority_public(settings: Settings) -> VerifyKey:
    key = settings.authority_key()
    if key is None:
        raise SchakelError(
            "no directory authority key: pass --authority-public or set SCHAKEL_AUTHORITY_PUBLIC"
        )
    return key


def _embedded_identity(data_dir: Path) -> PartnerIdentity:
    """The hub key of a hub run without ``--identity`` (development): made once, kept in the
    data directory (keystore and its passphrase, both 0600), so that partners that learned it
    keep verifying its refusal notices after a restart."""
    import secrets

    keystore, secret = data_dir / "hub.keystore", data_dir / "hub.keystore.passphrase"
    if keystore.exists() or secret.exists():
        if not (keystore.is_file() and secret.is_file()):
            raise SchakelError(
                f"{data_dir}: hub.keystore and hub.keystore.passphrase belong together; one is "
                "missing (remove both to make a new hub key, which partners must then learn)"
            )
        if secret.stat().st_mode & 0o077:
            raise SchakelError(f"{secret} is readable by others: chmod 600 it")
        return load_keystore(keystore, SecretStr(secret.read_text("ascii").strip()))
    data_dir.mkdir(parents=True, exist_ok=True)
    passphrase = secrets.token_urlsafe(24)
    descriptor = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as out:
        out.write(passphrase + "\n")
    identity = PartnerIdentity.generate(OrgId("HUB.local"))
    save_keystore(identity, keystore, SecretStr(passphrase))
    return identity


def _hub_run(args: argparse.Namespace) -> int:
    from schakel.hub.logconfig import configure_logging

    configure_logging(json=getattr(args, "log", None) != "console")  # before anything can fail
    try:
        config = _settings(args)
        configure_logging(json=config.log == "json")
        return _serve_hub(config)
    except SchakelError as exc:  # one log line like every other (JSON by default), not text
        import structlog

        structlog.get_logger("schakel.hub").error("hub_failed", error=str(exc))
        return 2


def _serve_hub(config: Settings) -> int:
    import structlog

    from schakel.hub.service import Hub
    from schakel.hub.settings import HubSettings

    settings = HubSettings.from_settings(config, authority=_authority_public(config))
    if config.identity is not None:
        identity = load_keystore(config.identity, _passphrase(confirm=False))
    else:
        identity = _embedded_identity(config.data_dir)
    request = settings.data_dir / f"{identity.org}.register.json"
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    request.write_text(registration(identity).model_dump_json(indent=2) + "\n", "utf-8")

    async def serve() -> bool:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        starting = asyncio.current_task()

        def on_signal() -> None:  # honoured at any moment, also while still connecting
            stop.set()
            if starting is not None and not started.is_set():
                starting.cancel()

        started = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal)
        try:
            async with Hub(settings, identity) as hub:
                started.set()
                structlog.get_logger("schakel.hub").info(
                    "hub_running", nats=redacted(hub.url), stop="SIGTERM or Ctrl-C"
                )
                await stop.wait()
        except asyncio.CancelledError:
            return False  # stopped before it was up
        return True

    asyncio.run(serve())
    return 0


async def _read_records(
    url: str, credentials: Credentials | None = None
) -> list[tuple[int, bytes]]:
    from schakel.hub.audit import read_trail

    async with Bus(url, name="schakel-audit", credentials=credentials) as bus:
        return [item async for item in read_trail(bus)]


def _audit_verify(args: argparse.Namespace) -> int:
    from schakel.hub.audit import verify_chain

    settings = _settings(args)
    report = verify_chain(asyncio.run(_read_records(_nats_url(settings), settings.credentials())))
    for seq in report.foreign:
        sys.stdout.write(f"ALARM: entry at stream sequence {seq} is not an audit record\n")
    if report.ok:
        sys.stdout.write(f"audit chain intact: {report.records} records\n")
        return 1 if report.foreign else 0
    sys.stdout.write(
        f"audit chain BROKEN at stream sequence {report.broken_at} "
        f"(after {report.records} good records): {report.problem}\n"
    )
    return 1


def _audit_show(args: argparse.Namespace) -> int:
    from schakel.hub.audit import format_record, parse_record

    settings = _settings(args)
    shown = 0
    for _, raw in asyncio.run(_read_records(_nats_url(settings), settings.credentials())):
        record = parse_record(raw)
        if record is not None and record.case_id == args.case:
            sys.stdout.write(format_record(record) + "\n")
            shown += 1
    if not shown:
        sys.stdout.write(f"no audit records for {args.case}\n")
    return 0


_DEPLOYMENT_FILE = "deployment.toml"
_DEPLOYMENT_DEFAULTS: dict[str, Any] = {
    "host": "0.0.0.0",  # noqa: S104 (refused without TLS below)
    "port": 4222,
    "store_dir": "/var/lib/schakel/jetstream",
    "tls_cert": None,
    "tls_key": None,
    "tls_ca": None,
    "cluster_name": "schakel",
    "cluster_port": None,
    "route": [],
    "monitor_port": 8222,
    "verify_clients": False,
    "registry": None,
}
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def _deployment(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """The server's settings: what this directory's deployment file says, then the flags.

    Re-running ``nats-config`` (to add a partner) with fewer flags keeps TLS, address, port
    and storage as they were; the file is written back with the result.
    """
    import tomllib

    kept: dict[str, Any] = {}
    path = out / _DEPLOYMENT_FILE
    if path.is_file():
        try:
            kept = tomllib.loads(path.read_text("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            raise SchakelError(f"{path}: not valid TOML; fix or remove it") from None
    given = {
        k: getattr(args, k) for k in _DEPLOYMENT_DEFAULTS if getattr(args, k) not in (None, [])
    }
    return {**_DEPLOYMENT_DEFAULTS, **kept, **given}


def _write_deployment(out: Path, values: dict[str, Any]) -> None:
    lines = ["# Written by `schakel nats-config`; read back when it runs again in this directory."]
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, list):
            quoted = ", ".join(json.dumps(str(v), ensure_ascii=False) for v in value)
            lines.append(f"{key} = [{quoted}]")
        elif isinstance(value, bool):
            lines.append(f"{key} = {str(value).lower()}")
        elif isinstance(value, int):
            lines.append(f"{key} = {value}")
        else:
            lines.append(f"{key} = {json.dumps(str(value), ensure_ascii=False)}")
    (out / _DEPLOYMENT_FILE).write_text("\n".join(lines) + "\n", "utf-8")


def _nats_config(args: argparse.Namespace) -> int:
    from schakel.hub.natsconfig import ClusterLayout, TlsFiles, write_config

    settings = _settings(args)
    out = Path(args.out)
    values = _deployment(args, out)
    if settings.registry:  # given now (flag, environment, settings file): kept from here on
        values["registry"] = str(settings.registry.resolve())
    if values["registry"]:
        registry = load_registry(Path(values["registry"]))
    else:
        registry = default_registry()
        sys.stderr.write("no registry given: the shipped example's partners (--registry FILE "
                         "for your own; it is kept for the next runs)\n")  # fmt: skip
    tls = None
    tls_files = (values["tls_cert"], values["tls_key"], values["tls_ca"])
    if any(tls_files):
        if not all(tls_files):
            raise SchakelError("TLS needs --tls-cert, --tls-key and --tls-ca together")
        cert, key, ca = (Path(f) for f in tls_files)
        tls = TlsFiles(cert, key, ca, verify_clients=bool(values["verify_clients"]))
    elif values["host"] not in _LOOPBACK:
        raise SchakelError(
            f"listening on {values['host']} without TLS: pass --tls-cert, --tls-key and "
            "--tls-ca, or --host 127.0.0.1 for a server only this machine reaches"
        )
    cluster = None
    if values["cluster_port"]:
        cluster = ClusterLayout(name=values["cluster_name"], port=int(values["cluster_port"]),
                                routes=tuple(values["route"]))  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    monitor = int(values["monitor_port"])
    before = _config_loaded(monitor) if args.reload else None
    previous = {
        name: (out / name).read_text("utf-8")
        for name in ("nats-server.conf", _DEPLOYMENT_FILE)
        if (out / name).is_file()
    }
    path = write_config(
        out,
        registry.partners(),
        host=values["host"],
        port=int(values["port"]),
        store_dir=Path(values["store_dir"]),
        tls=tls,
        cluster=cluster,
        monitor_port=monitor,
        pid_file=(out / _PID_FILE).resolve(),
    )
    _write_deployment(out, values)
    if args.reload:
        try:
            _reload(out / _PID_FILE, monitor, before)
        except SchakelError as exc:
            if "did not take" in str(exc):  # the server runs on the previous files: keep them
                for name, text in previous.items():
                    _write_file(out / name, text)
                raise SchakelError(f"{exc}; the previous files are restored") from None
            raise
    sys.stdout.write(
        f"wrote {path} ({len(registry.partners())} partners + hub, "
        f"{'TLS' if tls else 'loopback, no TLS'}); settings kept in {out / _DEPLOYMENT_FILE}\n"
        f"seeds in {out / 'creds'} (mode 0600): give each partner only its own file\n"
        f"start:  nats-server -c {path}\n"
        f"after adding or removing a partner: schakel nats-config --out {out} --reload\n"
    )
    return 0


_PID_FILE = "nats-server.pid"


def _config_loaded(monitor_port: int) -> str | None:
    """When the server on this machine last loaded its configuration (its monitoring
    endpoint's ``config_load_time``), or ``None`` if it does not answer."""
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only
    try:
        with opener.open(f"http://127.0.0.1:{monitor_port}/varz", timeout=2) as answer:
            loaded = json.loads(answer.read(1_000_000)).get("config_load_time")
    except (OSError, ValueError, AttributeError):
        return None
    return str(loaded) if loaded else None


def _reload(pid_file: Path, monitor_port: int, before: str | None) -> None:
    """Make the running server read the new configuration and wait for its answer: its
    monitoring endpoint shows a new load time only when the reload succeeded."""
    import time

    try:
        pid = int(pid_file.read_text("ascii").strip())
    except (OSError, ValueError):
        raise SchakelError(
            f"no running server to reload ({pid_file} missing): the configuration is written; "
            "start the server with it"
        ) from None
    if before is None:
        raise SchakelError(
            f"the server does not answer on its monitoring port {monitor_port}: the "
            "configuration is written, reload it yourself (nats-server --signal reload)"
        )
    from schakel.hub.natsserver import RELOAD_PASSES

    for _ in range(RELOAD_PASSES):  # an added account's imports work after the second
        try:
            os.kill(pid, signal.SIGHUP)
        except OSError:
            raise SchakelError(f"cannot signal the server (pid {pid} from {pid_file})") from None
        deadline = time.monotonic() + 10
        while (loaded := _config_loaded(monitor_port)) is None or loaded == before:
            if time.monotonic() > deadline:
                raise SchakelError(
                    "the server did not take the new configuration (its log says why); "
                    "it runs on the previous one"
                )
            time.sleep(0.1)
        before = loaded
    sys.stdout.write("the server reloaded the new configuration\n")


async def _dead_letters(
    url: str,
    replay: bool,
    credentials: Credentials | None = None,
    only: frozenset[int] | None = None,
) -> int:
    """List (or have the hub replay) the dead letters; ``only`` limits both to these stream
    sequences. Returns how many were listed; a replay the hub did not do fails."""
    from schakel.contracts.topology import (
        DLQ_STREAM,
        HEADER_DELIVERIES,
        HEADER_ORIGINAL_SUBJECT,
        REPLAY_SUBJECT,
    )

    async with Bus(url, name="schakel-dlq", credentials=credentials) as bus:
        count, failed, listed = 0, [], set()
        async for msg in bus.scan_direct(DLQ_STREAM):
            if only is not None and msg.seq not in only:
                continue
            listed.add(msg.seq)
            original = msg.headers.get(HEADER_ORIGINAL_SUBJECT, "")
            sys.stdout.write(
                f"#{msg.seq} {msg.subject} from {original} after "
                f"{msg.headers.get(HEADER_DELIVERIES, '?')} deliveries\n"
            )
            count += 1
            if not replay:
                continue
            # The hub copies it back (the operator's user may only ask): a hub must be running.
            try:
                answer = await bus.request(REPLAY_SUBJECT, str(msg.seq).encode(), timeout=10)
                result = str(json.loads(answer).get("result", "?"))
            except (SchakelError, ValueError, AttributeError):
                result = "no answer from a hub"
            sys.stdout.write(f"  replay: {result}\n")
            if result != "replayed":
                failed.append(msg.seq)
        sys.stdout.write(f"{count} dead letter(s){' replayed' if replay and count else ''}\n")
        if replay and only is not None:
            failed += sorted(only - listed)  # named, but not (or no longer) a dead letter
        if failed:
            raise SchakelError(f"not replayed: {', '.join(f'#{seq}' for seq in failed)}")
        return count


def _dlq(args: argparse.Namespace) -> int:
    replay = args.dlq_command == "replay"
    only = frozenset(args.seq) if args.seq else None
    if replay and only is None and not args.all:
        raise SchakelError(
            "name the dead letters to replay (--seq N, as `schakel dlq list` shows them) "
            "or pass --all"
        )
    settings = _settings(args)
    url, credentials = _nats_url(settings), settings.credentials()
    asyncio.run(_dead_letters(url, replay=replay, credentials=credentials, only=only))
    return 0


def _hub_status(args: argparse.Namespace) -> int:
    """Ask the running hubs whether one is up (the operator's user suffices); with ``--wait``,
    keep asking until one answers or the time is up."""
    import time

    from schakel.contracts.topology import HUB_STATUS_SUBJECT

    settings = _settings(args)

    async def ask() -> dict[str, Any]:
        deadline = time.monotonic() + args.wait
        url, credentials = _nats_url(settings), settings.credentials()
        async with Bus(url, name="schakel-status", credentials=credentials) as bus:
            while True:
                try:
                    answer = await bus.request(HUB_STATUS_SUBJECT, b"", timeout=2)
                except SchakelError:
                    if time.monotonic() >= deadline:
                        raise SchakelError(
                            f"no hub answered{f' within {args.wait:g} s' if args.wait else ''}"
                        ) from None
                    await asyncio.sleep(0.5)
                    continue
                try:
                    status = json.loads(answer)
                except ValueError:
                    status = None
                if not isinstance(status, dict):
                    raise SchakelError("the hub's answer is not readable")
                return status

    status = asyncio.run(ask())
    sys.stdout.write(
        f"hub {status.get('instance')} running: registry edition "
        f"{status.get('registry_version') or 'from its file'}, "
        f"{status.get('partners_ready')} partner(s) ready, {status.get('processed')} routed\n"
    )
    return 0


def _partner(args: argparse.Namespace) -> int:
    """The SDK from the shell: send example messages, or receive and acknowledge."""
    from schakel.adapters.client import PartnerClient
    from schakel.contracts.enums import MessageType
    from schakel.harness.partner import receive_messages, send_messages

    settings = _settings(args)
    client = PartnerClient.from_settings(settings)

    def out(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    async def run() -> int:
        async with client:
            if args.partner_command == "send":
                to = [_org_id(org, None) for org in args.to]
                await send_messages(client, MessageType(args.type), to, args.count, out)
                return 0
            seen = await receive_messages(client, args.count, args.timeout, out,
                                          refusals=args.refused)  # fmt: skip
            got, kind = (seen.refusals, "refusals") if args.refused else (
                seen.deliveries, "deliveries")  # fmt: skip
            if got < args.count:
                sys.stderr.write(f"schakel: {got} of {args.count} {kind} "
                                 f"within {args.timeout:g} s\n")  # fmt: skip
                return 1
            return 1 if seen.rejected else 0

    return asyncio.run(run())


def _adapter_run(args: argparse.Namespace) -> int:
    """The adapter: the HTTP API for the back office, over the SDK, until stopped."""
    import structlog
    from aiohttp import web

    from schakel.adapters.client import PartnerClient
    from schakel.adapters.http import AdapterApi, QuietRunner, is_loopback

    settings = _settings(args)
    token = None
    if settings.api_token_file is not None:
        token = settings.api_token_file.read_text("utf-8").strip()
        if len(token) < 32:
            raise SettingsError("api_token_file: the token must be at least 32 characters")
    listen = settings.listen
    unix = listen.removeprefix("unix:") if listen.startswith("unix:") else None
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    tls = _adapter_tls(settings)
    mutual = tls is not None and settings.api_tls_client_ca is not None
    if unix is None and not is_loopback(host) and token is None and not mutual:
        raise SettingsError(
            "listen: a non-loopback address needs api_token_file or api_tls_client_ca "
            "(nothing listens unauthenticated on another interface)"
        )
    webhook = None
    if settings.webhook_url is not None and settings.folder is not None:
        raise SettingsError("webhook_url, folder: one way to the back office, not both")
    if settings.webhook_url is not None:
        from schakel.adapters.webhook import Webhook

        if settings.webhook_secret_file is None:
            raise SettingsError("webhook_url: needs webhook_secret_file (pushes are signed)")
        secret = settings.webhook_secret_file.read_bytes().strip()
        if len(secret) < 32:
            raise SettingsError("webhook_secret_file: the secret must be at least 32 bytes")
        from urllib.parse import urlsplit

        target = urlsplit(settings.webhook_url)
        if target.scheme != "https" and not is_loopback(target.hostname or ""):
            raise SettingsError("webhook_url: https, unless the back office is on loopback")
        webhook = Webhook(settings.webhook_url, secret)
    client = PartnerClient.from_settings(settings)

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        async with client:
            api = AdapterApi(client, state_dir=settings.state_dir, token=token, webhook=webhook,
                             folder=settings.folder)  # fmt: skip
            runner = QuietRunner(api.app())
            await runner.setup()
            site: web.BaseSite = (
                web.UnixSite(runner, unix)
                if unix
                else web.TCPSite(runner, host, int(port), ssl_context=tls)
            )
            await site.start()
            if unix:
                os.chmod(unix, 0o600)  # the back office runs as the adapter's user
            structlog.get_logger("schakel.adapter").info(
                "adapter_running", org=client.org, listen=listen
            )
            try:
                await stop.wait()
            finally:
                await runner.cleanup()
        return 0

    return asyncio.run(run())


def _adapter_tls(settings: Settings) -> ssl.SSLContext | None:
    """The listener's TLS context from the settings (client certificates required when a
    client CA is named), or ``None``."""
    if settings.api_tls_cert is None and settings.api_tls_key is None:
        if settings.api_tls_client_ca is not None:
            raise SettingsError("api_tls_client_ca: needs api_tls_cert and api_tls_key")
        return None
    if settings.api_tls_cert is None or settings.api_tls_key is None:
        raise SettingsError("api_tls_cert, api_tls_key: both or neither")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.api_tls_cert, settings.api_tls_key)
        if settings.api_tls_client_ca is not None:
            context.load_verify_locations(settings.api_tls_client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except ssl.SSLError as exc:
        raise SettingsError(f"api_tls_*: the TLS files cannot be used ({exc.reason})") from None
    return context


def _adapter_openapi(args: argparse.Namespace) -> int:
    """The OpenAPI document, generated from the contracts (adapters/openapi.json)."""
    from schakel.adapters.openapi import rendered

    sys.stdout.write(rendered())
    return 0


def _demo(args: argparse.Namespace) -> int:
    from schakel.harness.demo import run_demo

    return 0 if asyncio.run(run_demo()) else 1


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("schakel")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def _positive(text: str) -> int:
    """A whole number, at least one and at most 3650 (days: ten years)."""
    if not text.isdigit() or not 1 <= int(text) <= 3650:
        raise argparse.ArgumentTypeError("a whole number from 1 to 3650")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``schakel``."""
    parser = argparse.ArgumentParser(prog="schakel", description=__doc__)
    parser.add_argument("--version", action="version", version=f"schakel {_version()}")
    parser.add_argument(
        "--config", help=f"settings file (TOML, keys as the settings' names; or {CONFIG_ENV})"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    keys = commands.add_parser("keys", help="partner keys").add_subparsers(
        dest="keys_command", required=True
    )
    init = keys.add_parser("init", help="create a partner keystore and print its public record")
    init.add_argument("--org", required=True, help="organisation id (TYPE.slug) or slug")
    init.add_argument("--type", choices=[t.value for t in OrgType], help="organisation type")
    init.add_argument("--out", required=True, help="directory for keystore and public record")
    init.add_argument("--force", action="store_true", help="replace an existing keystore")
    init.set_defaults(handler=_keys_init)
    auth = keys.add_parser("authority-init", help="create the directory authority's key")
    auth.add_argument("--out", required=True)
    auth.set_defaults(handler=_authority_init)
    register = keys.add_parser(
        "register", help="append signed key-event requests (registration, rotation) to the log"
    )
    register.add_argument("requests", nargs="+", help="request files (<org>.register.json, ...)")
    register.add_argument("--authority", required=True, help="directory authority keystore")
    _add_nats(register)
    register.set_defaults(handler=_keys_register)
    rotate = keys.add_parser("rotate", help="new encryption key for an organisation")
    rotate.add_argument("--keystore", required=True, help="the organisation's keystore")
    rotate.add_argument("--authority", help="directory authority keystore (publish now)")
    rotate.add_argument("--request-out", help="write the signed request here instead, for the "
                        "authority to append (`keys register`) on its own machine")  # fmt: skip
    rotate.add_argument("--days", type=_positive, default=365, help="validity of the new key")
    rotate.add_argument(
        "--overlap-days", type=_positive, default=7,
        help="keep superseded keys this long + lifetime",
    )  # fmt: skip
    _add_nats(rotate)
    rotate.set_defaults(handler=_keys_rotate, signing=False)
    rsign = keys.add_parser(
        "rotate-signing", help="new signing key, cross-signed by the current one (with a new "
        "encryption key certified by it)"
    )  # fmt: skip
    rsign.add_argument("--keystore", required=True, help="the organisation's keystore")
    rsign.add_argument("--authority", help="directory authority keystore (publish now)")
    rsign.add_argument("--request-out", help="write the signed request here instead; the "
                       "adapter switches to the new key when the log shows it")  # fmt: skip
    rsign.add_argument("--days", type=_positive, default=365, help="validity of the new "
                       "encryption key")  # fmt: skip
    rsign.add_argument("--overlap-days", type=_positive, default=7)
    _add_nats(rsign)
    rsign.set_defaults(handler=_keys_rotate, signing=True)
    recover = keys.add_parser(
        "recover", help="replace a lost signing key: revoke the old keys, install a fresh "
        "keystore's (the authority alone)"
    )  # fmt: skip
    recover.add_argument("request", help="the fresh keystore's <org>.register.json")
    recover.add_argument("--authority", required=True, help="directory authority keystore")
    recover.add_argument("--reason", default="lost", choices=["lost", "compromised"])
    _add_nats(recover)
    recover.set_defaults(handler=_keys_recover)
    revoke = keys.add_parser("revoke", help="revoke a key, effective immediately")
    revoke.add_argument("--org", required=True)
    revoke.add_argument("--kid", help="the key to revoke (sig-... or enc-...)")
    revoke.add_argument("--all", action="store_true", help="every key it still has")
    revoke.add_argument("--reason", required=True, choices=[r.value for r in RevocationReason])
    revoke.add_argument("--authority", required=True, help="directory authority keystore")
    _add_nats(revoke)
    revoke.set_defaults(handler=_keys_revoke)
    klist = keys.add_parser("list", help="the key directory: organisations, keys, status")
    _setting(klist, "authority_public")
    _add_nats(klist)
    klist.set_defaults(handler=_keys_list)
    vdir = keys.add_parser("verify-directory", help="check every key event and link")
    _setting(vdir, "authority_public")
    _add_nats(vdir)
    vdir.set_defaults(handler=_verify_directory)

    registry = commands.add_parser(
        "registry", help="the partner registry every hub follows"
    ).add_subparsers(dest="registry_command", required=True)
    publish = registry.add_parser("publish", help="sign and publish a registry file")
    publish.add_argument("file", nargs="?", help="registry TOML (default: the registry setting)")
    publish.add_argument("--authority", required=True, help="directory authority keystore")
    _add_nats(publish)
    publish.set_defaults(handler=_registry_publish)
    rshow = registry.add_parser("show", help="the edition the hubs use")
    _setting(rshow, "authority_public")
    _add_nats(rshow)
    rshow.set_defaults(handler=_registry_show)

    hub = commands.add_parser("hub", help="the hub service").add_subparsers(
        dest="hub_command", required=True
    )
    run = hub.add_parser("run", help="run the hub (embedded nats-server unless --nats)")
    _add_nats(run)  # without a URL: an embedded nats-server under the data directory
    for name in ("data_dir", "identity", "policy", "registry", "authority_public"):
        _setting(run, name)
    for name in ("fetch_batch", "replicas", "ack_wait"):
        _setting(run, name)  # typed and bounded by the model, which names what is wrong
    _setting(run, "log", choices=["json", "console"])
    run.set_defaults(handler=_hub_run)
    status = hub.add_parser("status", help="whether a hub runs (the operator's user suffices)")
    status.add_argument("--wait", type=float, default=0.0,
                        help="keep asking this many seconds until a hub answers")  # fmt: skip
    _add_nats(status)
    status.set_defaults(handler=_hub_status)

    partner = commands.add_parser(
        "partner", help="the partner SDK from a shell: send examples, receive and acknowledge"
    ).add_subparsers(dest="partner_command", required=True)
    send = partner.add_parser("send", help="send example messages of one type")
    send.add_argument("--type", required=True, choices=[t.value for t in MessageType])
    send.add_argument("--to", required=True, action="append", help="recipient; repeatable")
    send.add_argument("--count", type=_positive, default=1)
    receive = partner.add_parser("receive", help="receive and acknowledge deliveries")
    receive.add_argument("--count", type=_positive, default=1, help="deliveries to wait for")
    receive.add_argument("--refused", action="store_true",
                         help="wait for refusal notices instead of deliveries")  # fmt: skip
    receive.add_argument("--timeout", type=float, default=30.0,
                         help="give up after this many seconds without one")  # fmt: skip
    for sub in (send, receive):
        for name in ("keystore", "state_dir", "authority_public"):
            _setting(sub, name)
        _add_nats(sub)
        sub.set_defaults(handler=_partner)

    adapter = commands.add_parser(
        "adapter", help="the adapter a back office talks to over HTTP"
    ).add_subparsers(dest="adapter_command", required=True)
    serve = adapter.add_parser("run", help="serve the HTTP API until stopped")
    for name in ("keystore", "state_dir", "authority_public", "listen", "api_token_file",
                 "api_tls_cert", "api_tls_key", "api_tls_client_ca", "webhook_url",
                 "webhook_secret_file", "folder"):  # fmt: skip
        _setting(serve, name)
    _add_nats(serve)
    serve.set_defaults(handler=_adapter_run)
    spec = adapter.add_parser("openapi", help="print the API's OpenAPI document (JSON)")
    spec.set_defaults(handler=_adapter_openapi)

    audit = commands.add_parser("audit", help="the audit trail").add_subparsers(
        dest="audit_command", required=True
    )
    verify = audit.add_parser("verify", help="recompute the hash chain")
    _add_nats(verify)
    verify.set_defaults(handler=_audit_verify)
    show = audit.add_parser("show", help="a case's routing history")
    show.add_argument("--case", required=True)
    _add_nats(show)
    show.set_defaults(handler=_audit_show)

    dlq = commands.add_parser("dlq", help="messages partners never accepted").add_subparsers(
        dest="dlq_command", required=True
    )
    for name, text in (("list", "list dead letters"), ("replay", "deliver them again")):
        sub = dlq.add_parser(name, help=text)
        _add_nats(sub)
        sub.add_argument("--seq", type=int, action="append", help="only this dead letter "
                         "(its #number in `dlq list`); repeatable")  # fmt: skip
        if name == "replay":
            sub.add_argument("--all", action="store_true", help="replay every dead letter")
        else:
            sub.set_defaults(all=False)
        sub.set_defaults(handler=_dlq)

    natscfg = commands.add_parser(
        "nats-config", help="write the nats-server configuration with per-partner NKeys"
    )
    natscfg.add_argument("--out", required=True, help="directory for the config and seeds")
    _setting(natscfg, "registry")
    natscfg.add_argument("--host", help="client listen address (default 0.0.0.0, TLS required)")
    natscfg.add_argument("--port", type=int, help="client port (default 4222)")
    natscfg.add_argument("--store-dir", help="JetStream storage (default /var/lib/schakel/...)")
    natscfg.add_argument("--tls-cert", help="server certificate (PEM)")
    natscfg.add_argument("--tls-key", help="server private key (PEM)")
    natscfg.add_argument("--tls-ca", help="CA bundle clients and routes are verified against")
    natscfg.add_argument("--cluster-name", help="cluster name (default schakel)")
    natscfg.add_argument("--cluster-port", type=int, help="route port (enables clustering)")
    natscfg.add_argument("--route", action="append", help="peer route URL")
    natscfg.add_argument("--verify-clients", action="store_true", default=None,
                         help="require client certificates signed by the CA")  # fmt: skip
    natscfg.add_argument("--monitor-port", type=int,
                         help="monitoring port on 127.0.0.1 (default 8222)")  # fmt: skip
    natscfg.add_argument("--reload", action="store_true", help="make the running server "
                         "read the new configuration and wait for its answer")  # fmt: skip
    natscfg.set_defaults(handler=_nats_config)

    demo = commands.add_parser("demo", help="play scenario 1 through an embedded hub")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    # asyncio's TLS transport warns about nats-py's protocol at every close: noise, not news.
    logging.getLogger("asyncio").addFilter(lambda r: "eof_received" not in r.getMessage())
    args = build_parser().parse_args(argv)
    from schakel.hub.logconfig import configure_logging

    # A command's log lines (the SDK's, the bus's) go to stderr: stdout is its answer.
    configure_logging(json=False, stream=sys.stderr)
    try:
        return int(args.handler(args))
    except SchakelError as exc:
        sys.stderr.write(f"schakel: {exc}\n")
        return 2
    except OSError as exc:  # a file named on the command line
        where = f" ({exc.filename})" if exc.filename else ""
        sys.stderr.write(f"schakel: {exc.strerror or type(exc).__name__}{where}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("schakel: interrupted\n")
        return 130
