"""Known-answer vectors (contracts/vectors/envelope-v1.json) re-verified by this implementation."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest

from schakel.contracts.errors import EnvelopeError
from schakel.contracts.ids import OrgId
from schakel.keys.crypto import EncryptionPrivateKey, SigningKey, aead_encrypt
from schakel.keys.directory import KeyDirectory
from schakel.keys.envelope import _signed_digest, open_envelope, pad, split_envelope
from schakel.keys.identity import (
    PartnerIdentity,
    PublicKeyRecord,
    encryption_key_id,
    signing_key_id,
)
from schakel.keys.vectors import VECTOR_FILE, vector_identities

DOC: dict[str, Any] = json.loads(VECTOR_FILE.read_text("utf-8"))


def _identity(org: str) -> PartnerIdentity:
    data = DOC["identities"][org]
    record = PublicKeyRecord.model_validate(data["public_record"])
    private = EncryptionPrivateKey(bytes.fromhex(data["encryption_secret"]))
    return PartnerIdentity(
        org=OrgId(org),
        signing_key=SigningKey(bytes.fromhex(data["signing_seed"])),
        encryption_keys={encryption_key_id(private.public): private},
        certificates=record.encryption_keys,
    )


DIRECTORY = KeyDirectory(
    PublicKeyRecord.model_validate(d["public_record"]) for d in DOC["identities"].values()
)


def _when(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_identities_are_derived_from_their_labels() -> None:
    """The vector identities' keys and key ids re-derive from the documented labels."""
    for org, identity in vector_identities().items():
        data = DOC["identities"][org]
        assert identity.signing_key.seed.hex() == data["signing_seed"]
        assert (
            signing_key_id(SigningKey(bytes.fromhex(data["signing_seed"])).public)
            == (data["public_record"]["signing_key"]["kid"])
        )


@pytest.mark.parametrize(
    "vector", [v for v in DOC["vectors"] if v["expect"] == "open"], ids=lambda v: v["name"]
)
def test_valid_vector_opens_and_recomputes(vector: dict[str, Any]) -> None:
    """A valid vector opens to its body, and its ciphertext and signature are recomputed exactly."""
    raw = base64.b64decode(vector["envelope"])
    opened = open_envelope(
        raw, _identity(vector["recipient"]), DIRECTORY.signer, now=_when(vector["now"])
    )
    assert opened.body.model_dump_json() == vector["body"]
    header, ciphertext, signature = split_envelope(raw)
    assert header.decode("ascii") == vector["header"]
    key, nonce = bytes.fromhex(vector["content_key"]), bytes.fromhex(vector["nonce"])
    assert ciphertext == nonce + aead_encrypt(key, nonce, pad(vector["body"].encode()), header)
    sender = _identity(opened.header.sender.org)
    assert signature == sender.signing_key.sign(_signed_digest(header, ciphertext))


@pytest.mark.parametrize(
    "vector", [v for v in DOC["vectors"] if v["expect"] == "reject"], ids=lambda v: v["name"]
)
def test_invalid_vector_rejected(vector: dict[str, Any]) -> None:
    """Every invalid vector is rejected with the one opaque error."""
    raw = base64.b64decode(vector["envelope"])
    with pytest.raises(EnvelopeError, match=r"^envelope rejected$"):
        open_envelope(
            raw, _identity(vector["recipient"]), DIRECTORY.signer, now=_when(vector["now"])
        )


def test_vectors_cover_every_message_type_and_attack() -> None:
    """The vector file holds a valid vector per message type and the documented attacks."""
    names = {v["name"] for v in DOC["vectors"]}
    assert sum(n.startswith("valid-") for n in names) == 17
    for attack in (
        "forged-by-recipient",
        "header-duplicate-key",
        "key-commitment-mismatch",
        "undeclared-category",
        "body-breaks-contract",
        "padding-not-zero",
    ):
        assert attack in names
