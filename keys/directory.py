"""The key directory: partners' public key records, as the hub and the adapters see them.

This module is the one home of "which key belongs to whom and may be used now". It is an
in-memory view; where the records come from (a file, NATS KV, the signed event log of the key
lifecycle) is the caller's business.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator

from contracts.ids import KeyId, OrgId
from keys.crypto import VerifyKey
from keys.errors import KeyDirectoryError
from keys.identity import EncryptionKeyCert, PublicKeyRecord

__all__ = ["KeyDirectory"]


class KeyDirectory:
    """A view of public key records by organisation."""

    __slots__ = ("_records",)

    def __init__(self, records: Iterable[PublicKeyRecord] = ()) -> None:
        self._records: dict[OrgId, PublicKeyRecord] = {}
        for record in records:
            self.put(record)

    def put(self, record: PublicKeyRecord) -> None:
        """Add or replace a partner's record (records validate themselves on construction)."""
        self._records[OrgId(record.org)] = record

    def remove(self, org: OrgId) -> None:
        """Forget a partner."""
        self._records.pop(org, None)

    def __contains__(self, org: object) -> bool:
        return org in self._records

    def __iter__(self) -> Iterator[PublicKeyRecord]:
        return iter(list(self._records.values()))

    def __len__(self) -> int:
        return len(self._records)

    def record(self, org: OrgId) -> PublicKeyRecord:
        """The record of ``org``.

        Raises:
            KeyDirectoryError: unknown organisation.
        """
        try:
            return self._records[org]
        except KeyError:
            raise KeyDirectoryError(f"unknown organisation {org}") from None

    def signer(self, org: OrgId, kid: KeyId, at: dt.datetime) -> VerifyKey:
        """The signing key ``kid`` of ``org`` (a :data:`keys.envelope.SignerResolver`).

        Raises:
            KeyDirectoryError: unknown organisation or key.
        """
        info = self.record(org).signing_key
        if info.kid != kid:
            raise KeyDirectoryError(f"{org} has no signing key {kid}")
        return info.key

    def encryption_key(self, org: OrgId, kid: KeyId, at: dt.datetime) -> EncryptionKeyCert:
        """The encryption key ``kid`` of ``org`` if it is valid at ``at``.

        Raises:
            KeyDirectoryError: unknown, or outside its validity window.
        """
        cert = self.record(org).encryption_key(kid)
        if cert is None:
            raise KeyDirectoryError(f"{org} has no encryption key {kid}")
        if not cert.valid_at(at):
            raise KeyDirectoryError(f"encryption key {kid} of {org} is not valid now")
        return cert
