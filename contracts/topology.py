"""Names on the wire between adapters and the hub: subjects, streams, consumers, buckets.

The hub creates all of these (``bus/topology.py``) in its own NATS account; adapters only
publish to their inbound subject, pull from their own consumer, ask about their own messages
and read the key directory, each through an import into their own account
(``hub/natsconfig.py``). Subjects carry organisation ids and, on inbound subjects, a partition
number (0-3, a hash of the case id: four values, nothing to find a case by); never a case id,
a message type or anything about a person.

Every partner has its own inbound stream (``SCHAKEL_IN_<org>``), so JetStream's expectation
headers, sequences and duplicate window never reach across partners. A partner publishes on one
of ``INBOUND_PARTITIONS`` subjects, ``schakel.in.<org>.<partition>``, the partition a function of
the case id alone (:func:`inbound_partition`), so that every message about one case, whoever
sends it, lands in the same partition: each hub instance takes a share of the partitions and
so of the cases (``hub/service.py``). The partition is a number; the case id is not on the
subject. A sender that picks another partition only makes the hub work harder (the case
record's compare-and-set still decides); the bare ``schakel.in.<org>`` of earlier versions is
partition 0. A delivery's subject names
its recipient and its sender (``schakel.out.<recipient>.<sender>``), so the hub can count a
recipient's backlog per sender.
"""

from __future__ import annotations

import hashlib
from typing import Final

from schakel.contracts.ids import OrgId, case_id_for

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
    "HUB_INSTANCES_STREAM",
    "HUB_INSTANCES_SUBJECT",
    "HUB_STATUS_SUBJECT",
    "INBOUND_ALLOWED_HEADERS",
    "INBOUND_PARTITIONS",
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
    "header_case_id",
    "hub_consumer",
    "hub_instances_subject",
    "inbound_filter",
    "inbound_partition",
    "inbound_stream",
    "inbound_subject",
    "inbound_subjects",
    "inbox_prefix",
    "message_partition",
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
HUB_CONSUMER: Final = "hub"  # the one consumer per inbound stream before partitions
# Every inbound stream is read in this many partitions, each by its own hub consumer; at most
# this many hub instances share the work (more stand by). Changing it re-partitions the cases.
INBOUND_PARTITIONS: Final = 4
# Each running hub instance says so here every few seconds (one message per instance, kept a
# few seconds): the instances alive, from which each derives its share of the partitions.
HUB_INSTANCES_STREAM: Final = "SCHAKEL_HUBS"
HUB_INSTANCES_SUBJECT: Final = "schakel.hubs"

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


def inbound_partition(case_id: str) -> int:
    """The inbound partition of every message about ``case_id``: the first four bytes of the
    SHA-256 of its UTF-8 (for a case id: ASCII), big-endian, modulo
    :data:`INBOUND_PARTITIONS`."""
    digest = hashlib.sha256(case_id.encode("utf-8", "replace")).digest()
    return int.from_bytes(digest[:4], "big") % INBOUND_PARTITIONS


def message_partition(case_id: str | None, message_id: str) -> int:
    """The inbound partition of a message, and of a receipt for it: its case's; for one that
    names no case, that of :func:`~schakel.contracts.ids.case_id_for` its message id (a
    signal: the case it opens, where the case's later messages go too)."""
    if case_id:
        return inbound_partition(case_id)
    if not message_id.isascii():  # no message id: whatever it is, partition 0
        return 0
    return inbound_partition(case_id_for(message_id))


def header_case_id(raw: bytes) -> str:
    """A cheap look at an envelope's case id, for partitions and lanes only (never trusted:
    the hub reads the header properly before it decides anything)."""
    try:
        start = raw.index(b'"case_id":"') + 11
        return raw[start : start + 31].decode("ascii", "replace")
    except ValueError:
        return ""


def inbound_subject(org: OrgId, partition: int | None = None) -> str:
    """Where ``org`` publishes its envelopes and receipts about a case in ``partition``
    (without one: the bare subject of earlier versions, read as partition 0)."""
    if partition is None:
        return INBOUND_PREFIX + org
    if not 0 <= partition < INBOUND_PARTITIONS:
        raise ValueError("no such inbound partition")
    return f"{INBOUND_PREFIX}{org}.{partition}"


_PARTITION_TOKENS: Final = frozenset(str(p) for p in range(INBOUND_PARTITIONS))


def inbound_subjects(org: OrgId) -> list[str]:
    """Every subject ``org`` may publish on: the bare one and each partition's."""
    return [inbound_subject(org), *(inbound_subject(org, p) for p in range(INBOUND_PARTITIONS))]


def inbound_filter(org: OrgId, partition: int) -> list[str]:
    """The subjects of ``org``'s inbound stream that the hub consumer of ``partition`` reads."""
    own = [inbound_subject(org, partition)]
    return [inbound_subject(org), *own] if partition == 0 else own


def hub_consumer(partition: int) -> str:
    """The name of the hub's durable consumer of ``partition`` on every inbound stream."""
    return f"{HUB_CONSUMER}-p{partition}"


def hub_instances_subject(token: str) -> str:
    """Where the hub instance whose subject token is ``token`` says it is alive."""
    return f"{HUB_INSTANCES_SUBJECT}.{token}"


def org_of_inbound_subject(subject: str) -> OrgId | None:
    """The organisation an inbound subject belongs to, or ``None`` (a partition's subject or
    the bare one; anything else is not an inbound subject)."""
    if not subject.startswith(INBOUND_PREFIX):
        return None
    rest = subject[len(INBOUND_PREFIX) :]
    if rest.count(".") == 2:  # an organisation id holds one dot
        rest, partition = rest.rsplit(".", 1)
        if partition not in _PARTITION_TOKENS:
            return None
    return OrgId(rest) if rest.count(".") == 1 else None


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
