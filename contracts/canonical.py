"""Canonical JSON: the one encoding of every signed structure (ENVELOPE.md section 3).

ASCII only, object keys sorted by code point, no insignificant whitespace, absent optional
fields omitted rather than ``null``, integers only. For the ASCII-only, float-free values
Schakel signs this coincides with RFC 8785 (JCS), so other languages can use a JCS library.
"""

from __future__ import annotations

import json

from pydantic import BaseModel

__all__ = ["canonical_dumps", "canonical_json"]


def canonical_json(model: BaseModel) -> bytes:
    """Return the canonical encoding of a model."""
    return canonical_dumps(model.model_dump(mode="json", exclude_none=True))


def canonical_dumps(data: object) -> bytes:
    """The canonical encoding of a model already dumped (``mode="json", exclude_none=True``)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode(
        "ascii"
    )
