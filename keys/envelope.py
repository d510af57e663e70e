"""Envelopes: seal for recipients, verify as the hub, open as a recipient.

The byte layout and every check are specified in ``contracts/ENVELOPE.md``; section numbers
below refer to it. Every failure to verify or open raises the same :class:`EnvelopeError`;
its ``reason`` (for logs and audit only) says which check failed.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from pydantic import ValidationError

from schakel.contracts.bodies import Body, categories_of, contract_categories, parse_body
from schakel.contracts.clock import system_clock, whole_seconds
from schakel.contracts.enums import DataCategory, MessageType, ReasonCode
from schakel.contracts.errors import ContractError, EnvelopeError
from schakel.contracts.header import (
    EnvelopeHeader,
    MessageDraft,
    Recipient,
    Sender,
    decode_header,
    encode_header,
)
from schakel.contracts.ids import KeyId, MessageId, OrgId, case_id_for, new_message_id
from schakel.keys.crypto import (
    AEAD_KEY_BYTES,
    AEAD_NONCE_BYTES,
    AEAD_TAG_BYTES,
    SIGNATURE_BYTES,
    CryptoFailure,
    SigningKey,
    VerifyKey,
    aead_decrypt,
    aead_encrypt,
    blake2b,
    constant_time_equal,
    random_bytes,
)
from schakel.keys.errors import KeyDirectoryError
from schakel.keys.identity import PartnerIdentity, PublicKeyRecord

__all__ = [
    "MAGIC",
    "MAX_BODY_BYTES",
    "MissingPrivateKey",
    "Opened",
    "SignerResolver",
    "Verified",
    "assemble",
    "commitment",
    "frame",
    "open_envelope",
    "pad",
    "padded_length",
    "seal",
    "split_envelope",
    "verify",
]

MAGIC: Final = b"SCHAKEL\x01"
MAX_BODY_BYTES: Final = 512 * 1024
COMMITMENT_LABEL: Final = b"schakel/1 payload-key-commitment"
SIGNATURE_LABEL: Final = b"schakel/1 envelope-signature\x00"
_MIN_PADDED: Final = 256
_U32 = struct.Struct(">I")

SignerResolver = Callable[[OrgId, KeyId, dt.datetime], VerifyKey]
"""Look up a sender's signing key valid at the header's creation time.

Raises :class:`KeyDirectoryError` (unknown key) or :class:`EnvelopeError` with a specific code
(revoked, expired) when the key must not be used.
"""


@dataclass(frozen=True, slots=True)
class Verified:
    """An envelope whose header and signature checked out."""

    header: EnvelopeHeader
    header_bytes: bytes
    ciphertext: bytes
    raw: bytes

    @property
    def message_id(self) -> MessageId:
        """The message id."""
        return MessageId(self.header.message_id)


@dataclass(frozen=True, slots=True)
class Opened:
    """A verified, decrypted envelope whose body satisfies its contract and header."""

    header: EnvelopeHeader
    body: Body


def padded_length(length: int) -> int:
    """Padmé padding (ENVELOPE.md 5.2): leaks at most O(log log n) bits of the length."""
    if length <= _MIN_PADDED:
        return _MIN_PADDED
    exponent = length.bit_length() - 1
    size_bits = exponent.bit_length()
    mask = (1 << (exponent - size_bits)) - 1
    return (length + mask) & ~mask


def commitment(content_key: bytes) -> bytes:
    """The key commitment of a content key (ENVELOPE.md 5.3). This and :func:`assemble`,
    :func:`frame` and :func:`pad` are the steps of :func:`seal`, public for the
    known-answer vectors (``keys/vectors.py``); applications call :func:`seal`."""
    return blake2b(COMMITMENT_LABEL, size=32, key=content_key)


def _signed_digest(header_bytes: bytes, ciphertext: bytes) -> bytes:
    return blake2b(
        SIGNATURE_LABEL + _U32.pack(len(header_bytes)) + header_bytes + ciphertext, size=64
    )


def _utc_now() -> dt.datetime:
    return whole_seconds(system_clock)


class MissingPrivateKey(EnvelopeError):
    """The envelope is for a key of ours this identity does not hold (``kid``): a rotation the
    keystore has and this process has not loaded yet, a key it pruned, or a lost key."""

    def __init__(self, reason: str, kid: KeyId) -> None:
        super().__init__(reason)
        self.kid = kid


def seal(
    body: Body,
    draft: MessageDraft,
    *,
    sender: PartnerIdentity,
    recipients: Sequence[PublicKeyRecord],
    now: dt.datetime | None = None,
    message_id: MessageId | None = None,
    content_key: bytes | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """Encrypt and sign ``body`` for ``recipients``; return the envelope bytes.

    ``content_key`` and ``nonce`` exist for known-answer vectors; leave them out otherwise.

    Raises:
        ContractError: the body, the draft or their combination breaks a contract.
        KeyDirectoryError: a recipient has no encryption key valid now.
    """
    created = (now or _utc_now()).astimezone(dt.UTC).replace(microsecond=0)
    raw_body = body.model_dump_json().encode("utf-8")
    parse_body(body.MESSAGE_TYPE, body.CONTRACT_VERSION, raw_body)  # what we send must parse
    held = categories_of(body)
    declared = _declared(draft.categories, held)
    key = content_key or random_bytes(AEAD_KEY_BYTES)
    entries = []
    for record in sorted(recipients, key=lambda r: r.org):
        cert = record.current_encryption_key(created)
        entries.append(Recipient(org=record.org, kid=cert.kid, wrapped_key=cert.public.seal(key)))
    fields = draft.model_dump(exclude={"categories", "lifetime"})
    message_id = message_id or new_message_id()
    if body.MESSAGE_TYPE is MessageType.M1 and draft.case_id is None:
        fields["case_id"] = case_id_for(message_id)  # a new signal opens its own case
    try:
        header = EnvelopeHeader(
            message_id=message_id,
            message_type=body.MESSAGE_TYPE,
            contract_version=body.CONTRACT_VERSION,
            sender=Sender(org=sender.org, kid=sender.signing_kid),
            recipients=tuple(entries),
            created_at=created,
            expires_at=created + draft.lifetime,
            categories=declared,
            key_commitment=commitment(key),
            **fields,
        )
    except ValidationError as exc:
        raise ContractError(f"header: {exc.errors(include_input=False)[0]['msg']}") from exc
    _check_body_against_header(body, header)
    return assemble(
        encode_header(header),
        raw_body,
        content_key=key,
        nonce=nonce or random_bytes(AEAD_NONCE_BYTES),
        signing_key=sender.signing_key,
    )


def assemble(
    header_bytes: bytes,
    raw_body: bytes,
    *,
    content_key: bytes,
    nonce: bytes,
    signing_key: SigningKey,
) -> bytes:
    """Encrypt, sign and frame (ENVELOPE.md 5-7). No checks: callers have made them."""
    ciphertext = nonce + aead_encrypt(content_key, nonce, pad(raw_body), header_bytes)
    return frame(header_bytes, ciphertext, signing_key)


def frame(header_bytes: bytes, ciphertext: bytes, signing_key: SigningKey) -> bytes:
    """Sign and frame a header and ciphertext (ENVELOPE.md 7)."""
    signature = signing_key.sign(_signed_digest(header_bytes, ciphertext))
    return b"".join(
        (
            MAGIC,
            _U32.pack(len(header_bytes)),
            header_bytes,
            _U32.pack(len(ciphertext)),
            ciphertext,
            signature,
        )
    )


def _declared(
    requested: tuple[DataCategory, ...] | None, held: frozenset[DataCategory]
) -> tuple[DataCategory, ...]:
    if requested is None:
        chosen = set(held) or {DataCategory.GEEN}
    else:
        chosen = set(requested)
        undeclared = held - chosen
        if undeclared:
            raise ContractError(f"body holds undeclared categories: {sorted(undeclared)}")
    return tuple(sorted(chosen))


def _check_body_against_header(body: Body, header: EnvelopeHeader) -> None:
    declared = set(header.categories) - {DataCategory.GEEN}
    if not categories_of(body) <= declared:
        raise ContractError("body holds undeclared categories")
    if not declared <= contract_categories(type(body)):
        raise ContractError("declared categories the contract cannot hold")
    try:
        body.check_header(header.model_dump())
    except ValueError as exc:
        raise ContractError(str(exc)) from exc


def pad(raw_body: bytes) -> bytes:
    """Length-prefix and pad a body to its Padmé length (ENVELOPE.md 5.2)."""
    if len(raw_body) > MAX_BODY_BYTES:
        raise ContractError("body too large")
    framed = _U32.pack(len(raw_body)) + raw_body
    return framed + bytes(padded_length(len(framed)) - len(framed))


def _unpad(plaintext: bytes) -> bytes:
    if len(plaintext) < _U32.size:
        raise EnvelopeError("padding: too short")
    (length,) = _U32.unpack_from(plaintext)
    end = _U32.size + length
    if len(plaintext) != padded_length(end) or any(plaintext[end:]):
        raise EnvelopeError("padding: not canonical")
    return plaintext[_U32.size : end]


def split_envelope(raw: bytes, *, max_bytes: int | None = None) -> tuple[bytes, bytes, bytes]:
    """Split envelope bytes into header, ciphertext and signature (ENVELOPE.md 2).

    Raises:
        EnvelopeError: the framing is wrong (code ``MALFORMED``, ``TOO_LARGE`` or
            ``UNSUPPORTED_FORMAT``).
    """
    if max_bytes is not None and len(raw) > max_bytes:
        raise EnvelopeError("framing: too large", ReasonCode.TOO_LARGE)
    if raw[: len(MAGIC) - 1] == MAGIC[:-1] and raw[len(MAGIC) - 1 : len(MAGIC)] != MAGIC[-1:]:
        raise EnvelopeError("framing: unknown version", ReasonCode.UNSUPPORTED_FORMAT)
    if not raw.startswith(MAGIC):
        raise EnvelopeError("framing: bad magic")
    offset = len(MAGIC)
    try:
        (header_len,) = _U32.unpack_from(raw, offset)
        offset += _U32.size + header_len
        (ct_len,) = _U32.unpack_from(raw, offset)
    except struct.error:
        raise EnvelopeError("framing: truncated") from None
    ct_start = offset + _U32.size
    if len(raw) != ct_start + ct_len + SIGNATURE_BYTES:
        raise EnvelopeError("framing: lengths do not add up")
    if ct_len < AEAD_NONCE_BYTES + AEAD_TAG_BYTES:
        raise EnvelopeError("framing: ciphertext too short")
    header = raw[len(MAGIC) + _U32.size : len(MAGIC) + _U32.size + header_len]
    return header, raw[ct_start : ct_start + ct_len], raw[ct_start + ct_len :]


def verify(raw: bytes, resolve_signer: SignerResolver, *, max_bytes: int | None = None) -> Verified:
    """Check framing, header and signature with public keys only (what the hub does).

    Raises:
        EnvelopeError: any check failed; ``code`` says which class of failure.
    """
    header_bytes, ciphertext, signature = split_envelope(raw, max_bytes=max_bytes)
    try:
        header = decode_header(header_bytes)
    except ContractError as exc:
        raise EnvelopeError(f"header: {exc}") from exc
    try:
        key = resolve_signer(OrgId(header.sender.org), KeyId(header.sender.kid), header.created_at)
    except KeyDirectoryError as exc:
        # The code, not the message: the message names the organisation and key the header
        # claims, which are the sender's text until the signature is checked.
        raise EnvelopeError(f"signer: {exc.code.value}", exc.code) from exc
    if not key.verify(_signed_digest(header_bytes, ciphertext), signature):
        raise EnvelopeError("signature does not verify", ReasonCode.BAD_SIGNATURE)
    return Verified(header=header, header_bytes=header_bytes, ciphertext=ciphertext, raw=raw)


def open_envelope(
    raw: bytes,
    recipient: PartnerIdentity,
    resolve_signer: SignerResolver,
    *,
    now: dt.datetime | None = None,
) -> Opened:
    """Verify, decrypt and validate an envelope addressed to ``recipient``.

    Raises:
        EnvelopeError: anything at all is wrong; ``reason`` says what.
    """
    verified = verify(raw, resolve_signer)
    header = verified.header
    if (now or _utc_now()) >= header.expires_at:
        raise EnvelopeError("expired")
    entry = next((r for r in header.recipients if r.org == recipient.org), None)
    if entry is None:
        raise EnvelopeError("not a recipient")
    private = recipient.encryption_keys.get(KeyId(entry.kid))
    if private is None:
        raise MissingPrivateKey("no private key for the recipient key id", KeyId(entry.kid))
    try:
        key = private.unseal(entry.wrapped_key)
    except CryptoFailure:
        raise EnvelopeError("content key does not unwrap") from None
    if len(key) != AEAD_KEY_BYTES:
        raise EnvelopeError("content key has the wrong length")
    if not constant_time_equal(commitment(key), header.key_commitment):
        raise EnvelopeError("content key does not match the commitment")
    nonce, sealed = verified.ciphertext[:AEAD_NONCE_BYTES], verified.ciphertext[AEAD_NONCE_BYTES:]
    try:
        plaintext = aead_decrypt(key, nonce, sealed, verified.header_bytes)
    except CryptoFailure:
        raise EnvelopeError("ciphertext does not authenticate") from None
    raw_body = _unpad(plaintext)
    try:
        body = parse_body(header.message_type, header.contract_version, raw_body)
        _check_body_against_header(body, header)
    except ContractError as exc:
        raise EnvelopeError(f"body: {exc}") from exc
    return Opened(header=header, body=body)
