"""The cleartext envelope header: everything the hub may see, nothing that identifies a person.

The header travels as canonical JSON (see ``contracts/ENVELOPE.md`` section 3): ASCII only,
keys sorted, no whitespace, absent optional fields omitted. :func:`encode_header` produces that
form and :func:`decode_header` accepts only that form, so one header has exactly one encoding.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from schakel.contracts.canonical import canonical_json
from schakel.contracts.enums import (
    CaseState,
    DataCategory,
    Decision,
    Function,
    HeaderField,
    InvitationScope,
    LegalBasis,
    MessageType,
    Purpose,
)
from schakel.contracts.errors import ContractError
from schakel.contracts.ids import CaseIdField, KeyIdField, MessageIdField, OrgIdField

__all__ = [
    "FORMAT",
    "MAX_HEADER_BYTES",
    "MAX_RECIPIENTS",
    "SUITE",
    "Base64Key",
    "Base64Signature",
    "EnvelopeHeader",
    "InvitationRef",
    "MessageDraft",
    "Recipient",
    "Sender",
    "Timestamp",
    "decode_header",
    "encode_header",
]

FORMAT: Final = "schakel/1"
SUITE: Final = "S1"
MAX_HEADER_BYTES: Final = 16 * 1024
MAX_RECIPIENTS: Final = 64
WRAPPED_KEY_BYTES: Final = 80
COMMITMENT_BYTES: Final = 32
_HEADER_FIELDS: Final = tuple(HeaderField)  # iterating an Enum class is slow; once


def _b64_decoder(length: int) -> Any:
    def decode(value: object) -> bytes:
        if isinstance(value, bytes):
            raw = value
        elif isinstance(value, str):
            try:
                raw = base64.b64decode(value.encode("ascii"), validate=True)
            except (binascii.Error, UnicodeEncodeError) as exc:
                raise ValueError("not standard base64") from exc
            if base64.b64encode(raw).decode("ascii") != value:
                raise ValueError("non-canonical base64")
        else:
            raise ValueError("expected base64 text")  # noqa: TRY004 - pydantic wants ValueError
        if len(raw) != length:
            raise ValueError(f"expected exactly {length} bytes, got {len(raw)}")
        return raw

    return decode


def _b64_schema(length: int) -> WithJsonSchema:
    size = 4 * ((length + 2) // 3)
    return WithJsonSchema(
        {"type": "string", "contentEncoding": "base64", "minLength": size, "maxLength": size}
    )


_B64_OUT = PlainSerializer(lambda b: base64.b64encode(b).decode("ascii"), return_type=str)


def _whole_utc_seconds(value: dt.datetime) -> dt.datetime:
    if value.utcoffset() != dt.timedelta(0):
        raise ValueError("timestamps must be UTC")
    if value.microsecond:
        raise ValueError("timestamps have whole seconds")
    return value.astimezone(dt.UTC)


Timestamp = Annotated[
    dt.datetime,
    AfterValidator(_whole_utc_seconds),
    PlainSerializer(lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ"), return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"}),
]
WrappedKey = Annotated[
    bytes, PlainValidator(_b64_decoder(WRAPPED_KEY_BYTES)), _B64_OUT, _b64_schema(80)
]
Base64Key = Annotated[bytes, PlainValidator(_b64_decoder(32)), _B64_OUT, _b64_schema(32)]
Base64Signature = Annotated[bytes, PlainValidator(_b64_decoder(64)), _B64_OUT, _b64_schema(64)]
Commitment = Annotated[
    bytes, PlainValidator(_b64_decoder(COMMITMENT_BYTES)), _B64_OUT, _b64_schema(32)
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Sender(_Frozen):
    """Who signed the message."""

    org: OrgIdField
    kid: KeyIdField = Field(description="Key id of the sender's Ed25519 signing key.")


class Recipient(_Frozen):
    """One recipient: its encryption key and the content key sealed to it."""

    org: OrgIdField
    kid: KeyIdField = Field(description="Key id of the recipient's X25519 encryption key.")
    wrapped_key: WrappedKey = Field(description="crypto_box_seal(content key), 80 bytes.")


class InvitationRef(_Frozen):
    """An invitation: created by M6 (UITNODIGEN), answered by M6R, revoked by M6 (INTREKKEN)."""

    id: MessageIdField
    scope: InvitationScope


class EnvelopeHeader(_Frozen):
    """The cleartext header of an envelope. Signed by the sender and bound to the ciphertext."""

    format: Literal["schakel/1"] = FORMAT
    suite: Literal["S1"] = SUITE
    message_id: MessageIdField
    message_type: MessageType
    contract_version: int = Field(ge=1, le=1000)
    case_id: CaseIdField | None = None
    step: CaseState | None = Field(
        default=None, description="The case state the message is sent for (case messages only)."
    )
    sender: Sender
    recipients: tuple[Recipient, ...] = Field(min_length=1, max_length=MAX_RECIPIENTS)
    created_at: Timestamp
    expires_at: Timestamp
    in_reply_to: MessageIdField | None = None
    purpose: Purpose
    legal_basis: LegalBasis
    categories: tuple[DataCategory, ...] = Field(
        min_length=1, description="Sorted, unique; ['geen'] when the body has no personal data."
    )
    no_forward: bool
    key_commitment: Commitment = Field(
        description="BLAKE2b-256 keyed with the content key over the commitment label."
    )
    # Optional routing fields; the policy says per message type which are required.
    regie_gemeente: OrgIdField | None = None
    decision: Decision | None = None
    criminal_track: bool | None = None
    invitation: InvitationRef | None = None
    plan_part: OrgIdField | None = None
    handover_to: OrgIdField | None = None
    function: Function | None = None

    @model_validator(mode="after")
    def _consistent(self) -> EnvelopeHeader:
        if self.expires_at <= self.created_at:
            raise ValueError("expires_at must be after created_at")
        if list(self.categories) != sorted(set(self.categories)):
            raise ValueError("categories must be sorted and unique")
        if DataCategory.GEEN in self.categories and len(self.categories) > 1:
            raise ValueError("'geen' cannot be combined with other categories")
        keys = [(r.org, r.kid) for r in self.recipients]
        if keys != sorted(set(keys)):
            raise ValueError("recipients must be sorted by (org, kid) and unique")
        if len({r.org for r in self.recipients}) != len(self.recipients):
            raise ValueError("one encryption key per recipient organisation")
        if (self.case_id is None) != (self.step is None):
            raise ValueError("case_id and step come together")
        return self

    def present_fields(self) -> frozenset[HeaderField]:
        """Return the optional routing fields this header carries."""
        return frozenset(f for f in _HEADER_FIELDS if getattr(self, f.value) is not None)

    @property
    def recipient_orgs(self) -> tuple[str, ...]:
        """The recipient organisations, in header order."""
        return tuple(r.org for r in self.recipients)


class MessageDraft(_Frozen):
    """What a sender decides about a message; :func:`keys.envelope.seal` adds the rest.

    The message type comes from the body; the sender, recipients, key commitment and
    timestamps are filled in when the message is sealed. ``categories`` defaults to what the
    body actually holds.
    """

    case_id: CaseIdField | None = None
    step: CaseState | None = None
    purpose: Purpose
    legal_basis: LegalBasis
    categories: tuple[DataCategory, ...] | None = None
    in_reply_to: MessageIdField | None = None
    no_forward: bool = False
    # bounded here as the policy bounds it (1..365 days); the hub's policy may be stricter
    lifetime: dt.timedelta = Field(
        dt.timedelta(days=7), gt=dt.timedelta(0), le=dt.timedelta(days=365)
    )
    regie_gemeente: OrgIdField | None = None
    decision: Decision | None = None
    criminal_track: bool | None = None
    invitation: InvitationRef | None = None
    plan_part: OrgIdField | None = None
    handover_to: OrgIdField | None = None
    function: Function | None = None


def encode_header(header: EnvelopeHeader) -> bytes:
    """Return the canonical encoding of a header (ENVELOPE.md section 3)."""
    return canonical_json(header)


def decode_header(raw: bytes) -> EnvelopeHeader:
    """Parse a header, accepting only its canonical encoding.

    Raises:
        ContractError: the bytes are not a valid header in canonical form.
    """
    if len(raw) > MAX_HEADER_BYTES:
        raise ContractError("header too large")
    try:
        header = EnvelopeHeader.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        raise ContractError(_summary(exc)) from exc
    if encode_header(header) != raw:
        raise ContractError("header is not in canonical form")
    return header


def _summary(exc: ValidationError) -> str:
    """Where and what, from a closed set: the contract's own field names (a key the contract
    does not know is ``?``; it may spell a name) and pydantic's error type, never input text."""
    first = exc.errors(include_url=False, include_input=False)[0]
    known = _header_field_names()
    where = (
        ".".join(str(p) if isinstance(p, int) or p in known else "?" for p in first["loc"])
        or "header"
    )
    return f"{where}: {first['type']}"


@functools.cache
def _header_field_names() -> frozenset[str]:
    schema = EnvelopeHeader.model_json_schema()
    names: set[str] = set()
    for part in (schema, *schema.get("$defs", {}).values()):
        names.update(part.get("properties", {}))
    return frozenset(names)
