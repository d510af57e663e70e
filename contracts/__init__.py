"""Contracts: the data every partner speaks. Data only, no I/O.

- :mod:`contracts.header`   the cleartext envelope header and its canonical encoding
- :mod:`contracts.bodies`   body contracts M1-M16 (+M6R), fields tagged with data categories
- :mod:`contracts.enums`    the closed lists: states, types, purposes, codes, reasons
- :mod:`contracts.policy`   the routing policy (``policy.toml``) as validated data
- :mod:`contracts.ids`      identifier types that cannot hold personal data
- :mod:`contracts.errors`   the project's exception tree

The wire format is specified in ``contracts/ENVELOPE.md``.
"""
