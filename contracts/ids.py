"""Identifier types: distinct types, never bare ``str``, none of them able to hold a name.

Every identifier is a constrained string whose pattern excludes anything a person could be
identified by: case ids are random tokens, organisation ids are an organisation type plus a
short lowercase slug, key ids are hashes of public keys.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
import uuid
from typing import Annotated, NewType

from pydantic import AfterValidator, StringConstraints

from schakel.contracts.enums import OrgType

__all__ = [
    "CASE_ID_PATTERN",
    "KEY_ID_PATTERN",
    "MESSAGE_ID_PATTERN",
    "ORG_ID_PATTERN",
    "CaseId",
    "CaseIdField",
    "KeyId",
    "KeyIdField",
    "MessageId",
    "MessageIdField",
    "OrgId",
    "OrgIdField",
    "case_id_for",
    "new_case_id",
    "new_message_id",
    "org_type_of",
]

_B32 = "abcdefghijklmnopqrstuvwxyz234567"
CASE_ID_PATTERN = r"^case-[a-z2-7]{26}$"
ORG_ID_PATTERN = r"^(" + "|".join(t.value for t in OrgType) + r")\.[a-z0-9][a-z0-9-]{0,39}$"
KEY_ID_PATTERN = r"^(sig|enc)-[0-9a-f]{32}$"
MESSAGE_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"

CaseId = NewType("CaseId", str)
OrgId = NewType("OrgId", str)
KeyId = NewType("KeyId", str)
MessageId = NewType("MessageId", str)

# Field types for pydantic models; mypy sees the NewType, pydantic checks the pattern.
CaseIdField = Annotated[CaseId, StringConstraints(pattern=CASE_ID_PATTERN)]
OrgIdField = Annotated[OrgId, StringConstraints(pattern=ORG_ID_PATTERN)]
KeyIdField = Annotated[KeyId, StringConstraints(pattern=KEY_ID_PATTERN)]
MessageIdField = Annotated[MessageId, StringConstraints(pattern=MESSAGE_ID_PATTERN)]


def _check_org(value: str) -> str:
    if not re.fullmatch(ORG_ID_PATTERN, value):
        raise ValueError(f"not an organisation id: {value!r}")
    return value


OrgIdStr = Annotated[str, AfterValidator(_check_org)]


def new_case_id() -> CaseId:
    """Return a fresh opaque case id (128 random bits, base32)."""
    raw = int.from_bytes(secrets.token_bytes(17), "big") >> 6  # 130 bits -> 26 base32 chars
    chars = []
    for _ in range(26):
        chars.append(_B32[raw & 31])
        raw >>= 5
    return CaseId("case-" + "".join(chars))


def case_id_for(message_id: MessageId | str) -> CaseId:
    """The id of the case a message opens (an M1 signal, or the new gemeente's case of an M16
    handover): derived from the message's id, so that no partner chooses a case id and every
    party (sender, hub, recipients) computes the same one. 130 bits of BLAKE2b, base32."""
    digest = hashlib.blake2b(message_id.encode("ascii"), digest_size=17, person=b"schakel-case")
    raw = int.from_bytes(digest.digest(), "big") >> 6
    chars = []
    for _ in range(26):
        chars.append(_B32[raw & 31])
        raw >>= 5
    return CaseId("case-" + "".join(chars))


def new_message_id() -> MessageId:
    """Return a fresh message id (UUID version 4, lowercase)."""
    return MessageId(str(uuid.uuid4()))


@functools.lru_cache(maxsize=4096)  # asked several times per routed message
def org_type_of(org: OrgId | str) -> OrgType:
    """Return the organisation type an organisation id starts with.

    Raises:
        ValueError: the value is not an organisation id.
    """
    return OrgType(_check_org(org).split(".", 1)[0])
