"""Partner identities: key ids derived from keys, certificates bound to their signer."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from schakel.contracts.ids import OrgId
from schakel.keys.crypto import SigningKey, VerifyKey
from schakel.keys.errors import KeyMaterialError
from schakel.keys.identity import PartnerIdentity, PublicKeyRecord, signing_key_id


def test_key_ids_derive_from_keys() -> None:
    """Key ids are hashes of the public keys: different keys, different ids."""
    a, b = SigningKey(b"\x01" * 32), SigningKey(b"\x02" * 32)
    assert signing_key_id(a.public) != signing_key_id(b.public)
    assert signing_key_id(a.public) == signing_key_id(VerifyKey(a.public.raw))


def test_key_objects_check_length() -> None:
    """A key of the wrong length is refused on construction."""
    with pytest.raises(KeyMaterialError):
        SigningKey(b"\x01" * 31)
    with pytest.raises(KeyMaterialError):
        VerifyKey(b"\x01" * 33)


def test_record_rejects_foreign_certificate() -> None:
    """An encryption key certified by another organisation's signing key is rejected."""
    pol = PartnerIdentity.generate(OrgId("POL.west")).public_record()
    om = PartnerIdentity.generate(OrgId("OM.west")).public_record()
    data = pol.model_dump()
    data["signing_key"] = om.signing_key.model_dump()
    with pytest.raises(ValidationError):
        PublicKeyRecord.model_validate(data)


def test_record_rejects_altered_validity() -> None:
    """Stretching a certificate's validity breaks its signature."""
    data = PartnerIdentity.generate(OrgId("POL.west")).public_record().model_dump()
    data["encryption_keys"][0]["body"]["not_after"] = dt.datetime(2099, 1, 1, tzinfo=dt.UTC)
    with pytest.raises(ValidationError, match="signature"):
        PublicKeyRecord.model_validate(data)


def test_newest_valid_key_is_current() -> None:
    """Senders use the newest encryption key that is valid now."""
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    identity = PartnerIdentity.generate(OrgId("POL.west"), now=t0)
    rotated = identity.with_new_encryption_key(now=t0 + dt.timedelta(days=30))
    record = rotated.public_record()
    assert (
        record.current_encryption_key(t0 + dt.timedelta(days=1)).kid == identity.certificates[0].kid
    )
    assert (
        record.current_encryption_key(t0 + dt.timedelta(days=31)).kid == rotated.certificates[1].kid
    )
