"""Schakel: the secure messaging and referral hub for the PGA.

The code lives in the top-level folders of the repository; this package gives them one
import name that cannot collide with a partner application's own modules:

    schakel.contracts   message contracts, the wire format, the policy schema (no I/O)
    schakel.keys        envelope crypto, key directory, keystore (no I/O beyond files)
    schakel.bus         the one home of NATS: connections, streams, the key log
    schakel.hub         the router, the policy engine, the audit trail, the CLI
    schakel.adapters    the partner SDK and the simulated partners

Each entry here is a link to the folder of the same name.
"""

__all__: list[str] = []  # the surface is the subpackages'
