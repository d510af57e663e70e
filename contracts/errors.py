"""The project's exception tree.

Every error Schakel raises on purpose derives from :class:`SchakelError`::

    SchakelError
    ├── ContractError            a value does not satisfy a contract
    │   └── PolicyFileError      the routing policy file is invalid (names the line)
    ├── EnvelopeError            an envelope could not be sealed, verified or opened;
    │                            deliberately opaque: ``reason`` is for logs and audit only
    ├── KeyError_                (see keys.errors) key material, keystore and key directory
    ├── PolicyRefusal            (see hub) the hub refused to route a message
    └── TransportError           (see hub) NATS could not do what was asked

Sub-roots live with the boundary they guard; this module holds the ones that ``contracts``
itself raises plus the root, so that every package can depend on it.
"""

from __future__ import annotations

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

    def __init__(self, reason: str, code: str = "MALFORMED") -> None:
        self.reason = reason
        self.code = code
        super().__init__("envelope rejected")
