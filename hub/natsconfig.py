"""The nats-server configuration: accounts, one NKey user per partner, exact grants, TLS.

Generated from the partner registry by ``schakel nats-config``. The hub and every stream,
bucket and consumer live in the account ``HUB``, the only account with JetStream. Each partner
is the only user of an account of its own, which imports from ``HUB`` exactly what the
partner needs and nothing else:

- its own inbound subjects, ``schakel.in.<org>`` and one per partition
  ``schakel.in.<org>.<partition>`` (services: JetStream's acknowledgement comes back);
- pulls from and acknowledgements on its own durable consumer:
  ``$JS.API.CONSUMER.MSG.NEXT.SCHAKEL_OUT_<org>.deliver-<org>`` (a service answered with a stream of
  messages) and ``$JS.ACK.SCHAKEL_OUT_<org>.deliver-<org>.>``;
- batched direct gets of the key log, ``$JS.API.DIRECT.GET.SCHAKEL_KEYLOG``, and the stream of
  new key events on ``schakel.keylog``;
- its own status question, ``schakel.status.<org>``.

Two more users, each alone in an account of its own, for the people who run the deployment;
each admin command connects as the narrowest one (``docs/NATS_PERMISSIONS.md``):

- ``operator`` (the ZVH's routing operator): reads the audit trail and the dead letters by
  direct get and asks the hub to replay a dead letter; it can write nothing;
- ``security`` (the security officer, who holds the directory authority's key): appends to
  the key log and to the registry stream and reads both.

Why accounts: NATS does not check a publisher's reply subject against its permissions, and a
responder (JetStream, the hub) answers to whatever reply subject the request carries. Inside
one account that reply could name a stream, a KV key or another partner's subject. Across an
import the server rewrites the reply to a private ``_R_`` subject and routes the answer back
into the asking account, where no stream, bucket or other partner lives: an answer can land
only where the asker itself could publish. Each partner's user keeps an allow-list on top
(publish only the imported subjects, subscribe only its own inbox prefix and the key log).
The server holds public NKeys only; seeds stay with their owners.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import nkeys

from schakel.contracts.ids import OrgId
from schakel.contracts.topology import (
    AUDIT_STREAM,
    DLQ_STREAM,
    HUB_STATUS_SUBJECT,
    KEYLOG_STREAM,
    KEYLOG_SUBJECT,
    REGISTRY_STREAM,
    REGISTRY_SUBJECT,
    REPLAY_SUBJECT,
    delivery_consumer,
    delivery_stream,
    inbound_subjects,
    inbox_prefix,
    status_subject,
)
from schakel.keys.crypto import random_bytes

__all__ = [
    "ADMIN_ROLES",
    "HUB_ACCOUNT",
    "HUB_USER",
    "PARTNER_MAX_CONNECTIONS",
    "ClusterLayout",
    "TlsFiles",
    "account_name",
    "admin_account",
    "admin_permissions",
    "admin_user_account",
    "ensure_seed",
    "hub_account",
    "hub_permissions",
    "partner_account",
    "partner_imports",
    "partner_permissions",
    "render_config",
    "write_config",
]

HUB_USER: Final = "hub"
HUB_ACCOUNT: Final = "HUB"
# What each administrative user may ask of the hub's account: (subject, response type).
ADMIN_ROLES: Final[dict[str, list[tuple[str, str | None]]]] = {
    "operator": [
        (f"$JS.API.DIRECT.GET.{AUDIT_STREAM}", "stream"),
        (f"$JS.API.DIRECT.GET.{DLQ_STREAM}", "stream"),
        (REPLAY_SUBJECT, None),
        (HUB_STATUS_SUBJECT, None),
    ],
    "security": [
        (KEYLOG_SUBJECT, None),  # append; JetStream's acknowledgement comes back
        (f"$JS.API.DIRECT.GET.{KEYLOG_STREAM}", "stream"),
        (REGISTRY_SUBJECT, None),
        (f"$JS.API.DIRECT.GET.{REGISTRY_STREAM}", "stream"),
    ],
}
PARTNER_MAX_CONNECTIONS: Final = 8
# Longer than a pull of deliveries may wait (the SDK asks for at most a second; the consumer
# caps it, see bus/topology.py) for a stream of answers; a single answer comes at once.
_RESPONSE_THRESHOLD: Final = {None: "1s", "stream": "2s"}


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Certificate, private key and CA bundle for a TLS block."""

    cert: Path
    key: Path
    ca: Path
    verify_clients: bool = False  # require client certificates signed by ``ca``


@dataclass(frozen=True, slots=True)
class ClusterLayout:
    """This server's place in a cluster."""

    name: str
    port: int
    routes: tuple[str, ...]


def account_name(org: OrgId) -> str:
    """The NATS account of one partner."""
    return "P-" + org.replace(".", "-")


def admin_account(role: str) -> str:
    """The NATS account of an administrative user (no partner's: those start with ``P-``)."""
    return "ADMIN-" + role.upper()


def admin_permissions(role: str) -> dict[str, Any]:
    """An administrative user may publish exactly its grants and hear only its own inbox."""
    return {
        "publish": {"allow": [subject for subject, _ in ADMIN_ROLES[role]]},
        "subscribe": {"allow": ["_INBOX.>"]},
    }


def admin_user_account(role: str, public: str) -> dict[str, Any]:
    """The account of one administrative user: the user, its imports, a few connections."""
    return {
        "users": [{"nkey": public, "permissions": admin_permissions(role)}],
        "imports": [
            {"service": {"account": HUB_ACCOUNT, "subject": subject}}
            for subject, _ in ADMIN_ROLES[role]
        ],
        "limits": {"max_connections": PARTNER_MAX_CONNECTIONS, "max_subscriptions": 100},
    }


def _grants(org: OrgId) -> list[tuple[str, str | None]]:
    """What ``org`` may ask of the hub's account: (subject, response type of its service)."""
    consumer = delivery_consumer(org)
    return [
        *((subject, None) for subject in inbound_subjects(org)),
        (f"$JS.API.CONSUMER.MSG.NEXT.{delivery_stream(org)}.{consumer}", "stream"),
        (f"$JS.ACK.{delivery_stream(org)}.{consumer}.>", None),
        (f"$JS.API.DIRECT.GET.{KEYLOG_STREAM}", "stream"),
        (status_subject(org), None),
    ]


def partner_permissions(org: OrgId) -> dict[str, Any]:
    """The exact permissions of one partner's user inside its own account."""
    return {
        "publish": {"allow": [subject for subject, _ in _grants(org)]},
        "subscribe": {"allow": [f"{inbox_prefix(org)}.>", KEYLOG_SUBJECT]},
    }


def partner_imports(org: OrgId) -> list[dict[str, Any]]:
    """The services and the one stream ``org``'s account imports from the hub's account."""
    imports: list[dict[str, Any]] = [
        {"service": {"account": HUB_ACCOUNT, "subject": subject}} for subject, _ in _grants(org)
    ]
    imports.append({"stream": {"account": HUB_ACCOUNT, "subject": KEYLOG_SUBJECT}})
    return imports


def partner_account(org: OrgId, public: str) -> dict[str, Any]:
    """The account of one partner: its user and its imports; no JetStream of its own."""
    return {
        "users": [{"nkey": public, "permissions": partner_permissions(org)}],
        "imports": partner_imports(org),
        # An adapter needs one connection (a few for redundancy); every connection can hold
        # server resources, so a partner gets a handful, not thousands.
        "limits": {"max_connections": PARTNER_MAX_CONNECTIONS, "max_subscriptions": 1_000},
    }


def hub_account(
    public: str, partners: Iterable[OrgId], roles: Iterable[str] = ()
) -> dict[str, Any]:
    """The hub's account: JetStream, the hub's user, and one export per grant, each visible
    to the account it was granted to only (a partner's, an administrative user's)."""
    partners = list(partners)
    exports: list[dict[str, Any]] = []
    grants = [(account_name(org), _grants(org)) for org in partners]
    grants += [(admin_account(role), ADMIN_ROLES[role]) for role in roles]
    for account, granted in grants:
        for subject, response in granted:
            export: dict[str, Any] = {
                "service": subject,
                "accounts": [account],
                # The server keeps a route back to the asker for each request until the answer
                # (or, for a stream of answers, this long): the bound on what a flood of
                # requests with distinct reply subjects can make it hold.
                "response_threshold": _RESPONSE_THRESHOLD[response],
            }
            if response is not None:
                export["response_type"] = response
            exports.append(export)
    # Shared by all partners: the public key directory. Merge the per-partner entries.
    shared: dict[str, dict[str, Any]] = {}
    for export in exports:
        if export["service"] in shared:
            shared[export["service"]]["accounts"] += export["accounts"]
        else:
            shared[export["service"]] = export
    merged = list(shared.values())
    accounts = sorted({account_name(org) for org in partners})
    if accounts:
        merged.append({"stream": KEYLOG_SUBJECT, "accounts": accounts})
    return {
        "jetstream": "enabled",
        "users": [{"nkey": public, "permissions": hub_permissions()}],
        "exports": merged,
    }


def hub_permissions() -> dict[str, Any]:
    """The hub runs the topology: it may do everything in its own account (and nothing in any
    other: accounts are closed unless they import)."""
    return {"publish": {"allow": [">"]}, "subscribe": {"allow": [">"]}}


def ensure_seed(path: Path) -> str:
    """Create an NKey user seed at ``path`` (mode 0600) unless it exists; return its public key."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        seed = nkeys.encode_seed(random_bytes(32), nkeys.PREFIX_BYTE_USER)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(seed + b"\n")
    public: bytes = nkeys.from_seed(bytearray(path.read_bytes().strip())).public_key
    return public.decode("ascii")


def _tls_block(tls: TlsFiles, *, verify_clients: bool) -> dict[str, Any]:
    return {
        "cert_file": str(tls.cert),
        "key_file": str(tls.key),
        "ca_file": str(tls.ca),
        "verify": verify_clients,
        "timeout": 5,
    }


def render_config(
    hub_public: str,
    partners: Mapping[OrgId, str],
    *,
    admins: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
    port: int = 4222,
    store_dir: Path,
    server_name: str = "schakel",
    tls: TlsFiles | None = None,
    cluster: ClusterLayout | None = None,
    max_payload: int = 1024 * 1024,
    monitor_port: int | None = None,
    pid_file: Path | None = None,
) -> str:
    """The server configuration (JSON, which nats-server reads as its config format).

    Args:
        hub_public: the hub user's public NKey.
        partners: each partner and its user's public NKey.
        admins: each administrative role (``ADMIN_ROLES``) and its user's public NKey.
    """
    admins = dict(admins or {})
    config: dict[str, Any] = {
        "server_name": server_name,
        "host": host,
        "port": port,
        "max_payload": max_payload,
        "jetstream": {"store_dir": str(store_dir)},
        "accounts": {
            HUB_ACCOUNT: hub_account(hub_public, sorted(partners), sorted(admins)),
            **{
                account_name(org): partner_account(org, public)
                for org, public in sorted(partners.items())
            },
            **{
                admin_account(role): admin_user_account(role, public)
                for role, public in sorted(admins.items())
            },
        },
    }
    if monitor_port is not None:
        # Loopback only: it serves the server's state (no message content, but names).
        config["http"] = f"127.0.0.1:{monitor_port}"
    if pid_file is not None:
        config["pid_file"] = str(pid_file)
    if tls is not None:
        config["tls"] = _tls_block(tls, verify_clients=tls.verify_clients)
    if cluster is not None:
        block: dict[str, Any] = {
            "name": cluster.name,
            "host": host,
            "port": cluster.port,
            "routes": list(cluster.routes),
        }
        if tls is not None:
            block["tls"] = _tls_block(tls, verify_clients=True)
        config["cluster"] = block
    labels = {hub_public: HUB_USER, **{public: org for org, public in partners.items()},
              **{public: role for role, public in admins.items()}}  # fmt: skip
    header = "".join(f"# {public} = {label}\n" for public, label in sorted(labels.items()))
    return header + json.dumps(config, indent=2, sort_keys=True) + "\n"


def write_config(
    out: Path,
    partners: Iterable[OrgId],
    **layout: Any,
) -> Path:
    """Write ``out/nats-server.conf`` and any missing seeds under ``out/creds`` (the hub's,
    each partner's, ``operator.nk`` and ``security.nk``); return the path.

    Existing seeds are kept, so regenerating after adding or removing a partner changes only
    that partner's entry; reload the server (SIGHUP) to apply it without a restart.
    """
    creds = out / "creds"
    hub_public = ensure_seed(creds / f"{HUB_USER}.nk")
    keys = {org: ensure_seed(creds / f"{org}.nk") for org in sorted(partners)}
    admins = {role: ensure_seed(creds / f"{role}.nk") for role in ADMIN_ROLES}
    path = out / "nats-server.conf"
    path.write_text(render_config(hub_public, keys, admins=admins, **layout), encoding="utf-8")
    return path
