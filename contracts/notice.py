"""Refusal notices: what the hub tells a sender when it does not route a message.

A notice holds metadata only (the message id, a reason code and its fixed text) and is signed by
the hub (``keys.statement``). The text is the same for "no access" and "no such case".
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, ConfigDict

from schakel.contracts.enums import ReasonCode
from schakel.contracts.header import Timestamp
from schakel.contracts.ids import KeyIdField, MessageIdField, OrgIdField

__all__ = ["RECEIPT_LABEL", "REFUSAL_LABEL", "DeliveryState", "Receipt", "RefusalNotice"]

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


RECEIPT_LABEL: Final = b"schakel/1 receipt\n"


class Receipt(BaseModel):
    """A recipient's signed statement that its back office processed a message."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["schakel-receipt/1"] = "schakel-receipt/1"
    message_id: MessageIdField
    recipient: OrgIdField
    recipient_kid: KeyIdField
    sender: OrgIdField
    at: Timestamp


class DeliveryState(BaseModel):
    """What the hub knows about one of a sender's messages: metadata only."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    message_id: MessageIdField
    known: bool
    state: Literal["unknown", "accepted", "receipted"] = "unknown"
    recipients: tuple[OrgIdField, ...] = ()
    receipted_by: tuple[OrgIdField, ...] = ()
    dead_lettered_for: tuple[OrgIdField, ...] = ()
    expired_for: tuple[OrgIdField, ...] = ()
