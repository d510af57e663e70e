"""Names on the wire between adapters and the hub: subjects, streams, consumers, buckets.

The hub creates all of these (``hub/transport.py``); adapters only publish to their inbound
subject, pull from their own consumer and read the key directory. Subjects carry organisation
ids only: never a case id, a message type or anything about a person.
"""

from __future__ import annotations

from typing import Final

from contracts.ids import OrgId

__all__ = [
    "AUDIT_STREAM",
    "AUDIT_SUBJECT",
    "CASES_BUCKET",
    "DELIVERY_STREAM",
    "DLQ_PREFIX",
    "DLQ_STREAM",
    "HEADER_KIND",
    "INBOUND_STREAM",
    "KEYLOG_STREAM",
    "KEYLOG_SUBJECT",
    "KIND_ENVELOPE",
    "KIND_RECEIPT",
    "KIND_REFUSAL",
    "MESSAGES_BUCKET",
    "STATUS_PREFIX",
    "delivery_consumer",
    "delivery_subject",
    "inbound_subject",
    "inbox_prefix",
    "org_of_inbound_subject",
    "status_subject",
]

INBOUND_STREAM: Final = "SCHAKEL_IN"
DELIVERY_STREAM: Final = "SCHAKEL_OUT"
AUDIT_STREAM: Final = "SCHAKEL_AUDIT"
DLQ_STREAM: Final = "SCHAKEL_DLQ"
DLQ_PREFIX: Final = "schakel.dlq."
AUDIT_SUBJECT: Final = "schakel.audit"
CASES_BUCKET: Final = "schakel-cases"
MESSAGES_BUCKET: Final = "schakel-messages"
KEYLOG_STREAM: Final = "SCHAKEL_KEYLOG"
KEYLOG_SUBJECT: Final = "schakel.keylog"
INBOUND_PREFIX: Final = "schakel.in."
DELIVERY_PREFIX: Final = "schakel.out."
HUB_CONSUMER: Final = "hub"

HEADER_KIND: Final = "Schakel-Kind"
KIND_ENVELOPE: Final = "envelope"
KIND_REFUSAL: Final = "refusal"
KIND_RECEIPT: Final = "receipt"
STATUS_PREFIX: Final = "schakel.status."


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


def delivery_subject(org: OrgId) -> str:
    """Where the hub puts envelopes and notices for ``org``."""
    return DELIVERY_PREFIX + org


def inbox_prefix(org: OrgId) -> str:
    """The private reply-subject prefix of ``org`` (the only subjects it may subscribe to)."""
    return "_INBOX_" + org.replace(".", "-")


def delivery_consumer(org: OrgId) -> str:
    """The durable consumer ``org`` pulls from (NATS names cannot hold dots)."""
    return "deliver-" + org.replace(".", "-")
