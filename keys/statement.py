"""Signed statements: a canonical-JSON model plus an Ed25519 signature under a label.

Used for the hub's refusal notices. Wire form: ``{"statement": {...}, "signature": b64}``.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from contracts.canonical import canonical_json
from contracts.errors import EnvelopeError
from keys.crypto import SigningKey, VerifyKey

__all__ = ["sign_statement", "verify_statement"]

M = TypeVar("M", bound=BaseModel)


def sign_statement(statement: BaseModel, key: SigningKey, label: bytes) -> bytes:
    """Return the signed wire form of ``statement``."""
    body = canonical_json(statement)
    signature = key.sign(label + body)
    return b'{"signature":"' + base64.b64encode(signature) + b'","statement":' + body + b"}"


def verify_statement(raw: bytes, model: type[M], label: bytes, key: VerifyKey) -> M:
    """Parse and verify a signed statement.

    Raises:
        EnvelopeError: malformed, non-canonical or not signed by ``key``.
    """
    try:
        outer = json.loads(raw)
        body = canonical_json(model.model_validate(outer["statement"]))
        signature = base64.b64decode(outer["signature"], validate=True)
    except (ValueError, KeyError, TypeError, ValidationError, binascii.Error) as exc:
        raise EnvelopeError("statement: malformed") from exc
    if not key.verify(label + body, signature):
        raise EnvelopeError("statement: bad signature")
    return model.model_validate_json(body)
