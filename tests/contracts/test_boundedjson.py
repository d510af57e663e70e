"""Untrusted JSON is bounded in size and depth before it is parsed, in linear time."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schakel.contracts.boundedjson import JsonTooDeep, check_bounds, loads
from schakel.contracts.errors import ContractError

_TEXT = st.text(alphabet=st.sampled_from('ab"\\[]{}\n\u2028'), max_size=12)
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=30,
)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@given(_VALUES, st.booleans())
def test_depth_is_counted_exactly_whatever_the_strings_hold(value: Any, ascii_only: bool) -> None:
    """Brackets, quotes and escapes inside strings never count as nesting."""
    raw = json.dumps(value, ensure_ascii=ascii_only).encode()
    depth = _depth(value)
    check_bounds(raw, max_bytes=len(raw), max_depth=depth)
    if depth:
        with pytest.raises(JsonTooDeep):
            check_bounds(raw, max_bytes=len(raw), max_depth=depth - 1)
    assert loads(raw, max_bytes=len(raw), max_depth=depth) == value


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000 + b"]" * 100_000,  # deeper than Python's recursion limit
        b'{"a":' * 40 + b"1" + b"}" * 40,
        b"[" * 33,  # unterminated, still too deep
    ],
)
def test_too_deep_is_refused_before_parsing(raw: bytes) -> None:
    """Nesting beyond the bound is refused with a contract error, never RecursionError."""
    with pytest.raises(JsonTooDeep):
        loads(raw, max_bytes=len(raw))


def test_too_large_is_refused_before_anything_else() -> None:
    """The size bound comes first."""
    with pytest.raises(JsonTooDeep, match="too large"):
        check_bounds(b"[]" * 10, max_bytes=19)


def test_unterminated_escaped_string_is_one_linear_pass() -> None:
    """``"`` then ``\\"`` repeated (a pattern quadratic for a rescanning regex) is fine to check
    and is refused by the parser as not JSON."""
    raw = b'"' + b'\\"' * 8_000
    check_bounds(raw, max_bytes=len(raw))
    with pytest.raises(ContractError, match="not valid JSON"):
        loads(raw, max_bytes=len(raw))
