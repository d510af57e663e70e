"""Keys: identities, the envelope crypto and the keystore. The only package that uses ``nacl``.

- :mod:`schakel.keys.crypto`     the primitives (the one module that imports ``nacl``)
- :mod:`schakel.keys.identity`   signing keys, certified encryption keys, public key records
- :mod:`schakel.keys.envelope`   seal / verify / open
- :mod:`schakel.keys.keystore`   encrypted private keys on disk
"""

from schakel.keys.crypto import CryptoFailure, SigningKey, VerifyKey
from schakel.keys.directory import KeyDirectory
from schakel.keys.envelope import (
    MissingPrivateKey,
    Opened,
    open_envelope,
    seal,
    split_envelope,
    verify,
)
from schakel.keys.errors import (
    KeyDirectoryError,
    KeyMaterialError,
    KeysError,
    KeystoreError,
    WrongPassphrase,
)
from schakel.keys.identity import PartnerIdentity, PublicKeyRecord
from schakel.keys.keylog import KeyLog, KeyLogError
from schakel.keys.keystore import KdfParams, load_keystore, save_keystore

__all__ = [
    "CryptoFailure",
    "KdfParams",
    "KeyDirectory",
    "KeyDirectoryError",
    "KeyLog",
    "KeyLogError",
    "KeyMaterialError",
    "KeysError",
    "KeystoreError",
    "MissingPrivateKey",
    "Opened",
    "PartnerIdentity",
    "PublicKeyRecord",
    "SigningKey",
    "VerifyKey",
    "WrongPassphrase",
    "load_keystore",
    "open_envelope",
    "save_keystore",
    "seal",
    "split_envelope",
    "verify",
]
