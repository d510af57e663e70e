"""The cryptographic primitives Schakel uses: the only module that imports ``nacl``.

Key objects check their length when they are built and never show secret bytes in ``repr``.
Everything else in Schakel talks to these small types, so the primitives can be reviewed (and,
one day, replaced) in one place.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Final

import nacl.bindings as _b
import nacl.exceptions as _nacl_exc
import nacl.pwhash.argon2id as _argon2id
import nacl.signing as _signing

from schakel.keys.errors import KeyMaterialError, KeysError

__all__ = [
    "AEAD_KEY_BYTES",
    "AEAD_NONCE_BYTES",
    "AEAD_TAG_BYTES",
    "ARGON2ID_SALT_BYTES",
    "SEALED_BOX_OVERHEAD",
    "SIGNATURE_BYTES",
    "CryptoFailure",
    "EncryptionPrivateKey",
    "EncryptionPublicKey",
    "SigningKey",
    "VerifyKey",
    "aead_decrypt",
    "aead_encrypt",
    "argon2id",
    "blake2b",
    "constant_time_equal",
    "random_bytes",
    "secretbox_decrypt",
    "secretbox_encrypt",
]

AEAD_KEY_BYTES: Final = _b.crypto_aead_xchacha20poly1305_ietf_KEYBYTES  # 32
AEAD_NONCE_BYTES: Final = _b.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES  # 24
AEAD_TAG_BYTES: Final = _b.crypto_aead_xchacha20poly1305_ietf_ABYTES  # 16
SEALED_BOX_OVERHEAD: Final = _b.crypto_box_SEALBYTES  # 48
SIGNATURE_BYTES: Final = 64
_KEY_BYTES: Final = 32


class CryptoFailure(KeysError):
    """A primitive rejected its input (authentication failed, bad point, ...)."""


def _exact(raw: bytes, length: int, what: str) -> bytes:
    if not isinstance(raw, bytes) or len(raw) != length:
        raise KeyMaterialError(f"{what} must be exactly {length} bytes")
    return raw


def random_bytes(n: int) -> bytes:
    """Return ``n`` bytes from the operating system's CSPRNG."""
    return secrets.token_bytes(n)


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """Compare two byte strings in constant time."""
    return hmac.compare_digest(a, b)


def blake2b(data: bytes, *, size: int = 32, key: bytes = b"", person: bytes = b"") -> bytes:
    """BLAKE2b with an optional key and personalisation (at most 16 bytes)."""
    if len(person) > 16:
        raise KeyMaterialError("BLAKE2b personalisation is at most 16 bytes")
    return _b.crypto_generichash_blake2b_salt_personal(
        data, digest_size=size, key=key, person=person.ljust(16, b"\0") if person else b""
    )


class VerifyKey:
    """An Ed25519 public key."""

    __slots__ = ("_key", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = _exact(raw, _KEY_BYTES, "an Ed25519 public key")
        self._key = _signing.VerifyKey(raw)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Return whether ``signature`` is a valid signature of ``message``."""
        if len(signature) != SIGNATURE_BYTES:
            return False
        try:
            self._key.verify(message, signature)
        except _nacl_exc.BadSignatureError:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"VerifyKey({self.raw.hex()[:16]}...)"


class SigningKey:
    """An Ed25519 private key (built from its 32-byte seed)."""

    __slots__ = ("_key", "_seed")

    def __init__(self, seed: bytes) -> None:
        self._seed = _exact(seed, _KEY_BYTES, "an Ed25519 seed")
        self._key = _signing.SigningKey(seed)

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh random signing key."""
        return cls(random_bytes(_KEY_BYTES))

    @property
    def seed(self) -> bytes:
        """The secret seed; only for the keystore."""
        return self._seed

    @property
    def public(self) -> VerifyKey:
        """The matching public key."""
        return VerifyKey(bytes(self._key.verify_key))

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte detached signature of ``message``."""
        return bytes(self._key.sign(message).signature)

    def __repr__(self) -> str:
        return "SigningKey(<secret>)"


class EncryptionPublicKey:
    """An X25519 public key."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = _exact(raw, _KEY_BYTES, "an X25519 public key")

    def seal(self, plaintext: bytes) -> bytes:
        """Anonymously encrypt to this key (``crypto_box_seal``)."""
        return _b.crypto_box_seal(plaintext, self.raw)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EncryptionPublicKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"EncryptionPublicKey({self.raw.hex()[:16]}...)"


class EncryptionPrivateKey:
    """An X25519 private key."""

    __slots__ = ("_public", "_secret")

    def __init__(self, secret: bytes) -> None:
        self._secret = _exact(secret, _KEY_BYTES, "an X25519 private key")
        self._public = EncryptionPublicKey(_b.crypto_scalarmult_base(secret))

    @classmethod
    def generate(cls) -> EncryptionPrivateKey:
        """A fresh random encryption key."""
        return cls(random_bytes(_KEY_BYTES))

    @property
    def secret(self) -> bytes:
        """The secret scalar; only for the keystore."""
        return self._secret

    @property
    def public(self) -> EncryptionPublicKey:
        """The matching public key."""
        return self._public

    def unseal(self, sealed: bytes) -> bytes:
        """Open a ``crypto_box_seal`` box addressed to this key.

        Raises:
            CryptoFailure: the box does not open.
        """
        try:
            return _b.crypto_box_seal_open(sealed, self._public.raw, self._secret)
        except (_nacl_exc.CryptoError, _nacl_exc.TypeError, ValueError) as exc:
            raise CryptoFailure("sealed box") from exc

    def __repr__(self) -> str:
        return "EncryptionPrivateKey(<secret>)"


def aead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """XChaCha20-Poly1305-IETF encryption; returns ciphertext with the 16-byte tag."""
    _exact(key, AEAD_KEY_BYTES, "an AEAD key")
    _exact(nonce, AEAD_NONCE_BYTES, "an AEAD nonce")
    return _b.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, associated, nonce, key)


def aead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, associated: bytes) -> bytes:
    """XChaCha20-Poly1305-IETF decryption.

    Raises:
        CryptoFailure: authentication failed.
    """
    _exact(key, AEAD_KEY_BYTES, "an AEAD key")
    _exact(nonce, AEAD_NONCE_BYTES, "an AEAD nonce")
    try:
        return _b.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, associated, nonce, key)
    except _nacl_exc.CryptoError as exc:
        raise CryptoFailure("aead") from exc


def secretbox_encrypt(key: bytes, plaintext: bytes) -> bytes:
    """XSalsa20-Poly1305 ``crypto_secretbox`` with a random nonce prepended."""
    _exact(key, _b.crypto_secretbox_KEYBYTES, "a secretbox key")
    nonce = random_bytes(_b.crypto_secretbox_NONCEBYTES)
    return nonce + _b.crypto_secretbox(plaintext, nonce, key)


def secretbox_decrypt(key: bytes, boxed: bytes) -> bytes:
    """Open a box made by :func:`secretbox_encrypt`.

    Raises:
        CryptoFailure: authentication failed.
    """
    _exact(key, _b.crypto_secretbox_KEYBYTES, "a secretbox key")
    n = _b.crypto_secretbox_NONCEBYTES
    try:
        return _b.crypto_secretbox_open(boxed[n:], boxed[:n], key)
    except (_nacl_exc.CryptoError, ValueError) as exc:
        raise CryptoFailure("secretbox") from exc


ARGON2ID_SALT_BYTES: Final = _argon2id.SALTBYTES


def argon2id(passphrase: bytes, salt: bytes, *, opslimit: int, memlimit: int) -> bytes:
    """Derive a 32-byte key from a passphrase with Argon2id."""
    _exact(salt, ARGON2ID_SALT_BYTES, "an Argon2id salt")
    return _argon2id.kdf(_KEY_BYTES, passphrase, salt, opslimit=opslimit, memlimit=memlimit)
