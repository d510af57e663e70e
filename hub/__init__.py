"""The hub: policy-checked routing over NATS JetStream.

- :mod:`schakel.hub.router`    the router: checks, decides, delivers, audits (ordering rules)
- :mod:`schakel.hub.policy`    the policy engine: who may send what to whom in which state
- :mod:`schakel.hub.audit`     the hash-chained audit trail
- :mod:`schakel.hub.stores`    case records, message ids and the outbox on the bus
- :mod:`schakel.hub.memory`    the same four stores in memory, for tests of the router
- :mod:`schakel.hub.service`   the running hub: fetchers, batches, status, dead letters
- :mod:`schakel.hub.settings`  the settings resolved into the hub's objects
"""

from schakel.hub.audit import AuditError, AuditRecord, AuditTrail, read_trail, verify_chain
from schakel.hub.memory import StoreFailure
from schakel.hub.router import HeldBack, RetryLater, Router
from schakel.hub.service import Hub, provision, registration
from schakel.hub.settings import HubSettings

__all__ = [
    "AuditError",
    "AuditRecord",
    "AuditTrail",
    "HeldBack",
    "Hub",
    "HubSettings",
    "RetryLater",
    "Router",
    "StoreFailure",
    "provision",
    "read_trail",
    "registration",
    "verify_chain",
]
