"""The policy engine: may this message be routed, and what does it do to the case?

Pure functions over the header, the case record and the policy data; no I/O. The order of the
checks matters for privacy: everything that can be decided without the case comes first, then
access to the case, and only then its state, so that a partner without access learns nothing
about a case, not even that it exists ("no access" and "no such case" are both
``NOT_PERMITTED``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from schakel.contracts.bodies import body_contract, contract_categories
from schakel.contracts.enums import (
    CaseState,
    DataCategory,
    Decision,
    MessageType,
    OrgType,
    ReasonCode,
)
from schakel.contracts.errors import ContractError
from schakel.contracts.header import EnvelopeHeader
from schakel.contracts.ids import OrgId, case_id_for, org_type_of
from schakel.contracts.policy import (
    Cell,
    ClosureReason,
    Condition,
    DecidedBy,
    MessageRule,
    Policy,
)
from schakel.hub.cases import CLOSED_STATES, CaseRecord, Invitation, InvitationStatus
from schakel.hub.registry import Registry

__all__ = ["Allow", "Context", "Refuse", "Verdict", "decide", "opened_by"]


@dataclass(frozen=True, slots=True)
class Context:
    """What the engine needs besides the header and the case."""

    policy: Policy
    registry: Registry
    now: dt.datetime
    replies_to_no_forward: bool = False


@dataclass(frozen=True, slots=True)
class Allow:
    """Route the message; ``case`` is the new case record (``None`` for case-less types);
    ``opened`` a further case the message opens (the new gemeente's, for a handover)."""

    case: CaseRecord | None
    state_before: CaseState | None
    opened: CaseRecord | None = None


@dataclass(frozen=True, slots=True)
class Refuse:
    """Do not route. ``detail`` is for the audit trail and log only, never for the sender."""

    reason: ReasonCode
    detail: str
    case_exists: bool = False  # set by the router: the refusal is about an existing case
    fields: tuple[str, ...] = ()  # names of the header fields at fault, told to the sender


Verdict = Allow | Refuse


def decide(header: EnvelopeHeader, case: CaseRecord | None, ctx: Context) -> Verdict:
    """Decide on one message."""
    rule = ctx.policy.rule(header.message_type)
    refusal = _static(header, rule, ctx)
    if refusal:
        return refusal
    if header.case_id is None:
        return Allow(case=None, state_before=None)
    if case is None:
        # A new signal opens the case whose id is derived from its own message id; any other
        # id names a case that does not exist, and is refused exactly as a case without access.
        if rule.creates_case and header.case_id == case_id_for(header.message_id):
            return _new_case(header, ctx)
        return Refuse(ReasonCode.NOT_PERMITTED, "no such case")
    return _on_case(header, rule, case, ctx)


# --- checks that need no case ---------------------------------------------------------------


def _cell(ctx: Context, message_type: MessageType, org: OrgId) -> Cell | None:
    """The matrix cell, with the configuration flags applied (c5, c8)."""
    cell = ctx.policy.cell(message_type, org_type_of(org))
    if cell is None:
        return None
    if Condition.C5 in cell.conditions and not ctx.policy.flags.nctv_coordination_law:
        return None
    if Condition.C8 in cell.conditions and not ctx.policy.flags.zvh_meldpunt_mandate:
        return None
    return cell


def _static(header: EnvelopeHeader, rule: MessageRule, ctx: Context) -> Refuse | None:
    policy = ctx.policy
    sender = OrgId(header.sender.org)
    sender_type = org_type_of(sender)
    # Who may send what to whom comes first: it is the matrix of PROCESS.md.
    cell = _cell(ctx, header.message_type, sender)
    if cell is None or not cell.send:
        return Refuse(ReasonCode.NOT_PERMITTED, f"{sender_type} may not send {header.message_type}")
    # Every party is a registered partner: keys in the directory are not enough. (Checked
    # before any organisation is named in a detail, so that details name registered ones only.)
    registered = ctx.registry.partners()
    if sender not in registered:
        return Refuse(ReasonCode.NOT_PERMITTED, "the sender is not a registered partner")
    if not {OrgId(o) for o in header.recipient_orgs} <= registered:
        return Refuse(ReasonCode.NOT_PERMITTED, "a recipient is not a registered partner")
    named = (header.regie_gemeente, header.plan_part, header.handover_to)
    if any(org is not None and OrgId(org) not in registered for org in named):
        return Refuse(ReasonCode.NOT_PERMITTED, "a named organisation is not a registered partner")
    for org in header.recipient_orgs:
        r_cell = _cell(ctx, header.message_type, OrgId(org))
        if r_cell is None or not r_cell.receive or org == sender:
            return Refuse(ReasonCode.NOT_PERMITTED, f"{org} may not receive")
    present = header.present_fields()
    missing = rule.required_fields - present
    extra = present - rule.required_fields - rule.optional_fields
    if missing or extra:
        names = ", ".join(
            [f"{f.value} missing" for f in sorted(missing)]
            + [f"{f.value} not allowed" for f in sorted(extra)]
        )
        at_fault = tuple(sorted(f.value for f in missing | extra))
        return Refuse(ReasonCode.HEADER_FIELDS_INVALID, names, fields=at_fault)
    if (header.case_id is not None) != (rule.case == "required"):
        return Refuse(ReasonCode.HEADER_FIELDS_INVALID, f"case binding is {rule.case}",
                      fields=("case_id",))  # fmt: skip
    if header.decision is not None and header.decision not in policy.decisions.get(
        header.message_type, frozenset()
    ):
        return Refuse(ReasonCode.HEADER_FIELDS_INVALID, f"decision {header.decision}",
                      fields=("decision",))  # fmt: skip
    if rule.force_no_forward and not header.no_forward:
        return Refuse(ReasonCode.HEADER_FIELDS_INVALID, "no_forward is required",
                      fields=("no_forward",))  # fmt: skip
    if header.purpose not in rule.purposes:
        return Refuse(ReasonCode.PURPOSE_NOT_ALLOWED, str(header.purpose))
    if not policy.legal_basis_allowed(header.legal_basis, sender_type, header.message_type):
        return Refuse(ReasonCode.LEGAL_BASIS_NOT_ALLOWED, str(header.legal_basis))
    refusal = _categories(header, sender_type, ctx)
    if refusal:
        return refusal
    if header.in_reply_to is not None and ctx.replies_to_no_forward:
        return Refuse(ReasonCode.NOT_PERMITTED, "replies to or forwards a no_forward message")
    return None


def _categories(header: EnvelopeHeader, sender_type: OrgType, ctx: Context) -> Refuse | None:
    try:
        possible = contract_categories(body_contract(header.message_type, header.contract_version))
    except ContractError:
        return Refuse(ReasonCode.UNSUPPORTED_FORMAT, "contract version not supported")
    for category in header.categories:
        if category is DataCategory.GEEN:
            continue
        if category not in possible:
            return Refuse(ReasonCode.CATEGORY_NOT_ALLOWED, f"{category} not in contract")
        rule = ctx.policy.categories.get(category)
        if rule is None:
            continue
        if rule.senders is not None and sender_type not in rule.senders:
            return Refuse(ReasonCode.CATEGORY_NOT_ALLOWED, f"{category} from {sender_type}")
        if rule.messages is not None and header.message_type not in rule.messages:
            return Refuse(ReasonCode.CATEGORY_NOT_ALLOWED, f"{category} in {header.message_type}")
        if rule.legal_bases is not None and header.legal_basis not in rule.legal_bases:
            return Refuse(ReasonCode.CATEGORY_NOT_ALLOWED, f"{category} under this legal basis")
    return None


# --- a new case -----------------------------------------------------------------------------


def _new_case(header: EnvelopeHeader, ctx: Context) -> Verdict:
    assert header.case_id is not None
    regie = OrgId(header.regie_gemeente or "")
    kern = ctx.registry.kern(regie) if regie else frozenset()
    if not kern:
        return Refuse(ReasonCode.NOT_PERMITTED, "regie_gemeente is not a known gemeente")
    if not set(header.recipient_orgs) <= kern:
        return Refuse(ReasonCode.NOT_PERMITTED, "a new signal goes to the regie's kern only")
    if header.step is not CaseState.SIGNAAL_ONTVANGEN:
        return Refuse(ReasonCode.STATE_NOT_ALLOWED, "a new case starts at SIGNAAL_ONTVANGEN")
    sender = OrgId(header.sender.org)
    record = CaseRecord(
        case_id=header.case_id,
        state=CaseState.SIGNAAL_ONTVANGEN,
        regie_gemeente=regie,
        melder=sender,
        participants=_sorted({sender, *header.recipient_orgs}),
        created_at=ctx.now,
        updated_at=ctx.now,
        applied=(header.message_id,),
    )
    return Allow(case=record, state_before=None)


# --- an existing case -----------------------------------------------------------------------


def _accepted(case: CaseRecord, org: OrgId, rule: MessageRule) -> bool:
    if rule.invitation_scope is None:
        return False
    invitation = case.invitation(org, rule.invitation_scope)
    return invitation is not None and invitation.status is InvitationStatus.ACCEPTED


def _open_invitation(case: CaseRecord, org: OrgId, header: EnvelopeHeader) -> Invitation | None:
    ref = header.invitation
    if ref is None:
        return None
    invitation = case.invitation(org, ref.scope)
    if invitation is None or invitation.id != ref.id:
        return None
    return invitation


def _sender_may(header: EnvelopeHeader, rule: MessageRule, case: CaseRecord, ctx: Context) -> bool:
    sender = OrgId(header.sender.org)
    cell = _cell(ctx, header.message_type, sender)
    assert cell is not None
    if Condition.C6R in cell.conditions:
        invitation = _open_invitation(case, sender, header)
        return invitation is not None and invitation.status is InvitationStatus.OPEN
    if cell.invited:
        return _accepted(case, sender, rule)
    return sender in _involved(case, ctx)


def _involved(case: CaseRecord, ctx: Context) -> frozenset[OrgId]:
    kern = ctx.registry.kern(OrgId(case.regie_gemeente))
    return kern | {OrgId(p) for p in case.participants}


def _recipient_refusal(
    header: EnvelopeHeader, rule: MessageRule, case: CaseRecord, ctx: Context
) -> str | None:
    involved = _involved(case, ctx)
    kern = ctx.registry.kern(OrgId(case.regie_gemeente))
    kern_types = ctx.policy.kern.types
    revoking = header.decision is Decision.INTREKKEN
    for raw in header.recipient_orgs:
        org = OrgId(raw)
        cell = _cell(ctx, header.message_type, org)
        assert cell is not None
        if cell.melder_only:
            if org != case.melder:
                return f"{org} is not the melder"
        elif cell.invited and header.message_type is MessageType.M6:
            if revoking and _open_invitation(case, org, header) is None:
                return f"{org} has no such invitation"
        elif cell.invited:
            if not _accepted(case, org, rule):
                return f"{org} has no accepted invitation"
        elif org not in involved and (
            (org_type_of(org) in kern_types and Condition.C12 not in cell.conditions)
            or {Condition.C3, Condition.C11} & cell.conditions
        ):
            return f"{org} is not involved in the case"
        if Condition.C7 in cell.conditions and org not in kern and header.plan_part != org:
            return f"{org} may receive only its own plan part"
    if header.plan_part is not None:
        outside = {OrgId(o) for o in header.recipient_orgs} - kern
        if outside - {header.plan_part}:
            return "a plan part goes only to the organisation it is for"
    return None


def _handover_refusal(header: EnvelopeHeader, case: CaseRecord, ctx: Context) -> str | None:
    """c12: a handover goes to the new gemeente and its region's kern, and to nobody else."""
    target = OrgId(header.handover_to or "")
    new_kern = ctx.registry.kern(target)
    if not new_kern or target == case.regie_gemeente:
        return "handover_to is not another known gemeente"
    recipients = {OrgId(o) for o in header.recipient_orgs}
    if target not in recipients:
        return "the new gemeente does not receive the handover"
    if not recipients <= new_kern:
        return "a handover goes to the new gemeente's kern only"
    return None


def _may_decide(decided_by: DecidedBy, sender: OrgId, case: CaseRecord, ctx: Context) -> bool:
    """Whether ``sender`` may make a transition decided by ``decided_by`` on ``case``."""
    regie = OrgId(case.regie_gemeente)
    if decided_by is DecidedBy.REGIE_GEMEENTE:
        return sender == regie
    if decided_by is DecidedBy.PROCESREGIE:
        region = ctx.registry.region_of(regie)
        return sender == regie or (region is not None and sender in region.zvh)
    return True


def _on_case(header: EnvelopeHeader, rule: MessageRule, case: CaseRecord, ctx: Context) -> Verdict:
    if case.state is CaseState.VERNIETIGD:
        return Refuse(ReasonCode.NOT_PERMITTED, "case purged")
    if not _sender_may(header, rule, case, ctx):
        return Refuse(ReasonCode.NOT_PERMITTED, "sender has no access to the case")
    if header.message_type is MessageType.M16:
        problem = _handover_refusal(header, case, ctx)
    else:
        problem = _recipient_refusal(header, rule, case, ctx)
    if problem:
        return Refuse(ReasonCode.NOT_PERMITTED, problem)
    # Access is established: from here on the sender may learn about the case's state.
    if case.state not in rule.states or header.step not in rule.states:
        return Refuse(ReasonCode.STATE_NOT_ALLOWED, f"{header.message_type} in {case.state}")
    if case.closure is ClosureReason.OVERGEDRAGEN and header.message_type is not MessageType.M2:
        # The new gemeente holds the case now: the old one is neither re-opened nor handed
        # over again; only its melder may still be told how it ended (M2).
        return Refuse(ReasonCode.STATE_NOT_ALLOWED, "the case was handed over")
    if header.regie_gemeente is not None and header.regie_gemeente != case.regie_gemeente:
        return Refuse(ReasonCode.HEADER_FIELDS_INVALID, "regie_gemeente is not the case's",
                      fields=("regie_gemeente",))  # fmt: skip
    sender = OrgId(header.sender.org)
    transition = ctx.policy.transition(
        header.message_type, header.decision, case.state, org_type_of(sender)
    )
    if transition is None and header.decision is not None and _decision_moves(header, ctx):
        return Refuse(ReasonCode.STATE_NOT_ALLOWED, f"{header.decision} in {case.state}")
    if transition is not None and not _may_decide(transition.decided_by, sender, case, ctx):
        if header.decision is not None or transition.to in CLOSED_STATES:
            who = transition.decided_by.value
            return Refuse(ReasonCode.NOT_PERMITTED, f"only the {who} decides this")
        transition = None  # routed as a message; the case stays where it is
    new_state = transition.to if transition else case.state
    closure = transition.closure if transition else None
    updated = _apply(header, case, new_state, ctx, closure)
    return Allow(case=updated, state_before=case.state, opened=opened_by(header, ctx))


def opened_by(header: EnvelopeHeader, ctx: Context) -> CaseRecord | None:
    """The further case an allowed message opens: the new gemeente's, for a handover."""
    return _handed_over(header, ctx) if header.message_type is MessageType.M16 else None


def _handed_over(header: EnvelopeHeader, ctx: Context) -> CaseRecord:
    """The new gemeente's case: it inherits nothing but the handover itself (its regie and
    kern are the new region's; no participants, invitations or flags carry over) and starts
    at INTAKE (design), its id derived from the handover's message id."""
    return CaseRecord(
        case_id=case_id_for(header.message_id),
        state=CaseState.INTAKE,
        regie_gemeente=OrgId(header.handover_to or ""),
        melder=OrgId(header.sender.org),
        created_at=ctx.now,
        updated_at=ctx.now,
        applied=(header.message_id,),
    )


def _decision_moves(header: EnvelopeHeader, ctx: Context) -> bool:
    return any(
        t.message == header.message_type and t.decision == header.decision
        for t in ctx.policy.transitions
    )


def _apply(
    header: EnvelopeHeader,
    case: CaseRecord,
    new_state: CaseState,
    ctx: Context,
    closure: ClosureReason | None = None,
) -> CaseRecord:
    sender = OrgId(header.sender.org)
    participants = set(map(OrgId, case.participants))
    invitations = list(case.invitations)
    changes: dict[str, object] = {}
    if header.message_type is MessageType.M6 and header.invitation is not None:
        ref = header.invitation
        revoking = header.decision is Decision.INTREKKEN
        for org in map(OrgId, header.recipient_orgs):
            status = InvitationStatus.REVOKED if revoking else InvitationStatus.OPEN
            if revoking:  # a revoked invitee is no longer involved in the case at all
                participants.discard(org)
            _replace(
                invitations,
                Invitation(id=ref.id, org=org, scope=ref.scope, status=status, at=ctx.now),
            )
    elif header.message_type is MessageType.M6R and header.invitation is not None:
        ref = header.invitation
        accepted = header.decision is Decision.ACCEPTEREN
        status = InvitationStatus.ACCEPTED if accepted else InvitationStatus.DECLINED
        _replace(
            invitations,
            Invitation(id=ref.id, org=sender, scope=ref.scope, status=status, at=ctx.now),
        )
        if accepted:
            participants.add(sender)
    else:
        participants |= {OrgId(o) for o in header.recipient_orgs}
    if header.criminal_track:
        changes["criminal_track"] = True
    if new_state in CLOSED_STATES and case.state not in CLOSED_STATES:
        # Invitations and participation end with the case (PROCESS.md): a former invitee or
        # participant is denied from now on, also if the case is re-opened. The kern follows
        # from the registry; the melder stays (it may be told the case is afgehandeld).
        participants = set()
        changes["closure"] = closure or (
            ClosureReason.ZONDER_PGA
            if new_state is CaseState.AFGESLOTEN_ZONDER_PGA
            else ClosureReason.AFGESLOTEN
        )
        invitations = [
            i.model_copy(update={"status": InvitationStatus.ENDED, "at": ctx.now})
            if i.status in (InvitationStatus.OPEN, InvitationStatus.ACCEPTED)
            else i
            for i in invitations
        ]
        changes["closed_at"] = ctx.now
        changes["purge_after"] = _add_years(ctx.now, ctx.policy.retention.years)
    elif new_state not in CLOSED_STATES and case.state in CLOSED_STATES:
        changes["closed_at"] = None
        changes["purge_after"] = None
        changes["closure"] = None
    return case.model_copy(
        update={
            "state": new_state,
            "participants": _sorted(participants),
            "invitations": tuple(invitations),
            "updated_at": ctx.now,
            "applied": case.with_applied(header.message_id),
            **changes,
        }
    )


def _replace(invitations: list[Invitation], new: Invitation) -> None:
    """Put ``new`` in place of the organisation's earlier invitation for the same scope.

    Only the latest one per organisation and scope decides anything (the audit trail keeps the
    history), so the case record stays bounded by the number of organisations, however often
    an invitation is sent again.
    """
    invitations[:] = [i for i in invitations if (i.org, i.scope) != (new.org, new.scope)]
    invitations.append(new)


def _sorted(orgs: Iterable[str]) -> tuple[OrgId, ...]:
    return tuple(sorted(OrgId(o) for o in set(orgs)))


def _add_years(when: dt.datetime, years: int) -> dt.datetime:
    try:
        return when.replace(year=when.year + years)
    except ValueError:  # 29 February
        return when.replace(year=when.year + years, day=28)
