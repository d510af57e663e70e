"""The key directory: partners' public keys as the hub and the adapters see them.

The one home of "which key belongs to whom and may be used now". It is an in-memory view,
filled either from public key records directly or from the verified key-event log
(:meth:`KeyDirectory.load`), which adds signing-key history and revocations.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator

from schakel.contracts.enums import ReasonCode
from schakel.contracts.ids import KeyId, OrgId
from schakel.keys.crypto import VerifyKey
from schakel.keys.errors import KeyDirectoryError
from schakel.keys.identity import EncryptionKeyCert, PublicKeyRecord
from schakel.keys.keylog import KeyLog, SigningKeyState

__all__ = ["KeyDirectory"]

_SKEW = dt.timedelta(minutes=2)


class KeyDirectory:
    """A view of public keys by organisation."""

    def __init__(self, records: Iterable[PublicKeyRecord] = ()) -> None:
        self._records: dict[OrgId, PublicKeyRecord] = {}
        self._signing: dict[tuple[OrgId, KeyId], SigningKeyState] = {}
        self._revoked: dict[KeyId, dt.datetime] = {}
        self.synced_at: dt.datetime | None = None
        self.log_length = 0
        for record in records:
            self.put(record)

    def put(self, record: PublicKeyRecord) -> None:
        """Add or replace a partner's record (records validate themselves on construction)."""
        self._records[OrgId(record.org)] = record

    def load(self, log: KeyLog) -> None:
        """Replace the whole view with the fold of a verified key log."""
        self._records = {OrgId(r.org): r for r in log.records()}
        self._signing = log.signing_states()
        self._revoked = log.revoked_encryption_keys()
        self.log_length = log.length

    def remove(self, org: OrgId) -> None:
        """Forget a partner."""
        self._records.pop(org, None)

    def __contains__(self, org: object) -> bool:
        return org in self._records

    def __iter__(self) -> Iterator[PublicKeyRecord]:
        return iter(list(self._records.values()))

    def __len__(self) -> int:
        return len(self._records)

    def revoked_at(self, org: OrgId, kid: KeyId) -> dt.datetime | None:
        """When the key ``kid`` of ``org`` was revoked, or ``None``."""
        state = self._signing.get((org, kid))
        if state is not None and state.revoked_at is not None:
            return state.revoked_at
        return self._revoked.get(kid)

    def record(self, org: OrgId) -> PublicKeyRecord:
        """The record of ``org``.

        Raises:
            KeyDirectoryError: unknown organisation.
        """
        try:
            return self._records[org]
        except KeyError:
            raise KeyDirectoryError(f"unknown organisation {org}") from None

    def signer(
        self, org: OrgId, kid: KeyId, at: dt.datetime, *, now: dt.datetime | None = None
    ) -> VerifyKey:
        """The signing key ``kid`` of ``org`` for a message created at ``at``.

        A key revoked before ``now`` (default ``at``) is refused, whatever ``at`` claims; a key
        retired by a signing-key rotation still verifies what was created before the switch.

        Raises:
            KeyDirectoryError: unknown (``UNKNOWN_KEY``), revoked (``KEY_REVOKED``) or used
                after its retirement (``KEY_EXPIRED``).
        """
        state = self._signing.get((org, kid))
        if state is None:
            info = self.record(org).signing_key
            if info.kid != kid:
                raise KeyDirectoryError(f"{org} has no signing key {kid}")
            return info.key
        if state.revoked_at is not None and (now or at) >= state.revoked_at:
            raise KeyDirectoryError(
                f"signing key {kid} of {org} is revoked", ReasonCode.KEY_REVOKED
            )
        if state.retired_at is not None and at >= state.retired_at + _SKEW:
            raise KeyDirectoryError(
                f"signing key {kid} of {org} was replaced", ReasonCode.KEY_EXPIRED
            )
        return state.info.key

    def encryption_key(self, org: OrgId, kid: KeyId, at: dt.datetime) -> EncryptionKeyCert:
        """The encryption key ``kid`` of ``org`` if it is usable at ``at``.

        Raises:
            KeyDirectoryError: unknown, revoked or outside its validity window.
        """
        revoked = self._revoked.get(kid)
        if revoked is not None and at >= revoked:
            raise KeyDirectoryError(
                f"encryption key {kid} of {org} is revoked", ReasonCode.KEY_REVOKED
            )
        cert = self.record(org).encryption_key(kid)
        if cert is None:
            raise KeyDirectoryError(f"{org} has no encryption key {kid}")
        if not cert.valid_at(at):
            raise KeyDirectoryError(
                f"encryption key {kid} of {org} is not valid now", ReasonCode.KEY_EXPIRED
            )
        return cert

    def expiring(self, now: dt.datetime, within: dt.timedelta) -> list[EncryptionKeyCert]:
        """Encryption keys that expire within ``within`` and have no valid successor yet."""
        soon = []
        for record in self:
            valid = [c for c in record.encryption_keys if c.valid_at(now)]
            if valid and all(c.body.not_after <= now + within for c in valid):
                soon.append(max(valid, key=lambda c: c.body.not_after))
        return soon
