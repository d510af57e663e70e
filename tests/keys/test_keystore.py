"""Encrypted keystore: round trip, wrong passphrase, file permissions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from schakel.contracts.ids import OrgId
from schakel.keys.errors import KeystoreError, WrongPassphrase
from schakel.keys.identity import PartnerIdentity
from schakel.keys.keystore import KdfParams, load_keystore, save_keystore

PASS = SecretStr("correct horse battery staple")


@pytest.fixture
def stored(tmp_path: Path) -> tuple[PartnerIdentity, Path]:
    identity = PartnerIdentity.generate(OrgId("POL.west"))
    path = tmp_path / "pol.keystore"
    save_keystore(identity, path, PASS, KdfParams.for_tests())
    return identity, path


def test_round_trip(stored: tuple[PartnerIdentity, Path]) -> None:
    """A keystore opens to the same keys it was written with."""
    identity, path = stored
    loaded = load_keystore(path, PASS)
    assert loaded.signing_kid == identity.signing_kid
    assert loaded.public_record() == identity.public_record()
    assert {k: v.secret for k, v in loaded.encryption_keys.items()} == {
        k: v.secret for k, v in identity.encryption_keys.items()
    }


def test_written_with_mode_0600(stored: tuple[PartnerIdentity, Path]) -> None:
    """The keystore file is readable by its owner only."""
    _, path = stored
    assert path.stat().st_mode & 0o777 == 0o600


def test_wrong_passphrase_is_a_clear_error(stored: tuple[PartnerIdentity, Path]) -> None:
    """A wrong passphrase raises WrongPassphrase, naming the file."""
    _, path = stored
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        load_keystore(path, SecretStr("wrong"))


def test_world_readable_keystore_refused(stored: tuple[PartnerIdentity, Path]) -> None:
    """A keystore others can read is refused with the fix in the message."""
    _, path = stored
    os.chmod(path, 0o644)
    with pytest.raises(KeystoreError, match="chmod 600"):
        load_keystore(path, PASS)


def test_no_secrets_in_file_or_repr(stored: tuple[PartnerIdentity, Path]) -> None:
    """Neither the file nor any repr shows private key bytes."""
    identity, path = stored
    text = path.read_text()
    assert identity.signing_key.seed.hex() not in text
    assert "secret" not in repr(identity) and identity.signing_key.seed.hex() not in repr(identity)
    assert repr(identity.signing_key) == "SigningKey(<secret>)"


def test_garbage_file_is_not_a_keystore(tmp_path: Path) -> None:
    """A file that is not a keystore gives a clear error, not a traceback."""
    path = tmp_path / "x.keystore"
    path.write_text("{}")
    path.chmod(0o600)
    with pytest.raises(KeystoreError, match="not a Schakel keystore"):
        load_keystore(path, PASS)


def test_empty_passphrase_refused(tmp_path: Path) -> None:
    """Saving under an empty passphrase is refused."""
    with pytest.raises(KeystoreError, match="empty"):
        save_keystore(PartnerIdentity.generate(OrgId("OM.west")), tmp_path / "k", SecretStr(""))
