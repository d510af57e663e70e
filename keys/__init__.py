"""Keys: identities, the envelope crypto and the keystore. The only package that uses ``nacl``.

- :mod:`keys.crypto`     the primitives (the one module that imports ``nacl``)
- :mod:`keys.identity`   signing keys, certified encryption keys, public key records
- :mod:`keys.envelope`   seal / verify / open
- :mod:`keys.keystore`   encrypted private keys on disk
"""
