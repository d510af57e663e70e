"""The envelope header: canonical encoding, strict parsing, no personal data."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from schakel.contracts.enums import LegalBasis, MessageType, Purpose
from schakel.contracts.errors import ContractError
from schakel.contracts.header import EnvelopeHeader, Recipient, Sender, decode_header, encode_header
from schakel.contracts.ids import new_case_id, new_message_id, org_type_of

T0 = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def header(**changes: object) -> EnvelopeHeader:
    data: dict[str, object] = {
        "message_id": new_message_id(),
        "message_type": MessageType.M7,
        "contract_version": 1,
        "case_id": new_case_id(),
        "step": "CASUSOVERLEG",
        "sender": Sender(org="GEM.westerstad", kid="sig-" + "0" * 32),
        "recipients": (Recipient(org="POL.west", kid="enc-" + "1" * 32, wrapped_key=b"k" * 80),),
        "created_at": T0,
        "expires_at": T0 + dt.timedelta(days=1),
        "purpose": Purpose.CASUSOVERLEG_RISICO_EN_INTERVENTIE,
        "legal_basis": LegalBasis.WGP_PGA,
        "categories": ("identificerend",),
        "no_forward": False,
        "key_commitment": b"c" * 32,
    }
    data.update(changes)
    return EnvelopeHeader.model_validate(data)


def test_canonical_round_trip() -> None:
    """Encoding then decoding a header gives the same header and the same bytes."""
    h = header()
    raw = encode_header(h)
    assert decode_header(raw) == h
    assert encode_header(decode_header(raw)) == raw
    assert raw.isascii() and b" " not in raw and b"null" not in raw


def test_keys_sorted_and_optional_fields_omitted() -> None:
    """The canonical form sorts keys and leaves out absent optional fields."""
    raw = encode_header(header())
    keys = list(json.loads(raw))
    assert keys == sorted(keys)
    assert "decision" not in keys and "in_reply_to" not in keys


@pytest.mark.parametrize(
    "mangle",
    [
        lambda raw: raw.replace(b'","', b'", "', 1),
        lambda raw: raw.replace(b"{", b'{"no_forward":false,', 1),
        lambda raw: json.dumps(json.loads(raw), sort_keys=False).encode(),
        lambda raw: raw.replace(b'"no_forward":false', b'"no_forward":false,"extra":1'),
        lambda raw: raw.replace(b'"no_forward":false', b'"no_forward":"false"'),
    ],
    ids=["whitespace", "duplicate-key", "unsorted", "unknown-field", "lax-type"],
)
def test_non_canonical_or_lax_header_rejected(mangle: object) -> None:
    """Only the one canonical, strictly typed encoding of a header is accepted."""
    raw = encode_header(header())
    with pytest.raises(ContractError):
        decode_header(mangle(raw))  # type: ignore[operator]


def test_timestamps_whole_utc_seconds() -> None:
    """Timestamps are UTC with whole seconds, and expiry comes after creation."""
    with pytest.raises(ValueError, match="whole seconds"):
        header(created_at=T0.replace(microsecond=5))
    with pytest.raises(ValueError, match="UTC"):
        header(
            created_at=T0.astimezone(dt.timezone(dt.timedelta(hours=1))).replace(
                tzinfo=dt.timezone(dt.timedelta(hours=2))
            )
        )
    with pytest.raises(ValueError, match="after"):
        header(expires_at=T0)


def test_recipients_and_categories_ordered() -> None:
    """Recipients and categories must be sorted and unique, so the encoding is unique."""
    r1 = Recipient(org="POL.west", kid="enc-" + "1" * 32, wrapped_key=b"k" * 80)
    r2 = Recipient(org="OM.west", kid="enc-" + "2" * 32, wrapped_key=b"k" * 80)
    with pytest.raises(ValueError, match="sorted"):
        header(recipients=(r1, r2))
    with pytest.raises(ValueError, match="sorted"):
        header(categories=("minderjarige", "identificerend"))
    with pytest.raises(ValueError, match="geen"):
        header(categories=("geen", "identificerend"))


def test_wrapped_key_exact_length() -> None:
    """A wrapped key of any length but 80 bytes is rejected."""
    with pytest.raises(ValueError, match="exactly 80"):
        Recipient(org="POL.west", kid="enc-" + "1" * 32, wrapped_key=b"k" * 79)


@pytest.mark.parametrize(
    "value",
    ["Jan Jansen", "case-ABC", "case-" + "a" * 25, "123456782", "case-jan.jansen.2009"],
)
def test_case_id_cannot_hold_a_name(value: str) -> None:
    """The case id is an opaque token: names, BSNs and free text do not fit its pattern."""
    with pytest.raises(ValueError, match="case_id"):
        header(case_id=value)


def test_ids_have_their_own_shapes() -> None:
    """Fresh ids fit their patterns; organisation ids carry their type."""
    assert header(case_id=new_case_id()).case_id
    assert org_type_of("IND.landelijk") == "IND"
    with pytest.raises(ValueError, match="organisation"):
        org_type_of("XYZ.foo")
