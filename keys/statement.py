"""Signed statements: a canonical-JSON model plus an Ed25519 signature under a label.

Used for the hub's refusal notices. Wire form: ``{"statement": {...}, "signature": b64}``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ValidationError

from schakel.contracts.boundedjson import loads
from schakel.contracts.canonical import canonical_json
from schakel.contracts.errors import ContractError, EnvelopeError
from schakel.keys.crypto import SigningKey, VerifyKey

__all__ = ["MAX_STATEMENT_BYTES", "claimed_statement", "sign_statement", "verify_statement"]

# Statements (notices, receipts) are a few hundred bytes; anything far larger is not one.
MAX_STATEMENT_BYTES: Final = 16 * 1024

M = TypeVar("M", bound=BaseModel)


def sign_statement(statement: BaseModel, key: SigningKey, label: bytes) -> bytes:
    """Return the signed wire form of ``statement``."""
    body = canonical_json(statement)
    signature = key.sign(label + body)
    return b'{"signature":"' + base64.b64encode(signature) + b'","statement":' + body + b"}"


def _outer(raw: bytes) -> dict[str, Any]:
    outer = loads(raw, max_bytes=MAX_STATEMENT_BYTES)
    if not isinstance(outer, dict):
        raise EnvelopeError("statement: malformed")
    return outer


def claimed_statement(raw: bytes, model: type[M]) -> M:
    """What a signed statement claims, before its signature is checked (to find the key).

    Raises:
        EnvelopeError: too large, too deep, or not a statement of this model.
    """
    try:
        return model.model_validate(_outer(raw)["statement"])
    except (ContractError, KeyError, ValidationError) as exc:
        raise EnvelopeError("statement: malformed") from exc


def verify_statement(raw: bytes, model: type[M], label: bytes, key: VerifyKey) -> M:
    """Parse and verify a signed statement.

    Raises:
        EnvelopeError: malformed, non-canonical or not signed by ``key``.
    """
    try:
        outer = _outer(raw)
        body = canonical_json(model.model_validate(outer["statement"]))
        signature = base64.b64decode(outer["signature"], validate=True)
    except (ContractError, ValueError, KeyError, TypeError, ValidationError, binascii.Error) as exc:
        raise EnvelopeError("statement: malformed") from exc
    if not key.verify(label + body, signature):
        raise EnvelopeError("statement: bad signature")
    return model.model_validate_json(body)
