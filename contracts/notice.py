"""Refusal notices: what the hub tells a sender when it does not route a message.

A notice holds metadata only (the message id, a reason code and its fixed text) and is signed by
the hub (``keys.statement``). The text is the same for "no access" and "no such case".
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, ConfigDict

from contracts.enums import ReasonCode
from contracts.header import Timestamp
from contracts.ids import KeyIdField, MessageIdField, OrgIdField

__all__ = ["REFUSAL_LABEL", "RefusalNotice"]

REFUSAL_LABEL: Final = b"schakel/1 refusal-notice\n"


class RefusalNotice(BaseModel):
    """The hub refused a message."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["schakel-refusal/1"] = "schakel-refusal/1"
    message_id: MessageIdField | None = None
    recipient: OrgIdField
    reason: ReasonCode
    text: str
    at: Timestamp
    hub: OrgIdField
    hub_kid: KeyIdField
