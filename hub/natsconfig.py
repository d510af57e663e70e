"""The nats-server configuration: one NKey user per partner, exact permissions, TLS.

Generated from the partner registry by ``schakel nats-config``. Every partner may:

- publish its own envelopes: ``schakel.in.<org>``;
- pull from and acknowledge on its own durable consumer only:
  ``$JS.API.CONSUMER.MSG.NEXT.SCHAKEL_OUT.deliver-<org>``,
  ``$JS.API.CONSUMER.INFO.SCHAKEL_OUT.deliver-<org>`` and ``$JS.ACK.SCHAKEL_OUT.deliver-<org>.>``
  (acknowledgement subjects carry delivery counters after the consumer name);
- read the key directory's signed event log: batched direct gets on
  ``$JS.API.DIRECT.GET.SCHAKEL_KEYLOG``, and new events by subscribing to ``schakel.keylog``
  (public keys only; no consumer is created);
- ask the hub about its own messages: ``schakel.status.<org>`` (request-reply);
- subscribe to its own inbox prefix ``_INBOX_<org>.>``, and to nothing else.

Every ``$JS.API`` grant is an exact subject. Everything else is denied, including listing
streams, reading messages by sequence (``STREAM.MSG.GET``, ``DIRECT.GET``), creating, changing
or deleting streams and consumers, and publishing to the delivery or audit streams. Only the
hub's user may do those. The server holds public NKeys only; seeds stay with their owners.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import nkeys

from contracts.ids import OrgId
from contracts.topology import (
    DELIVERY_STREAM,
    KEYLOG_STREAM,
    KEYLOG_SUBJECT,
    delivery_consumer,
    inbound_subject,
    inbox_prefix,
    status_subject,
)
from keys.crypto import random_bytes

__all__ = [
    "HUB_USER",
    "ClusterLayout",
    "TlsFiles",
    "ensure_seed",
    "hub_permissions",
    "partner_permissions",
    "render_config",
    "write_config",
]

HUB_USER: Final = "hub"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Certificate, private key and CA bundle for a TLS block."""

    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True, slots=True)
class ClusterLayout:
    """This server's place in a cluster."""

    name: str
    port: int
    routes: tuple[str, ...]


def partner_permissions(org: OrgId) -> dict[str, Any]:
    """The exact permissions of one partner."""
    consumer = delivery_consumer(org)
    return {
        "publish": {
            "allow": [
                inbound_subject(org),
                f"$JS.API.CONSUMER.MSG.NEXT.{DELIVERY_STREAM}.{consumer}",
                f"$JS.API.CONSUMER.INFO.{DELIVERY_STREAM}.{consumer}",
                f"$JS.ACK.{DELIVERY_STREAM}.{consumer}.>",
                f"$JS.API.DIRECT.GET.{KEYLOG_STREAM}",
                status_subject(org),
            ]
        },
        "subscribe": {"allow": [f"{inbox_prefix(org)}.>", KEYLOG_SUBJECT]},
    }


def hub_permissions() -> dict[str, Any]:
    """The hub runs the topology: it may do everything in its account."""
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
    users: Mapping[str, tuple[str, dict[str, Any]]],
    *,
    host: str = "127.0.0.1",
    port: int = 4222,
    store_dir: Path,
    server_name: str = "schakel",
    tls: TlsFiles | None = None,
    cluster: ClusterLayout | None = None,
    max_payload: int = 1024 * 1024,
) -> str:
    """The server configuration (JSON, which nats-server reads as its config format).

    Args:
        users: label -> (public NKey, permissions); the label is for reviewers only.
    """
    config: dict[str, Any] = {
        "server_name": server_name,
        "host": host,
        "port": port,
        "max_payload": max_payload,
        "jetstream": {"store_dir": str(store_dir)},
        "authorization": {
            "users": [
                {"nkey": public, "permissions": permissions}
                for _, (public, permissions) in sorted(users.items())
            ]
        },
    }
    if tls is not None:
        config["tls"] = _tls_block(tls, verify_clients=False)
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
    labels = {public: label for label, (public, _) in users.items()}
    header = "".join(f"# {public} = {label}\n" for public, label in sorted(labels.items()))
    return header + json.dumps(config, indent=2, sort_keys=True) + "\n"


def write_config(
    out: Path,
    partners: Iterable[OrgId],
    **layout: Any,
) -> Path:
    """Write ``out/nats-server.conf`` and any missing seeds under ``out/creds``; return the path.

    Existing seeds are kept, so regenerating after adding or removing a partner changes only
    that partner's entry; reload the server (SIGHUP) to apply it without a restart.
    """
    creds = out / "creds"
    users = {HUB_USER: (ensure_seed(creds / f"{HUB_USER}.nk"), hub_permissions())}
    for org in sorted(partners):
        users[org] = (ensure_seed(creds / f"{org}.nk"), partner_permissions(org))
    path = out / "nats-server.conf"
    path.write_text(render_config(users, **layout), encoding="utf-8")
    return path
