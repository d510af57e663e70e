"""Contracts: the data every partner speaks. Data only, no I/O.

- :mod:`schakel.contracts.header`   the cleartext envelope header and its canonical encoding
- :mod:`schakel.contracts.bodies`   body contracts M1-M16 (+M6R), fields tagged with data categories
- :mod:`schakel.contracts.enums`    the closed lists: states, types, purposes, codes, reasons
- :mod:`schakel.contracts.policy`   the routing policy (``policy.toml``) as validated data
- :mod:`schakel.contracts.ids`      identifier types that cannot hold personal data
- :mod:`schakel.contracts.errors`   the project's exception tree

The wire format is specified in ``contracts/ENVELOPE.md``.
"""

from schakel.contracts.bodies import Body, parse_body
from schakel.contracts.boundedjson import JsonTooDeep
from schakel.contracts.enums import (
    CaseState,
    DataCategory,
    MessageType,
    OrgType,
    Purpose,
    ReasonCode,
)
from schakel.contracts.errors import ContractError, EnvelopeError, PolicyFileError, SchakelError
from schakel.contracts.header import EnvelopeHeader, MessageDraft
from schakel.contracts.ids import CaseId, KeyId, MessageId, OrgId, new_case_id, new_message_id
from schakel.contracts.notice import DeliveryState, Receipt, RefusalNotice
from schakel.contracts.policy import Policy, default_policy, load_policy

__all__ = [
    "Body",
    "CaseId",
    "CaseState",
    "ContractError",
    "DataCategory",
    "DeliveryState",
    "EnvelopeError",
    "EnvelopeHeader",
    "JsonTooDeep",
    "KeyId",
    "MessageDraft",
    "MessageId",
    "MessageType",
    "OrgId",
    "OrgType",
    "Policy",
    "PolicyFileError",
    "Purpose",
    "ReasonCode",
    "Receipt",
    "RefusalNotice",
    "SchakelError",
    "default_policy",
    "load_policy",
    "new_case_id",
    "new_message_id",
    "parse_body",
]
