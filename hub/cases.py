"""Case metadata the hub keeps: state, regie, participants, invitations. Never content.

A :class:`CaseRecord` is stored as JSON in the NATS KV bucket ``schakel-cases`` under its opaque
case id, and changed only with a compare-and-set on the KV revision, so two hub instances
cannot both apply a transition to the same version of a case.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from pydantic import BaseModel, ConfigDict

from schakel.contracts.enums import CaseState, InvitationScope
from schakel.contracts.header import Timestamp
from schakel.contracts.ids import CaseIdField, MessageId, MessageIdField, OrgId, OrgIdField
from schakel.contracts.policy import ClosureReason

__all__ = ["APPLIED_KEPT", "CLOSED_STATES", "CaseRecord", "Invitation", "InvitationStatus"]

CLOSED_STATES: Final = frozenset({CaseState.AFGESLOTEN, CaseState.AFGESLOTEN_ZONDER_PGA})
# Enough to cover the window between the case write and the message registry write (the
# registry is the long-term duplicate memory); kept small because it is rewritten each time.
APPLIED_KEPT: Final = 32


class InvitationStatus(StrEnum):
    """Where an invitation stands."""

    OPEN = "OPEN"
    ACCEPTED = "ACCEPTED"
    DECLINED = "DECLINED"
    REVOKED = "REVOKED"
    ENDED = "ENDED"  # the case closed


class Invitation(BaseModel):
    """One organisation invited to one case, for a scope."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: MessageIdField
    org: OrgIdField
    scope: InvitationScope
    status: InvitationStatus
    at: Timestamp


class CaseRecord(BaseModel):
    """The hub's metadata about one case."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    case_id: CaseIdField
    state: CaseState
    regie_gemeente: OrgIdField
    melder: OrgIdField
    criminal_track: bool = False
    closure: ClosureReason | None = None
    participants: tuple[OrgIdField, ...] = ()
    invitations: tuple[Invitation, ...] = ()
    created_at: Timestamp
    updated_at: Timestamp
    closed_at: Timestamp | None = None
    purge_after: Timestamp | None = None
    applied: tuple[MessageIdField, ...] = ()

    def invitation(self, org: OrgId, scope: InvitationScope) -> Invitation | None:
        """The latest invitation of ``org`` for ``scope``."""
        found = [i for i in self.invitations if i.org == org and i.scope == scope]
        return found[-1] if found else None

    def has_applied(self, message_id: MessageId) -> bool:
        """Whether this message was already applied to the case (idempotent redelivery)."""
        return message_id in self.applied

    def with_applied(self, message_id: MessageId) -> tuple[MessageId, ...]:
        """The applied list with ``message_id`` added, keeping the most recent ones."""
        return (*self.applied, message_id)[-APPLIED_KEPT:]
