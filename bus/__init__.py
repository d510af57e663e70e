"""The one home of ``nats``: connections, stream and KV access, topology, the key log.

Depends on ``contracts`` and ``keys``; ``hub`` and ``adapters`` use it, never each other.
Above this package nobody imports ``nats`` or catches a NATS error: operations raise
:class:`TransportError`, and :func:`is_transient` tells a lost connection from a refusal.
"""

from schakel.bus.connection import (
    Bus,
    Credentials,
    Kv,
    KvEntry,
    Message,
    Pulled,
    Puller,
    Stored,
    Subscription,
    redacted,
)
from schakel.bus.errors import StreamFull, TransportError, is_transient
from schakel.bus.keylog import DirectoryFollower, append_key_event, follow_directory, read_keylog
from schakel.bus.settings import CONFIG_ENV, Settings, SettingsError
from schakel.bus.tasks import stop
from schakel.bus.topology import (
    ACK_WAIT,
    INBOUND_ATTEMPTS,
    INBOUND_DELIVERIES,
    MAX_DELIVERIES_ADVISORY,
    REDELIVERY,
    Topology,
)

__all__ = [
    "ACK_WAIT",
    "CONFIG_ENV",
    "INBOUND_ATTEMPTS",
    "INBOUND_DELIVERIES",
    "MAX_DELIVERIES_ADVISORY",
    "REDELIVERY",
    "Bus",
    "Credentials",
    "DirectoryFollower",
    "Kv",
    "KvEntry",
    "Message",
    "Pulled",
    "Puller",
    "Settings",
    "SettingsError",
    "Stored",
    "StreamFull",
    "Subscription",
    "Topology",
    "TransportError",
    "append_key_event",
    "follow_directory",
    "is_transient",
    "read_keylog",
    "redacted",
    "stop",
]
