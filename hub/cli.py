"""The ``schakel`` command line: the composition root, where settings and secrets enter."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import SecretStr

from contracts.enums import OrgType
from contracts.errors import SchakelError
from contracts.ids import OrgId, org_type_of
from keys.identity import PartnerIdentity
from keys.keystore import PASSPHRASE_ENV, save_keystore

__all__ = ["main"]


def _passphrase(confirm: bool) -> SecretStr:
    from_env = os.environ.get(PASSPHRASE_ENV)
    if from_env:
        return SecretStr(from_env)
    if not sys.stdin.isatty():
        raise SchakelError(f"no passphrase: set {PASSPHRASE_ENV} or run in a terminal")
    first = getpass.getpass("Keystore passphrase: ")
    if confirm and getpass.getpass("Repeat passphrase: ") != first:
        raise SchakelError("passphrases differ")
    return SecretStr(first)


def _org_id(org: str, org_type: str | None) -> OrgId:
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
    sys.stdout.write(record + "\n")
    sys.stderr.write(f"keystore written to {keystore} (mode 0600)\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``schakel``."""
    parser = argparse.ArgumentParser(prog="schakel", description=__doc__)
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except SchakelError as exc:
        sys.stderr.write(f"schakel: {exc}\n")
        return 2
