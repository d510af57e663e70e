"""Encrypted keystore: a partner's private keys on disk.

File format (JSON, one object)::

    {"format": "schakel-keystore/1",
     "kdf": {"alg": "argon2id13", "salt": b64(16), "opslimit": n, "memlimit": n},
     "box": b64(nonce(24) || crypto_secretbox(private material JSON))}

The key for the box is Argon2id(passphrase, salt). The file is written atomically with mode
0600 and refused when anyone but its owner can read it.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from schakel.contracts.header import Base64Key
from schakel.contracts.ids import KeyIdField, OrgId, OrgIdField
from schakel.keys.crypto import (
    ARGON2ID_SALT_BYTES,
    CryptoFailure,
    EncryptionPrivateKey,
    SigningKey,
    argon2id,
    random_bytes,
    secretbox_decrypt,
    secretbox_encrypt,
)
from schakel.keys.errors import KeystoreError, WrongPassphrase
from schakel.keys.identity import EncryptionKeyCert, PartnerIdentity

__all__ = ["PASSPHRASE_ENV", "KdfParams", "load_keystore", "save_keystore"]

PASSPHRASE_ENV: Final = "SCHAKEL_KEYSTORE_PASSPHRASE"  # noqa: S105 - a variable name
_FORMAT: Final = "schakel-keystore/1"


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id cost. The default is libsodium's MODERATE (256 MiB, 3 passes)."""

    opslimit: int = 3
    memlimit: int = 256 * 1024 * 1024

    @classmethod
    def for_tests(cls) -> KdfParams:
        """Cheap parameters for test suites; never for real keys."""
        return cls(opslimit=1, memlimit=8 * 1024 * 1024)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Kdf(_Frozen):
    alg: Literal["argon2id13"]
    salt: str
    opslimit: int = Field(ge=1, le=100)
    memlimit: int = Field(ge=8192, le=4 * 1024 * 1024 * 1024)


class _File(_Frozen):
    format: Literal["schakel-keystore/1"]
    kdf: _Kdf
    box: str


class _EncKey(_Frozen):
    kid: KeyIdField
    secret: Base64Key


class _Material(_Frozen):
    org: OrgIdField
    signing_seed: Base64Key
    encryption_keys: tuple[_EncKey, ...]
    certificates: tuple[EncryptionKeyCert, ...]
    next_signing_seed: Base64Key | None = None  # a signing-key rotation not yet in the log


def save_keystore(
    identity: PartnerIdentity,
    path: Path,
    passphrase: SecretStr,
    params: KdfParams | None = None,
) -> None:
    """Write ``identity`` to ``path``, encrypted under ``passphrase``; mode 0600, atomic.

    Raises:
        KeystoreError: the passphrase is empty or the file cannot be written.
    """
    secret = passphrase.get_secret_value().encode("utf-8")
    if not secret:
        raise KeystoreError("empty passphrase")
    params = params or KdfParams()
    salt = random_bytes(ARGON2ID_SALT_BYTES)
    key = argon2id(secret, salt, opslimit=params.opslimit, memlimit=params.memlimit)
    material = _Material(
        org=identity.org,
        signing_seed=identity.signing_key.seed,
        encryption_keys=tuple(
            _EncKey(kid=kid, secret=k.secret) for kid, k in identity.encryption_keys.items()
        ),
        certificates=identity.certificates,
        next_signing_seed=identity.next_signing_key.seed if identity.next_signing_key else None,
    )
    document = _File(
        format=_FORMAT,
        kdf=_Kdf(
            alg="argon2id13",
            salt=base64.b64encode(salt).decode("ascii"),
            opslimit=params.opslimit,
            memlimit=params.memlimit,
        ),
        box=base64.b64encode(
            # exclude_none: a keystore without a pending rotation reads as before
            secretbox_encrypt(key, material.model_dump_json(exclude_none=True).encode("utf-8"))
        ).decode("ascii"),
    )
    _write_private(path, document.model_dump_json(indent=2).encode("utf-8") + b"\n")


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise KeystoreError(f"cannot write keystore {path}: {exc.strerror}") from exc


def load_keystore(path: Path, passphrase: SecretStr) -> PartnerIdentity:
    """Read and decrypt a keystore.

    Raises:
        WrongPassphrase: the passphrase does not open it.
        KeystoreError: the file is missing, readable by others, or not a keystore.
    """
    try:
        mode = path.stat().st_mode
        raw = path.read_bytes()
    except OSError as exc:
        raise KeystoreError(f"cannot read keystore {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeystoreError(
            f"keystore {path} is accessible to other users (mode {stat.S_IMODE(mode):o}); "
            "run: chmod 600"
        )
    try:
        document = _File.model_validate_json(raw)
        salt = base64.b64decode(document.kdf.salt, validate=True)
        boxed = base64.b64decode(document.box, validate=True)
    except (ValidationError, binascii.Error) as exc:
        raise KeystoreError(f"{path} is not a Schakel keystore") from exc
    if len(salt) != ARGON2ID_SALT_BYTES:
        raise KeystoreError(f"{path} is not a Schakel keystore")
    key = argon2id(
        passphrase.get_secret_value().encode("utf-8"),
        salt,
        opslimit=document.kdf.opslimit,
        memlimit=document.kdf.memlimit,
    )
    try:
        plain = secretbox_decrypt(key, boxed)
    except CryptoFailure:
        raise WrongPassphrase(f"wrong passphrase for keystore {path}") from None
    try:
        material = _Material.model_validate_json(plain)
    except ValidationError as exc:
        raise KeystoreError(f"{path}: keystore content is invalid") from exc
    return PartnerIdentity(
        org=OrgId(material.org),
        signing_key=SigningKey(material.signing_seed),
        encryption_keys={k.kid: EncryptionPrivateKey(k.secret) for k in material.encryption_keys},
        certificates=material.certificates,
        next_signing_key=(
            SigningKey(material.next_signing_seed) if material.next_signing_seed else None
        ),
    )
