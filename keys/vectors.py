"""Known-answer vectors for the envelope format (``contracts/vectors/envelope-v1.json``).

Run ``python -m keys.vectors`` (or ``make vectors``) to regenerate. The identities are derived
from fixed labels so that key ids can be re-derived; the envelopes contain sealed boxes, whose
ephemeral keys are random, so regenerating changes the file. ``tests/keys/test_vectors.py``
re-verifies every vector: valid ones are opened and their ciphertext and signature recomputed
from the recorded content key and nonce; invalid ones must be rejected.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from schakel.contracts.enums import DataCategory, MessageType
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.header import EnvelopeHeader, encode_header
from schakel.contracts.ids import CaseId, MessageId, OrgId
from schakel.keys.crypto import EncryptionPrivateKey, SigningKey, aead_encrypt, blake2b
from schakel.keys.envelope import MAGIC, assemble, commitment, frame, pad, seal, split_envelope
from schakel.keys.identity import PartnerIdentity

__all__ = [
    "VECTOR_FILE",
    "generate",
    "identity_from_label",
    "main",
    "vector_identities",
]

VECTOR_FILE = Path(__file__).resolve().parent.parent / "contracts" / "vectors" / "envelope-v1.json"
NOW = dt.datetime(2026, 11, 23, 12, 0, 0, tzinfo=dt.UTC)
CASE = CaseId("case-aaaaaaaaaaaaaaaaaaaaaaaaaa")
_SENDER, _RECIPIENT, _OTHER = OrgId("GEM.westerstad"), OrgId("ZVH.west"), OrgId("POL.west")


def identity_from_label(org: OrgId) -> PartnerIdentity:
    """A deterministic identity: seeds are BLAKE2b-256 of ``"vector:" + org``."""
    seed = blake2b(f"vector-sign:{org}".encode(), size=32)
    secret = blake2b(f"vector-enc:{org}".encode(), size=32)
    bare = PartnerIdentity(org=org, signing_key=SigningKey(seed), encryption_keys={})
    return bare.with_new_encryption_key(
        now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        validity=dt.timedelta(days=3650),
        private=EncryptionPrivateKey(secret),
    )


def vector_identities() -> dict[OrgId, PartnerIdentity]:
    """The identities all vectors use."""
    return {org: identity_from_label(org) for org in (_SENDER, _RECIPIENT, _OTHER)}


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _message_id(n: int) -> MessageId:
    return MessageId(f"00000000-0000-4000-8000-{n:012d}")


def _key_and_nonce(n: int) -> tuple[bytes, bytes]:
    return blake2b(f"vector-key:{n}".encode(), size=32), blake2b(
        f"vector-nonce:{n}".encode(), size=24
    )


def generate() -> dict[str, Any]:
    """Build the whole vector document."""
    ids = vector_identities()
    sender, recipient = ids[_SENDER], ids[_RECIPIENT]
    vectors: list[dict[str, Any]] = []

    for n, message_type in enumerate(MessageType, start=1):
        body = example_body(message_type)
        key, nonce = _key_and_nonce(n)
        raw = seal(
            body,
            example_draft(message_type, body, case_id=CASE),
            sender=sender,
            recipients=[recipient.public_record(), ids[_OTHER].public_record()],
            now=NOW,
            message_id=_message_id(n),
            content_key=key,
            nonce=nonce,
        )
        header, _, _ = split_envelope(raw)
        vectors.append(
            {
                "name": f"valid-{message_type}",
                "expect": "open",
                "recipient": _RECIPIENT,
                "now": "2026-11-24T00:00:00Z",
                "envelope": _b64(raw),
                "header": header.decode("ascii"),
                "body": body.model_dump_json(),
                "content_key": key.hex(),
                "nonce": nonce.hex(),
            }
        )

    base = vectors[0]
    raw = base64.b64decode(base["envelope"])
    header_bytes, ciphertext, signature = split_envelope(raw)
    parsed = EnvelopeHeader.model_validate_json(header_bytes)
    key = bytes.fromhex(base["content_key"])
    nonce = bytes.fromhex(base["nonce"])
    body_json = base["body"].encode()

    def flip(at: int) -> bytes:
        return raw[:at] + bytes([raw[at] ^ 0x01]) + raw[at + 1 :]

    def signed(new_header: bytes, new_body: bytes = body_json, k: bytes = key) -> bytes:
        return assemble(
            new_header, new_body, content_key=k, nonce=nonce, signing_key=sender.signing_key
        )

    def variant(**changes: Any) -> bytes:
        data = parsed.model_dump()
        data.update(changes)
        return encode_header(EnvelopeHeader.model_validate(data))

    hstart = len(MAGIC) + 4
    cstart = hstart + len(header_bytes) + 4
    bad: dict[str, tuple[bytes, str]] = {
        "header-byte-flipped": (flip(hstart + 40), "header or signature"),
        "ciphertext-byte-flipped": (flip(cstart + 30), "signature"),
        "signature-byte-flipped": (flip(len(raw) - 5), "signature"),
        "truncated": (raw[:-1], "framing"),
        "trailing-byte": (raw + b"\x00", "framing"),
        "unknown-framing-version": (raw[:7] + b"\x02" + raw[8:], "framing version"),
        "header-not-canonical-whitespace": (
            signed(header_bytes.replace(b'","', b'", "', 1)),
            "header not canonical (validly signed)",
        ),
        "header-duplicate-key": (
            signed(b'{"case_id":"case-bbbbbbbbbbbbbbbbbbbbbbbbbb",' + header_bytes[1:]),
            "duplicate key (validly signed)",
        ),
        "key-commitment-mismatch": (
            signed(variant(key_commitment=commitment(b"\x07" * 32))),
            "commitment (validly signed)",
        ),
        "undeclared-category": (
            signed(variant(categories=(DataCategory.IDENTIFICEREND,))),
            "body holds minderjarige and religion, header declares only identificerend",
        ),
        "body-breaks-contract": (
            signed(body_json[:-1] + b',"besluit":"OPSCHALEN"}'),
            "extra field in the body (validly signed)",
        ),
        "padding-not-zero": (
            frame(
                header_bytes,
                nonce + aead_encrypt(key, nonce, pad(body_json)[:-1] + b"\x01", header_bytes),
                sender.signing_key,
            ),
            "padding",
        ),
        "forged-by-recipient": (
            frame(header_bytes, ciphertext, recipient.signing_key),
            "a recipient re-signed the sender's message",
        ),
        "step-without-case": (
            signed(header_bytes.replace(f'"case_id":"{CASE}",'.encode(), b"")),
            "case_id and step come together (canonical, validly signed)",
        ),
    }
    for name, (envelope, why) in bad.items():
        vectors.append(
            {
                "name": name,
                "expect": "reject",
                "why": why,
                "recipient": _RECIPIENT,
                "now": "2026-11-24T00:00:00Z",
                "envelope": _b64(envelope),
            }
        )
    vectors.append(
        {
            "name": "expired",
            "expect": "reject",
            "why": "opened after expires_at",
            "recipient": _RECIPIENT,
            "now": "2026-12-01T00:00:00Z",
            "envelope": base["envelope"],
        }
    )
    vectors.append(
        {
            "name": "not-a-recipient",
            "expect": "reject",
            "why": "GEM.westerstad is the sender, not a recipient",
            "recipient": _SENDER,
            "now": "2026-11-24T00:00:00Z",
            "envelope": base["envelope"],
        }
    )
    del signature
    return {
        "description": "Known-answer vectors for the envelope format schakel/1 (ENVELOPE.md)",
        "identities": {
            org: {
                "signing_seed": identity.signing_key.seed.hex(),
                "encryption_secret": next(iter(identity.encryption_keys.values())).secret.hex(),
                "public_record": json.loads(identity.public_record().model_dump_json()),
            }
            for org, identity in ids.items()
        },
        "vectors": vectors,
    }


def main() -> int:
    """Write the vector file."""
    VECTOR_FILE.parent.mkdir(exist_ok=True)
    VECTOR_FILE.write_text(json.dumps(generate(), indent=1) + "\n", encoding="utf-8")
    sys.stdout.write(f"wrote {VECTOR_FILE}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
