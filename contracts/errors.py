"""The project's exception tree.

Every error Schakel raises on purpose derives from :class:`SchakelError`
(``tests/test_errors.py`` keeps this drawing equal to the code)::

    SchakelError
    ├── ContractError            a value does not satisfy a contract (contracts)
    │   ├── PolicyFileError      the routing policy file is invalid (names the line)
    │   └── JsonTooDeep          untrusted JSON too large or too deeply nested (boundedjson)
    ├── EnvelopeError            an envelope or statement could not be sealed, verified or
    │   │                        opened; deliberately opaque: ``reason`` is for logs and
    │   │                        audit only, ``code`` is the refusal reason for the sender
    │   └── MissingPrivateKey    (keys.envelope) for a key of ours not held: retry, never drop
    ├── KeysError                (keys.errors) key material, keystores, the key directory
    │   ├── KeyMaterialError     a key or signature of the wrong length or form
    │   ├── CryptoFailure        (keys.crypto) a primitive rejected its input
    │   ├── KeystoreError        a keystore file cannot be read or written
    │   │   └── WrongPassphrase  the passphrase does not open the keystore
    │   ├── KeyDirectoryError    a key is unknown, revoked or outside its validity window
    │   └── KeyLogError          (keys.keylog) an entry of the key log is not a valid event
    ├── TransportError           (bus.errors) NATS could not do what was asked
    │   ├── StreamFull           JetStream refused a publish: the stream is at its limits
    │   └── StoreFailure         (hub.memory) an in-memory store told to fail, in tests
    ├── SettingsError            (bus.settings) a setting (file, environment, flag) is invalid
    ├── AuditError               (hub.audit) the audit trail could not store a record
    ├── RetryLater               (hub.router) not decidable yet; try the message again soon
    │   └── HeldBack             an earlier message of its case failed; after that one
    ├── DirectoryStale           (adapters.client) the SDK's key directory view is too old
    ├── InboundFull              (adapters.client) the hub's inbound queue for us is full
    ├── NotRegistered            (adapters.client) our organisation is not in the directory
    └── ScenarioFailure          (harness.simulation) a scenario step went otherwise

Sub-roots live with the boundary they guard; this module holds the ones that ``contracts``
itself raises plus the root, so that every package can depend on it.
"""

from __future__ import annotations

from schakel.contracts.enums import ReasonCode

__all__ = ["ContractError", "EnvelopeError", "PolicyFileError", "SchakelError"]


class SchakelError(Exception):
    """Root of every error Schakel raises on purpose."""


class ContractError(SchakelError):
    """A value does not satisfy its contract (schema, categories, header consistency)."""


class PolicyFileError(ContractError):
    """The routing policy file is invalid.

    Args:
        message: what is wrong.
        line: the 1-based line of the policy file the problem is on, when known.
    """

    def __init__(self, message: str, line: int | None = None) -> None:
        self.line = line
        super().__init__(f"policy line {line}: {message}" if line else f"policy: {message}")


class EnvelopeError(SchakelError):
    """An envelope could not be sealed, verified or opened.

    The message shown to a peer is always the same; ``reason`` says precisely what failed and
    is meant for the local log and the audit trail, never for the peer. ``code`` is the
    refusal reason the hub reports to the sender of a message it cannot verify.
    """

    def __init__(self, reason: str, code: ReasonCode = ReasonCode.MALFORMED) -> None:
        self.reason = reason
        self.code = code
        super().__init__("envelope rejected")
