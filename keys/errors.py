"""Errors of key material, keystores and the key directory.

::

    SchakelError
    └── KeysError                key material or keystore (the whole tree: contracts.errors)
        ├── KeyMaterialError     a key or signature of the wrong length or form
        ├── CryptoFailure        (keys.crypto) a primitive rejected its input
        ├── KeystoreError        a keystore file cannot be read or written
        │   └── WrongPassphrase  the passphrase does not open the keystore
        ├── KeyDirectoryError    a key is unknown, revoked or outside its validity window
        └── KeyLogError          (keys.keylog) an entry of the key log is not a valid event
"""

from __future__ import annotations

from schakel.contracts.enums import ReasonCode
from schakel.contracts.errors import SchakelError

__all__ = [
    "KeyDirectoryError",
    "KeyMaterialError",
    "KeysError",
    "KeystoreError",
    "WrongPassphrase",
]


class KeysError(SchakelError):
    """Root of key-related errors."""


class KeyMaterialError(KeysError):
    """A key or signature has the wrong length or form."""


class KeystoreError(KeysError):
    """A keystore file cannot be read or written."""


class WrongPassphrase(KeystoreError):
    """The passphrase does not open the keystore."""


class KeyDirectoryError(KeysError):
    """A key is unknown, revoked or outside its validity window.

    ``code`` is the refusal reason the hub reports for it (``UNKNOWN_KEY``, ``KEY_REVOKED``,
    ``KEY_EXPIRED``).
    """

    def __init__(self, message: str, code: ReasonCode = ReasonCode.UNKNOWN_KEY) -> None:
        self.code = code
        super().__init__(message)
