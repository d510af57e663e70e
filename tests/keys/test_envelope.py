"""Envelope crypto with real libsodium: round trips, tampering, forgery, categories."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schakel.contracts.bodies import categories_of
from schakel.contracts.enums import DataCategory, MessageType
from schakel.contracts.errors import ContractError, EnvelopeError
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.header import Recipient, decode_header, encode_header
from schakel.contracts.ids import OrgId
from schakel.keys.directory import KeyDirectory
from schakel.keys.envelope import (
    assemble,
    commitment,
    frame,
    open_envelope,
    padded_length,
    seal,
    split_envelope,
    verify,
)
from schakel.keys.identity import PartnerIdentity

SENDER, RECIPIENT, OTHER, OUTSIDER = "GEM.westerstad", "ZVH.west", "POL.west", "OM.west"


def _seal(ids: dict[str, PartnerIdentity], message_type: MessageType = MessageType.M1) -> bytes:
    body = example_body(message_type)
    return seal(
        body,
        example_draft(message_type, body),
        sender=ids[SENDER],
        recipients=[ids[RECIPIENT].public_record(), ids[OTHER].public_record()],
    )


@pytest.mark.parametrize("message_type", list(MessageType))
def test_round_trip_every_message_type(
    message_type: MessageType, identities: dict[str, PartnerIdentity], directory: KeyDirectory
) -> None:
    """Every recipient opens every message type to exactly the body that was sealed."""
    body = example_body(message_type)
    raw = seal(
        body,
        example_draft(message_type, body),
        sender=identities[SENDER],
        recipients=[identities[RECIPIENT].public_record(), identities[OTHER].public_record()],
    )
    for org in (RECIPIENT, OTHER):
        opened = open_envelope(raw, identities[org], directory.signer)
        assert opened.body == body
        assert opened.header.message_type == message_type
    assert verify(raw, directory.signer).header.sender.org == SENDER


def test_hub_sees_no_content(identities: dict[str, PartnerIdentity]) -> None:
    """The cleartext parts of an envelope hold none of the body's content."""
    body = example_body(MessageType.M1, canary="CANARY7f3a")
    raw = seal(
        body,
        example_draft(MessageType.M1, body),
        sender=identities[SENDER],
        recipients=[identities[RECIPIENT].public_record()],
    )
    assert b"CANARY7f3a" not in raw
    assert b"Fictief" not in raw
    header, _, _ = split_envelope(raw)
    assert b"123456782" not in header


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_changed_byte_is_rejected(
    data: st.DataObject, identities: dict[str, PartnerIdentity], directory: KeyDirectory
) -> None:
    """Changing any byte anywhere in an envelope makes both verify and open fail."""
    raw = _seal(identities, MessageType.M4)
    position = data.draw(st.integers(0, len(raw) - 1))
    delta = data.draw(st.integers(1, 255))
    tampered = raw[:position] + bytes([raw[position] ^ delta]) + raw[position + 1 :]
    with pytest.raises(EnvelopeError):
        verify(tampered, directory.signer)
    with pytest.raises(EnvelopeError):
        open_envelope(tampered, identities[RECIPIENT], directory.signer)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cut=st.integers(0, 2000), extra=st.binary(min_size=1, max_size=8))
def test_truncated_or_extended_is_rejected(
    cut: int, extra: bytes, identities: dict[str, PartnerIdentity], directory: KeyDirectory
) -> None:
    """An envelope cut short or with bytes appended never verifies."""
    raw = _seal(identities, MessageType.M2)
    for candidate in (raw[: min(cut, len(raw) - 1)], raw + extra):
        with pytest.raises(EnvelopeError):
            verify(candidate, directory.signer)


def test_non_recipient_cannot_open(
    identities: dict[str, PartnerIdentity], directory: KeyDirectory
) -> None:
    """An organisation that is not a recipient cannot open, even the sender itself."""
    raw = _seal(identities)
    for org in (OUTSIDER, SENDER):
        with pytest.raises(EnvelopeError) as info:
            open_envelope(raw, identities[org], directory.signer)
        assert info.value.reason == "not a recipient"
        assert str(info.value) == "envelope rejected"


def test_recipient_key_swap_cannot_open(
    identities: dict[str, PartnerIdentity], directory: KeyDirectory
) -> None:
    """A party claiming a recipient's org without its private key cannot open."""
    raw = _seal(identities)
    impostor = PartnerIdentity.generate(OrgId(RECIPIENT))
    with pytest.raises(EnvelopeError):
        open_envelope(raw, impostor, directory.signer)


def test_recipient_cannot_forge_as_sender(
    identities: dict[str, PartnerIdentity], directory: KeyDirectory
) -> None:
    """A recipient who knows the content key cannot make a message that verifies as the sender's."""
    raw = _seal(identities)
    opened = open_envelope(raw, identities[RECIPIENT], directory.signer)
    # The recipient re-encrypts the same body, claiming the original sender in the header...
    forged_by_other_key = seal(
        opened.body,
        example_draft(MessageType.M1, opened.body),
        sender=PartnerIdentity(
            org=OrgId(SENDER),
            signing_key=identities[RECIPIENT].signing_key,
            encryption_keys={},
        ),
        recipients=[identities[OTHER].public_record()],
    )
    with pytest.raises(EnvelopeError) as info:
        verify(forged_by_other_key, directory.signer)
    assert info.value.code == "UNKNOWN_KEY"
    # ...or keeps the sender's header and key id but signs with its own key.
    header, ciphertext, _ = split_envelope(raw)
    hdr = decode_header(header)
    assert hdr.sender.org == SENDER
    resigned = frame(header, ciphertext, identities[RECIPIENT].signing_key)
    with pytest.raises(EnvelopeError) as info:
        open_envelope(resigned, identities[OTHER], directory.signer)
    assert info.value.reason == "signature does not verify"


def test_sender_refuses_undeclared_categories(identities: dict[str, PartnerIdentity]) -> None:
    """The sender's SDK will not seal a body that holds categories the header does not declare."""
    body = example_body(MessageType.M1)
    draft = example_draft(MessageType.M1, body).model_copy(
        update={"categories": (DataCategory.IDENTIFICEREND,)}
    )
    with pytest.raises(ContractError, match="undeclared"):
        seal(
            body,
            draft,
            sender=identities[SENDER],
            recipients=[identities[RECIPIENT].public_record()],
        )


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    declared=st.sets(st.sampled_from(sorted(set(DataCategory) - {DataCategory.GEEN})), min_size=1)
)
def test_receiver_rejects_undeclared_categories(
    declared: set[DataCategory],
    identities: dict[str, PartnerIdentity],
    directory: KeyDirectory,
) -> None:
    """Whatever a (malicious) sender declares, the receiver opens only if the body fits it."""
    body = example_body(MessageType.M1)
    header_bytes, _, _ = split_envelope(_seal(identities))
    key = b"\x05" * 32
    now = dt.datetime.now(dt.UTC)
    # Re-wrap a known content key so that only the declared categories are at issue.
    recipients = tuple(
        Recipient(
            org=r.org,
            kid=r.kid,
            wrapped_key=identities[r.org]
            .public_record()
            .current_encryption_key(now)
            .public.seal(key),
        )
        for r in decode_header(header_bytes).recipients
    )
    lying = decode_header(header_bytes).model_copy(
        update={
            "categories": tuple(sorted(declared)),
            "key_commitment": commitment(key),
            "recipients": recipients,
        }
    )
    raw = assemble(
        encode_header(lying),
        body.model_dump_json().encode(),
        content_key=key,
        nonce=b"\x06" * 24,
        signing_key=identities[SENDER].signing_key,
    )
    if categories_of(body) <= declared:
        assert open_envelope(raw, identities[RECIPIENT], directory.signer).body == body
    else:
        with pytest.raises(EnvelopeError) as info:
            open_envelope(raw, identities[RECIPIENT], directory.signer)
        assert "undeclared" in info.value.reason


def test_expired_message_not_opened(
    identities: dict[str, PartnerIdentity], directory: KeyDirectory
) -> None:
    """A recipient refuses a message after its expiry time."""
    raw = _seal(identities)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=8)
    with pytest.raises(EnvelopeError, match="rejected") as info:
        open_envelope(raw, identities[RECIPIENT], directory.signer, now=later)
    assert info.value.reason == "expired"


def test_unknown_signer_has_its_own_code(identities: dict[str, PartnerIdentity]) -> None:
    """The hub can tell an unknown signing key from a bad signature (for the sender only)."""
    raw = _seal(identities)
    with pytest.raises(EnvelopeError) as info:
        verify(raw, KeyDirectory().signer)
    assert info.value.code == "UNKNOWN_KEY"


def test_oversize_refused_before_parsing(identities: dict[str, PartnerIdentity]) -> None:
    """An envelope over the size limit is refused as TOO_LARGE without parsing."""
    raw = _seal(identities)
    with pytest.raises(EnvelopeError) as info:
        verify(raw, KeyDirectory().signer, max_bytes=len(raw) - 1)
    assert info.value.code == "TOO_LARGE"


@pytest.mark.parametrize(
    ("length", "padded"), [(1, 256), (256, 256), (257, 272), (1000, 1024), (65540, 67584)]
)
def test_padme_lengths(length: int, padded: int) -> None:
    """Padding follows Padmé above a 256-byte floor (known values)."""
    assert padded_length(length) == padded


def test_lengths_hidden_within_bucket(identities: dict[str, PartnerIdentity]) -> None:
    """Bodies of similar size produce ciphertexts of the same size."""
    sizes = set()
    for n in (10, 40, 90):
        body = example_body(MessageType.M4, size=n)
        raw = seal(
            body,
            example_draft(MessageType.M4, body),
            sender=identities[SENDER],
            recipients=[identities[RECIPIENT].public_record()],
        )
        sizes.add(len(split_envelope(raw)[1]))
    assert len(sizes) == 1
