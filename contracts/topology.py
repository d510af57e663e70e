"""Names on the wire between adapters and the hub: subjects, streams, consumers, buckets.

The hub creates all of these (``bus/topology.py``) in its own NATS account; adapters only
publish to their inbound subject, pull from their own consumer, ask about their own messages
and read the key directory, each through an import into their own account
(``hub/natsconfig.py``). Subjects carry organisation ids only: never a case id, a message type
or anything about a person.

Every partner has its own inbound stream (``SCHAKEL_IN_<org>``), so JetStream's expectation
headers, sequences and duplicate window never reach across partners. A delivery's subject names
its recipient and its sender (``schakel.out.<recipient>.<sender>``), so the hub can count a
recipient's backlog per sender.
"""

from __future__ import annotations

from typing import Final

from schakel.contracts.ids import OrgId

__all__ = [
    "AUDIT_STREAM",
    "AUDIT_SUBJECT",
    "CASES_BUCKET",
    "DELIVERY_PREFIX",
    "DELIVERY_STREAM_PREFIX",
    "DLQ_PREFIX",
    "DLQ_STREAM",
    "HEADER_DELIVERIES",
    "HEADER_KIND",
    "HEADER_MSG_ID",
    "HEADER_ORIGINAL_SUBJECT",
    "HUB_CONSUMER",
    "HUB_STATUS_SUBJECT",
    "INBOUND_ALLOWED_HEADERS",
    "INBOUND_PREFIX",
    "INBOUND_STREAM_PREFIX",
    "KEYLOG_STREAM",
    "KEYLOG_SUBJECT",
    "KIND_ENVELOPE",
    "KIND_RECEIPT",
    "KIND_REFUSAL",
    "LEGACY_DELIVERY_STREAM",
    "LEGACY_INBOUND_STREAM",
    "MESSAGES_BUCKET",
    "QUARANTINE_PREFIX",
    "REGISTRY_STREAM",
    "REGISTRY_SUBJECT",
    "REPLAY_SUBJECT",
    "STATUS_PREFIX",
    "delivery_consumer",
    "delivery_filter",
    "delivery_stream",
    "delivery_subject",
    "inbound_stream",
    "inbound_subject",
    "inbox_prefix",
    "org_of_inbound_subject",
    "quarantine_subject",
    "recipient_of_delivery_subject",
    "status_subject",
]

INBOUND_STREAM_PREFIX: Final = "SCHAKEL_IN_"
LEGACY_INBOUND_STREAM: Final = "SCHAKEL_IN"  # one stream for all partners, before accounts
DELIVERY_STREAM_PREFIX: Final = "SCHAKEL_OUT_"
LEGACY_DELIVERY_STREAM: Final = "SCHAKEL_OUT"  # one stream for all partners, before accounts
AUDIT_STREAM: Final = "SCHAKEL_AUDIT"
DLQ_STREAM: Final = "SCHAKEL_DLQ"
DLQ_PREFIX: Final = "schakel.dlq."
QUARANTINE_PREFIX: Final = "schakel.quarantine."
AUDIT_SUBJECT: Final = "schakel.audit"
CASES_BUCKET: Final = "schakel-cases"
MESSAGES_BUCKET: Final = "schakel-messages"
KEYLOG_STREAM: Final = "SCHAKEL_KEYLOG"
KEYLOG_SUBJECT: Final = "schakel.keylog"
# The partner registry as the directory authority signed it (contracts/registry.py).
REGISTRY_STREAM: Final = "SCHAKEL_REGISTRY"
REGISTRY_SUBJECT: Final = "schakel.registry"
# The operator asks the hub to deliver a dead letter again (a request, answered by the hub).
REPLAY_SUBJECT: Final = "schakel.admin.replay"
# The operator asks whether a hub runs and what it uses (registry edition, partners ready).
HUB_STATUS_SUBJECT: Final = "schakel.admin.status"
INBOUND_PREFIX: Final = "schakel.in."
DELIVERY_PREFIX: Final = "schakel.out."
HUB_CONSUMER: Final = "hub"

HEADER_KIND: Final = "Schakel-Kind"
KIND_ENVELOPE: Final = "envelope"
KIND_REFUSAL: Final = "refusal"
KIND_RECEIPT: Final = "receipt"
STATUS_PREFIX: Final = "schakel.status."
HEADER_MSG_ID: Final = "Nats-Msg-Id"
# On a dead letter or a quarantined message: where it came from and how often it was tried
# (``schakel dlq list | replay`` reads them; only the hub writes them).
HEADER_ORIGINAL_SUBJECT: Final = "Schakel-Original-Subject"
HEADER_DELIVERIES: Final = "Schakel-Deliveries"
# The only headers a partner may put on what it publishes; the hub refuses anything else.
# ``Nats-Request-Info`` is set by the server itself when the message crosses into the hub's
# account through the partner's import.
INBOUND_ALLOWED_HEADERS: Final = frozenset({HEADER_MSG_ID, HEADER_KIND, "Nats-Request-Info"})


def inbound_subject(org: OrgId) -> str:
    """Where ``org`` publishes its envelopes."""
    return INBOUND_PREFIX + org


def org_of_inbound_subject(subject: str) -> OrgId | None:
    """The organisation an inbound subject belongs to, or ``None``."""
    if not subject.startswith(INBOUND_PREFIX):
        return None
    return OrgId(subject[len(INBOUND_PREFIX) :])


def status_subject(org: OrgId) -> str:
    """Where ``org`` asks the hub about the state of its own messages (request-reply)."""
    return STATUS_PREFIX + org


def inbound_stream(org: OrgId) -> str:
    """The stream holding what ``org`` published and the hub has not finished yet."""
    return INBOUND_STREAM_PREFIX + _token(org)


def delivery_stream(org: OrgId) -> str:
    """The stream holding what waits for ``org``: deliveries, receipts and notices."""
    return DELIVERY_STREAM_PREFIX + _token(org)


def delivery_subject(recipient: OrgId, sender: OrgId) -> str:
    """Where the hub puts an envelope or notice from ``sender`` for ``recipient``."""
    return f"{DELIVERY_PREFIX}{recipient}.{sender}"


def delivery_filter(recipient: OrgId) -> str:
    """Every delivery subject of ``recipient`` (its consumer's filter)."""
    return f"{DELIVERY_PREFIX}{recipient}.>"


def recipient_of_delivery_subject(subject: str) -> OrgId | None:
    """The recipient a delivery subject names (organisation ids are two tokens), or ``None``."""
    tokens = subject.removeprefix(DELIVERY_PREFIX).split(".")
    if not subject.startswith(DELIVERY_PREFIX) or len(tokens) != 4:
        return None
    return OrgId(".".join(tokens[:2]))


def quarantine_subject(org: OrgId) -> str:
    """Where the hub parks what ``org`` published and the hub could not process."""
    return QUARANTINE_PREFIX + org


def _token(org: OrgId) -> str:
    """``org`` as one NATS name token (stream, consumer and inbox names cannot hold dots)."""
    return org.replace(".", "-")


def inbox_prefix(org: OrgId) -> str:
    """The private reply-subject prefix of ``org`` (the only subjects it may subscribe to)."""
    return "_INBOX_" + _token(org)


def delivery_consumer(org: OrgId) -> str:
    """The durable consumer ``org`` pulls from (NATS names cannot hold dots)."""
    return "deliver-" + _token(org)
