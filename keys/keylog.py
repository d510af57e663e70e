"""The key directory as a verified fold of the signed, hash-chained key-event log.

:class:`KeyLog` applies events one at a time and refuses any that is not correctly chained
(index and previous hash), not countersigned by the directory authority, or not signed by the
organisation's current signing key (a revocation may carry the authority's signature alone).
Its view feeds :class:`keys.directory.KeyDirectory`.

Readers of the stored log use :meth:`KeyLog.offer`: an entry that is not the next valid signed
event (junk, a forgery, a replay) is skipped and reported, and the fold goes on with the
entries after it. The chain is over valid events only (``index`` counts them), so a foreign
entry can neither stop the directory nor change it, and the authority can still append.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Final

from pydantic import ValidationError

from schakel.contracts.canonical import canonical_json
from schakel.contracts.ids import KeyId, OrgId
from schakel.contracts.keyevents import (
    EVENT_LABEL,
    GENESIS_HASH,
    KeyEvent,
    KeyEventKind,
    KeyEventRequest,
    SignedKeyEvent,
    SigningKeyGrant,
)
from schakel.keys.crypto import SigningKey, VerifyKey
from schakel.keys.errors import KeysError
from schakel.keys.identity import (
    CertBody,
    EncryptionKeyCert,
    PartnerIdentity,
    PublicKeyRecord,
    SigningKeyInfo,
    signing_key_id,
)

__all__ = [
    "MAX_EVENT_BYTES",
    "KeyLog",
    "KeyLogError",
    "SigningKeyState",
    "add_encryption_key_request",
    "countersign",
    "event_hash",
    "recovery_request",
    "register_request",
    "revoke_request",
    "rotate_signing_key_request",
    "sign_request",
]


# A signed key event is a few kilobytes; anything far larger is not one.
MAX_EVENT_BYTES: Final = 64 * 1024


class KeyLogError(KeysError):
    """An event of the key log is not valid; ``index`` is its position."""

    def __init__(self, index: int, reason: str) -> None:
        self.index = index
        self.reason = reason
        super().__init__(f"key log event {index}: {reason}")


@dataclass
class SigningKeyState:
    """One signing key of one organisation over time."""

    info: SigningKeyInfo
    since: dt.datetime
    retired_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None


@dataclass
class _OrgKeys:
    signing: list[SigningKeyState] = field(default_factory=list)
    certs: list[EncryptionKeyCert] = field(default_factory=list)
    revoked: dict[KeyId, dt.datetime] = field(default_factory=dict)

    @property
    def current(self) -> SigningKeyState:
        return self.signing[-1]


def _request_bytes(event: KeyEvent) -> bytes:
    return EVENT_LABEL + canonical_json(event.model_copy(update={"index": 0, "prev": ""}))


def _event_bytes(event: KeyEvent) -> bytes:
    return EVENT_LABEL + canonical_json(event)


def event_hash(signed: SignedKeyEvent) -> str:
    """SHA-256 (hex) of a signed event's canonical form: what the next event's ``prev`` holds."""
    return hashlib.sha256(canonical_json(signed)).hexdigest()


def sign_request(event: KeyEvent, org_key: SigningKey | None) -> KeyEventRequest:
    """The organisation's signature over an event (chain fields excluded); offline."""
    return KeyEventRequest(
        event=event,
        org_kid=signing_key_id(org_key.public) if org_key else None,
        org_signature=org_key.sign(_request_bytes(event)) if org_key else None,
    )


def countersign(
    request: KeyEventRequest, *, index: int, prev: str, authority: SigningKey
) -> SignedKeyEvent:
    """Place a request in the chain and sign it as the directory authority."""
    event = request.event.model_copy(update={"index": index, "prev": prev})
    return SignedKeyEvent(
        event=event,
        org_kid=request.org_kid,
        org_signature=request.org_signature,
        authority_signature=authority.sign(_event_bytes(event)),
    )


def _request(org: OrgId, kind: KeyEventKind, at: dt.datetime, **fields: object) -> KeyEvent:
    """An unchained event (index and prev are filled in when the authority appends it)."""
    return KeyEvent.model_validate(
        {"index": 0, "prev": "", "at": at.replace(microsecond=0), "org": org, "kind": kind,
         **fields}
    )  # fmt: skip


def _signing_grant(key: SigningKey) -> SigningKeyGrant:
    return SigningKeyGrant(kid=signing_key_id(key.public), public=key.public.raw)


def _newest_encryption_key(identity: PartnerIdentity) -> dict[str, object]:
    cert = identity.certificates[-1]
    return {
        "encryption_key": cert.body.public,
        "encryption_kid": cert.body.kid,
        "not_before": cert.body.not_before,
        "not_after": cert.body.not_after,
        "encryption_cert_signature": cert.signature,
    }


def register_request(identity: PartnerIdentity, at: dt.datetime) -> KeyEvent:
    """The event that introduces an organisation (its signing key and newest encryption key)."""
    return _request(identity.org, KeyEventKind.REGISTER, at,
                    signing_key=_signing_grant(identity.signing_key),
                    **_newest_encryption_key(identity))  # fmt: skip


def add_encryption_key_request(identity: PartnerIdentity, at: dt.datetime) -> KeyEvent:
    """The event that publishes the identity's newest encryption key (rotation)."""
    return _request(
        identity.org, KeyEventKind.ADD_ENCRYPTION_KEY, at, **_newest_encryption_key(identity)
    )


def rotate_signing_key_request(identity: PartnerIdentity, at: dt.datetime) -> KeyEvent:
    """The event that replaces the identity's signing key by its next one, with the newest
    encryption key (certified by the next key); sign it with the current key."""
    if identity.next_signing_key is None:
        raise ValueError("the identity has no next signing key (with_new_signing_key)")
    return _request(identity.org, KeyEventKind.ROTATE_SIGNING_KEY, at,
                    signing_key=_signing_grant(identity.next_signing_key),
                    **_newest_encryption_key(identity))  # fmt: skip


def recovery_request(registration: KeyEvent, at: dt.datetime) -> KeyEvent:
    """The authority's event that gives an organisation which lost its signing key the keys of
    a fresh keystore (its registration request, ``keys init``): a signing-key rotation the
    organisation cannot cross-sign, valid only once its current signing key is revoked."""
    if registration.kind is not KeyEventKind.REGISTER:
        raise ValueError("a recovery is made from a fresh keystore's registration request")
    fields = registration.model_dump(exclude={"index", "prev", "at", "org", "kind"})
    return _request(OrgId(registration.org), KeyEventKind.ROTATE_SIGNING_KEY, at, **fields)


def revoke_request(org: OrgId, kid: KeyId, reason: str, at: dt.datetime) -> KeyEvent:
    """The event that revokes one key."""
    return _request(org, KeyEventKind.REVOKE, at, revoke_kid=kid, reason=reason)


class KeyLog:
    """The verified fold of the key-event log."""

    def __init__(self, authority: VerifyKey) -> None:
        self.authority = authority
        self.head = GENESIS_HASH
        self.length = 0
        self._orgs: dict[OrgId, _OrgKeys] = {}

    def chained(self, event: KeyEvent) -> KeyEvent:
        """``event`` with the index and previous hash that would append it to this log."""
        return event.model_copy(update={"index": self.length, "prev": self.head})

    def offer(self, raw: bytes) -> KeyLogError | None:
        """Apply ``raw`` if it is the next valid signed event; else say why it is skipped.

        Bounded before parsing: size here, nesting depth by pydantic's parser.
        """
        if len(raw) > MAX_EVENT_BYTES:
            return KeyLogError(self.length, "entry too large to be a key event")
        try:
            signed = SignedKeyEvent.model_validate_json(raw)
        except ValidationError:
            return KeyLogError(self.length, "not a key event")
        try:
            self.apply(signed)
        except KeyLogError as exc:
            return exc
        return None

    def apply(self, signed: SignedKeyEvent) -> None:
        """Verify and apply the next event.

        Raises:
            KeyLogError: the event is out of order, unchained, or wrongly signed.
        """
        event, index = signed.event, self.length
        if event.index != index:
            raise KeyLogError(index, f"index {event.index} where {index} was due (replayed?)")
        if event.prev != self.head:
            raise KeyLogError(index, "prev does not match the previous event (broken chain)")
        if not self.authority.verify(_event_bytes(event), signed.authority_signature):
            raise KeyLogError(index, "not countersigned by the directory authority")
        getattr(self, f"_apply_{event.kind.value.lower()}")(signed, index)
        self.head = event_hash(signed)
        self.length += 1

    def _org_signed_by(self, signed: SignedKeyEvent, key: VerifyKey | None) -> bool:
        return (
            key is not None
            and signed.org_signature is not None
            and signed.org_kid == signing_key_id(key)
            and key.verify(_request_bytes(signed.event), signed.org_signature)
        )

    def _require_current(self, signed: SignedKeyEvent, index: int) -> _OrgKeys:
        keys = self._orgs.get(OrgId(signed.event.org))
        if keys is None:
            raise KeyLogError(index, f"{signed.event.org} is not registered")
        current = keys.current
        if current.revoked_at is not None or not self._org_signed_by(signed, current.info.key):
            raise KeyLogError(index, "not signed by the organisation's current signing key")
        return keys

    def _cert(
        self, signed: SignedKeyEvent, signer: SigningKeyInfo, index: int
    ) -> EncryptionKeyCert:
        e = signed.event
        if (
            e.encryption_key is None
            or e.encryption_kid is None
            or e.not_before is None
            or e.not_after is None
            or e.encryption_cert_signature is None
        ):
            raise KeyLogError(index, "encryption key fields missing")
        body = CertBody(
            org=e.org,
            signing_kid=signer.kid,
            kid=e.encryption_kid,
            public=e.encryption_key,
            not_before=e.not_before,
            not_after=e.not_after,
        )
        cert = EncryptionKeyCert(body=body, signature=e.encryption_cert_signature)
        try:
            cert.check(signer.key)
        except KeysError as exc:
            raise KeyLogError(index, str(exc)) from None
        return cert

    def _grant(self, signed: SignedKeyEvent, index: int) -> SigningKeyInfo:
        grant = signed.event.signing_key
        if grant is None:
            raise KeyLogError(index, "signing key missing")
        info = SigningKeyInfo(kid=grant.kid, public=grant.public)
        if signing_key_id(info.key) != grant.kid:
            raise KeyLogError(index, "signing key id does not match its key")
        return info

    def _apply_register(self, signed: SignedKeyEvent, index: int) -> None:
        org = OrgId(signed.event.org)
        if org in self._orgs:
            raise KeyLogError(index, f"{org} is already registered")
        info = self._grant(signed, index)
        if not self._org_signed_by(signed, info.key):
            raise KeyLogError(index, "registration not signed with the key it registers")
        cert = self._cert(signed, info, index)
        self._orgs[org] = _OrgKeys(
            signing=[SigningKeyState(info=info, since=signed.event.at)], certs=[cert]
        )

    def _apply_add_encryption_key(self, signed: SignedKeyEvent, index: int) -> None:
        keys = self._require_current(signed, index)
        keys.certs.append(self._cert(signed, keys.current.info, index))

    def _apply_rotate_signing_key(self, signed: SignedKeyEvent, index: int) -> None:
        org = OrgId(signed.event.org)
        keys = self._orgs.get(org)
        if keys is None:
            raise KeyLogError(index, f"{org} is not registered")
        current = keys.current
        # Normally cross-signed by the old key; after the old key was revoked, the authority's
        # countersignature alone installs the replacement (recovery from a compromise).
        if current.revoked_at is None and not self._org_signed_by(signed, current.info.key):
            raise KeyLogError(index, "new signing key not cross-signed by the current one")
        info = self._grant(signed, index)
        # An encryption key may come along, certified by the new signing key (a recovery
        # brings one: the old private keys are gone with the old signing key).
        cert = self._cert(signed, info, index) if signed.event.encryption_key else None
        current.retired_at = current.retired_at or signed.event.at
        keys.signing.append(SigningKeyState(info=info, since=signed.event.at))
        if cert is not None:
            keys.certs.append(cert)

    def _apply_revoke(self, signed: SignedKeyEvent, index: int) -> None:
        event = signed.event
        keys = self._orgs.get(OrgId(event.org))
        if keys is None or event.revoke_kid is None:
            raise KeyLogError(index, "revocation of an unknown organisation or key")
        kid = KeyId(event.revoke_kid)
        states = [s for s in keys.signing if s.info.kid == kid]
        if not states and kid not in {c.kid for c in keys.certs}:
            raise KeyLogError(index, f"{event.org} has no key {kid}")
        if signed.org_signature is not None and not any(
            self._org_signed_by(signed, s.info.key) for s in keys.signing if s.revoked_at is None
        ):
            raise KeyLogError(index, "revocation signed by a key the organisation does not hold")
        for state in states:
            state.revoked_at = state.revoked_at or event.at
        if not states:
            keys.revoked.setdefault(kid, event.at)

    # --- the view -------------------------------------------------------------------------

    def records(self) -> list[PublicKeyRecord]:
        """Current public key records: newest signing key, encryption keys not revoked."""
        out = []
        for org, keys in self._orgs.items():
            previous = tuple(s.info for s in keys.signing[:-1])
            certs = tuple(c for c in keys.certs if c.kid not in keys.revoked)
            out.append(
                PublicKeyRecord(
                    org=org,
                    signing_key=keys.current.info,
                    previous_signing_keys=previous,
                    encryption_keys=certs,
                )
            )
        return out

    def signing_states(self) -> dict[tuple[OrgId, KeyId], SigningKeyState]:
        """Every signing key ever registered, by (organisation, key id)."""
        return {
            (org, KeyId(s.info.kid)): s for org, keys in self._orgs.items() for s in keys.signing
        }

    def revoked_encryption_keys(self) -> dict[KeyId, dt.datetime]:
        """Revoked encryption keys and when they were revoked."""
        return {kid: at for keys in self._orgs.values() for kid, at in keys.revoked.items()}

    def keys_of(self, org: OrgId) -> tuple[set[bytes], set[bytes]]:
        """The public signing and encryption keys the log holds for ``org``."""
        keys = self._orgs.get(org)
        if keys is None:
            return set(), set()
        return {s.info.public for s in keys.signing}, {c.body.public for c in keys.certs}
