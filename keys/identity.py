"""Partner identities: a long-lived signing key and certified, rotating encryption keys.

A partner's public face is its :class:`PublicKeyRecord`: the Ed25519 signing key and one or
more X25519 encryption keys, each certified by the signing key for a validity window. Key ids
are derived from the public keys (ENVELOPE.md section 4), so a record cannot claim an id that
belongs to another key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from dataclasses import dataclass, field
from typing import Final

from pydantic import BaseModel, ConfigDict, model_validator

from schakel.contracts.canonical import canonical_json
from schakel.contracts.clock import system_clock
from schakel.contracts.enums import OrgType
from schakel.contracts.header import Base64Key, Base64Signature, Timestamp
from schakel.contracts.ids import KeyId, KeyIdField, OrgId, OrgIdField, org_type_of
from schakel.keys.crypto import (
    EncryptionPrivateKey,
    EncryptionPublicKey,
    SigningKey,
    VerifyKey,
    blake2b,
)
from schakel.keys.errors import KeyDirectoryError

__all__ = [
    "DEFAULT_ENCRYPTION_KEY_VALIDITY",
    "CertBody",
    "EncryptionKeyCert",
    "PartnerIdentity",
    "PublicKeyRecord",
    "SigningKeyInfo",
    "encryption_key_id",
    "signing_key_id",
]

DEFAULT_ENCRYPTION_KEY_VALIDITY: Final = dt.timedelta(days=365)
CERT_LABEL: Final = b"schakel/1 encryption-key-certificate\n"


def signing_key_id(key: VerifyKey) -> KeyId:
    """``sig-`` + hex(BLAKE2b-128(public key, person="schakel/kid-sig"))."""
    return KeyId("sig-" + blake2b(key.raw, size=16, person=b"schakel/kid-sig").hex())


def encryption_key_id(key: EncryptionPublicKey) -> KeyId:
    """``enc-`` + hex(BLAKE2b-128(public key, person="schakel/kid-enc"))."""
    return KeyId("enc-" + blake2b(key.raw, size=16, person=b"schakel/kid-enc").hex())


def _utc_seconds(when: dt.datetime) -> dt.datetime:
    return when.astimezone(dt.UTC).replace(microsecond=0)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CertBody(_Frozen):
    """What an encryption-key certificate signs."""

    org: OrgIdField
    signing_kid: KeyIdField
    kid: KeyIdField
    public: Base64Key
    not_before: Timestamp
    not_after: Timestamp


class EncryptionKeyCert(_Frozen):
    """An X25519 public key certified by its organisation's signing key."""

    body: CertBody
    signature: Base64Signature

    @property
    def kid(self) -> KeyId:
        """The encryption key id."""
        return KeyId(self.body.kid)

    @property
    def public(self) -> EncryptionPublicKey:
        """The certified public key."""
        return EncryptionPublicKey(self.body.public)

    def valid_at(self, when: dt.datetime) -> bool:
        """Whether ``when`` lies inside the validity window."""
        return self.body.not_before <= when < self.body.not_after

    def check(self, signer: VerifyKey) -> None:
        """Check the certificate's signature and derived key id.

        Raises:
            KeyDirectoryError: the certificate is not valid.
        """
        if encryption_key_id(self.public) != self.body.kid:
            raise KeyDirectoryError("encryption key id does not match its key")
        if signing_key_id(signer) != self.body.signing_kid:
            raise KeyDirectoryError("certificate names another signing key")
        if not signer.verify(CERT_LABEL + canonical_json(self.body), self.signature):
            raise KeyDirectoryError("encryption key certificate signature is invalid")


class SigningKeyInfo(_Frozen):
    """A partner's public signing key."""

    kid: KeyIdField
    public: Base64Key

    @property
    def key(self) -> VerifyKey:
        """The verify key."""
        return VerifyKey(self.public)


class PublicKeyRecord(_Frozen):
    """Everything others need to send to and verify a partner."""

    org: OrgIdField
    signing_key: SigningKeyInfo
    previous_signing_keys: tuple[SigningKeyInfo, ...] = ()
    encryption_keys: tuple[EncryptionKeyCert, ...]

    @model_validator(mode="after")
    def _self_consistent(self) -> PublicKeyRecord:
        signers = {}
        for info in (self.signing_key, *self.previous_signing_keys):
            if signing_key_id(info.key) != info.kid:
                raise ValueError("signing key id does not match its key")
            signers[info.kid] = info.key
        for cert in self.encryption_keys:
            if cert.body.org != self.org:
                raise ValueError("encryption key certified for another organisation")
            signer = signers.get(cert.body.signing_kid)
            if signer is None:
                raise ValueError("encryption key certified by an unknown signing key")
            try:
                cert.check(signer)
            except KeyDirectoryError as exc:
                raise ValueError(str(exc)) from exc
        return self

    @property
    def org_type(self) -> OrgType:
        """The partner's organisation type."""
        return org_type_of(self.org)

    def current_encryption_key(self, when: dt.datetime) -> EncryptionKeyCert:
        """The newest encryption key valid at ``when`` (what senders should use).

        Raises:
            KeyDirectoryError: no encryption key is valid at ``when``.
        """
        valid = [c for c in self.encryption_keys if c.valid_at(when)]
        if not valid:
            raise KeyDirectoryError(f"{self.org} has no valid encryption key")
        return max(valid, key=lambda c: c.body.not_before)

    def encryption_key(self, kid: str) -> EncryptionKeyCert | None:
        """The encryption key with this id, if the record has it."""
        return next((c for c in self.encryption_keys if c.body.kid == kid), None)


@dataclass(frozen=True, slots=True, repr=False)
class PartnerIdentity:
    """A partner's private keys: what its keystore holds."""

    org: OrgId
    signing_key: SigningKey
    encryption_keys: dict[KeyId, EncryptionPrivateKey]
    certificates: tuple[EncryptionKeyCert, ...] = field(default=())
    # A signing key whose rotation request is with the directory authority: it replaces
    # ``signing_key`` once the key log shows it as current (:meth:`settled`).
    next_signing_key: SigningKey | None = None

    @classmethod
    def generate(
        cls,
        org: OrgId,
        *,
        now: dt.datetime | None = None,
        validity: dt.timedelta = DEFAULT_ENCRYPTION_KEY_VALIDITY,
    ) -> PartnerIdentity:
        """Create an identity with a fresh signing key and one certified encryption key."""
        org_type_of(org)  # validates the id
        identity = cls(org=org, signing_key=SigningKey.generate(), encryption_keys={})
        return identity.with_new_encryption_key(now=now, validity=validity)

    @property
    def signing_kid(self) -> KeyId:
        """The id of the signing key."""
        return signing_key_id(self.signing_key.public)

    def with_new_encryption_key(
        self,
        *,
        now: dt.datetime | None = None,
        validity: dt.timedelta = DEFAULT_ENCRYPTION_KEY_VALIDITY,
        private: EncryptionPrivateKey | None = None,
    ) -> PartnerIdentity:
        """Return a copy with one more encryption key, certified from ``now`` for ``validity``."""
        start = _utc_seconds(now or system_clock())
        key = private or EncryptionPrivateKey.generate()
        body = CertBody(
            org=self.org,
            signing_kid=self.signing_kid,
            kid=encryption_key_id(key.public),
            public=key.public.raw,
            not_before=start,
            not_after=start + validity,
        )
        cert = EncryptionKeyCert(
            body=body, signature=self.signing_key.sign(CERT_LABEL + canonical_json(body))
        )
        return dataclasses.replace(
            self,
            encryption_keys={**self.encryption_keys, cert.kid: key},
            certificates=(*self.certificates, cert),
        )

    def prune_encryption_keys(self, now: dt.datetime, keep: dt.timedelta) -> PartnerIdentity:
        """Destroy private encryption keys superseded for longer than ``keep``.

        ``keep`` is the rotation overlap plus the longest message lifetime: until then a message
        sealed to the old key before senders switched may still arrive, and must open.
        """
        certs = sorted(self.certificates, key=lambda c: c.body.not_before)
        drop = {
            old.kid for old, new in itertools.pairwise(certs) if new.body.not_before + keep <= now
        }
        return dataclasses.replace(
            self,
            encryption_keys={k: v for k, v in self.encryption_keys.items() if k not in drop},
            certificates=tuple(c for c in self.certificates if c.kid not in drop),
        )

    def with_new_signing_key(
        self,
        *,
        now: dt.datetime | None = None,
        validity: dt.timedelta = DEFAULT_ENCRYPTION_KEY_VALIDITY,
    ) -> PartnerIdentity:
        """A copy whose next signing key is fresh, with a fresh encryption key certified by it
        (kept, like every encryption key; published with the rotation). The current signing
        key stays current until :meth:`settled` sees the rotation in the key log."""
        successor = PartnerIdentity(
            org=self.org, signing_key=SigningKey.generate(), encryption_keys={}
        ).with_new_encryption_key(now=now, validity=validity)
        return dataclasses.replace(
            self,
            next_signing_key=successor.signing_key,
            encryption_keys={**self.encryption_keys, **successor.encryption_keys},
            certificates=(*self.certificates, *successor.certificates),
        )

    def settled(self, registered: KeyId) -> PartnerIdentity:
        """This identity once the key log shows ``registered`` as its current signing key: the
        next signing key becomes the signing key if it is the registered one."""
        nxt = self.next_signing_key
        if nxt is None or signing_key_id(nxt.public) != registered:
            return self
        return dataclasses.replace(self, signing_key=nxt, next_signing_key=None)

    def public_record(self) -> PublicKeyRecord:
        """The public key record others use to reach and verify this partner."""
        return PublicKeyRecord(
            org=self.org,
            signing_key=SigningKeyInfo(kid=self.signing_kid, public=self.signing_key.public.raw),
            encryption_keys=self.certificates,
        )

    def __repr__(self) -> str:
        return f"PartnerIdentity(org={self.org!r}, signing_kid={self.signing_kid!r})"
