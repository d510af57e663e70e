"""Key events: the entries of the key directory's append-only log.

The directory is the fold of a hash-chained log of signed events, kept in JetStream. Each
event is signed by the organisation over the event without ``index`` and ``prev`` (its request,
which it can sign offline, with its signing key current at that point; a new signing key is
thereby cross-signed by the old one) and countersigned by the directory authority over the
whole event, chain fields included: a key held by the ZVH's security officer. A revocation
may be signed by the authority alone: the organisation may have lost the key it revokes.
Expiry needs no event: every key carries its validity window.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict

from schakel.contracts.header import Base64Key, Base64Signature, Timestamp
from schakel.contracts.ids import KeyIdField, OrgIdField

__all__ = [
    "EVENT_LABEL",
    "GENESIS_HASH",
    "KeyEvent",
    "KeyEventKind",
    "KeyEventRequest",
    "RevocationReason",
    "SignedKeyEvent",
    "SigningKeyGrant",
]

EVENT_LABEL: Final = b"schakel/1 key-event\n"
GENESIS_HASH: Final = "0" * 64


class KeyEventKind(StrEnum):
    """What an event does to an organisation's keys."""

    REGISTER = "REGISTER"  # a new organisation: signing key + first encryption key
    ADD_ENCRYPTION_KEY = "ADD_ENCRYPTION_KEY"  # routine rotation of the encryption key
    ROTATE_SIGNING_KEY = "ROTATE_SIGNING_KEY"  # new signing key, cross-signed by the old one
    REVOKE = "REVOKE"  # a key must not be used any more


class RevocationReason(StrEnum):
    """Why a key was revoked."""

    COMPROMISED = "compromised"
    SUPERSEDED = "superseded"
    LOST = "lost"
    LEFT = "left"  # the organisation left the PGA


class SigningKeyGrant(BaseModel):
    """A signing key as the log introduces it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kid: KeyIdField
    public: Base64Key


class KeyEvent(BaseModel):
    """One change to one organisation's keys; ``index`` and ``prev`` chain the log."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["schakel-key-event/1"] = "schakel-key-event/1"
    index: int
    prev: str
    at: Timestamp
    org: OrgIdField
    kind: KeyEventKind
    signing_key: SigningKeyGrant | None = None
    encryption_key: Base64Key | None = None
    encryption_kid: KeyIdField | None = None
    not_before: Timestamp | None = None
    not_after: Timestamp | None = None
    encryption_cert_signature: Base64Signature | None = None
    revoke_kid: KeyIdField | None = None
    reason: RevocationReason | None = None


class KeyEventRequest(BaseModel):
    """An event as the organisation signs it, before the authority appends it to the log."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event: KeyEvent
    org_kid: KeyIdField | None = None
    org_signature: Base64Signature | None = None


class SignedKeyEvent(BaseModel):
    """An event with the organisation's and the directory authority's signatures."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event: KeyEvent
    org_kid: KeyIdField | None = None
    org_signature: Base64Signature | None = None
    authority_signature: Base64Signature
