"""JSON from strangers, parsed only after its size and nesting depth are known to be small.

Python's ``json.loads`` recurses once per nesting level: a body of 100,000 ``[`` raises
``RecursionError`` (not a ``ValueError``) deep inside whatever called it. Everything Schakel
reads from NATS or HTTP that is JSON goes through :func:`loads` (or through a pydantic model,
whose parser stops at a fixed depth) after a size check. Both bounds are checked before the
parse starts: the size first, then the depth, in one linear pass over the bytes that can
matter (quotes, escapes, brackets; a bracket inside a string is not nesting), which stops at
the first level too deep. Linear on every input: a pattern that rescans from each quote would
let a few kilobytes of ``\"`` cost the hub's event loop half a second each.
"""

from __future__ import annotations

import re
from typing import Any, Final

from pydantic_core import from_json

from schakel.contracts.errors import ContractError

__all__ = ["MAX_DEPTH", "JsonTooDeep", "check_bounds", "loads"]

MAX_DEPTH: Final = 32
# An escape pair (consumed whole, so an escaped quote never toggles), a quote, or a bracket.
_TOKEN = re.compile(rb'\\.|["\[\]{}]', re.DOTALL)


class JsonTooDeep(ContractError):
    """The JSON is larger or more deeply nested than the reader accepts."""


def check_bounds(raw: bytes, *, max_bytes: int, max_depth: int = MAX_DEPTH) -> None:
    """Raise unless ``raw`` is at most ``max_bytes`` long and nested at most ``max_depth`` deep.

    Raises:
        JsonTooDeep: too large or too deep (nothing was parsed).
    """
    if len(raw) > max_bytes:
        raise JsonTooDeep("json: too large")
    depth, in_string = 0, False
    for match in _TOKEN.finditer(raw):
        token = match[0]
        if token == b'"':
            in_string = not in_string
        elif in_string or len(token) == 2:
            continue
        elif token in b"[{":
            depth += 1
            if depth > max_depth:
                raise JsonTooDeep("json: nested too deeply")
        else:
            depth -= 1


def loads(raw: bytes, *, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON from an untrusted source within the given bounds.

    Raises:
        ContractError: too large, too deep, or not JSON.
    """
    check_bounds(raw, max_bytes=max_bytes, max_depth=max_depth)
    try:
        return from_json(raw)
    except ValueError as exc:
        raise ContractError("json: not valid JSON") from exc
