"""Simulated partners playing a scenario through the real hub, one step at a time.

A :class:`Step` says who sends which message type to whom about which case, and what must
happen: delivered to every recipient, refused with a reason code, or refused by the sender's own
SDK before anything is sent. :class:`ScenarioRunner` plays steps with real
:class:`~adapters.client.PartnerClient` instances and checks every outcome; the test suite
and ``make demo`` both use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from schakel.adapters.client import Delivery, PartnerClient, Refusal
from schakel.contracts.bodies import Body, categories_of
from schakel.contracts.enums import (
    CaseState,
    DataCategory,
    Decision,
    Function,
    InvitationScope,
    LegalBasis,
    MelderStatus,
    MessageType,
    OrgType,
    Purpose,
    ReasonCode,
)
from schakel.contracts.errors import ContractError, SchakelError
from schakel.contracts.examples import example_body
from schakel.contracts.header import InvitationRef, MessageDraft
from schakel.contracts.ids import (
    CaseId,
    MessageId,
    OrgId,
    case_id_for,
    new_case_id,
    new_message_id,
    org_type_of,
)
from schakel.contracts.policy import DecidedBy, Policy

__all__ = ["ScenarioFailure", "ScenarioRunner", "Step", "StepResult"]

Expectation = ReasonCode | Literal["delivered", "sdk"]


@dataclass(frozen=True, slots=True)
class Step:
    """One message in a scenario and what must happen to it."""

    sender: str
    message_type: MessageType
    to: tuple[str, ...]
    expect: Expectation = "delivered"
    case: str = "A"
    note: str = ""
    decision: Decision | None = None
    criminal_track: bool = False
    topic: DataCategory = DataCategory.IDENTIFICEREND
    status: MelderStatus = MelderStatus.ONTVANGEN
    plan_for: str | None = None
    invitation: str | None = None
    scope: InvitationScope = InvitationScope.CASUSOVERLEG
    name: str | None = None
    reply_to: str | None = None
    legal_basis: LegalBasis | None = None
    regie: str = "GEM.westerstad"
    handover_to: str | None = None
    opens: str | None = None  # the alias of the case a handover (M16) opens
    extra_decision_in_header: bool = False
    expect_state: CaseState | None = None


@dataclass(frozen=True, slots=True)
class StepResult:
    """What happened to a step."""

    step: Step
    message_id: MessageId | None
    outcome: str
    text: str = ""


class ScenarioFailure(SchakelError):
    """A step did not have the expected outcome."""


@dataclass
class _World:
    cases: dict[str, CaseId] = field(default_factory=dict)
    states: dict[str, CaseState] = field(default_factory=dict)
    regies: dict[str, str] = field(default_factory=dict)
    invitations: dict[str, MessageId] = field(default_factory=dict)
    messages: dict[str, MessageId] = field(default_factory=dict)


class ScenarioRunner:
    """Plays steps through the hub with real partner clients."""

    def __init__(
        self,
        clients: Mapping[str, PartnerClient],
        policy: Policy,
        *,
        narrate: Callable[[str], None] | None = None,
        timeout: float = 15.0,
    ) -> None:
        self._clients = clients
        self._policy = policy
        self._narrate = narrate or (lambda _: None)
        self._timeout = timeout
        self._world = _World()
        self.results: list[StepResult] = []

    def case_id(self, alias: str) -> CaseId:
        """The case id behind an alias: the id its opening signal derived, or (for an alias
        no signal opened) a fresh one that names no case."""
        return self._world.cases.setdefault(alias, new_case_id())

    def believed_state(self, alias: str) -> CaseState | None:
        """The state the simulated partners believe the case is in."""
        return self._world.states.get(alias)

    async def run(self, steps: Sequence[Step]) -> list[StepResult]:
        """Play every step, in order; raise :class:`ScenarioFailure` at the first surprise."""
        for step in steps:
            self.results.append(await self.play(step))
        return self.results

    def _body_and_draft(self, step: Step) -> tuple[Body, MessageDraft]:
        world, policy = self._world, self._policy
        rule = policy.rule(step.message_type)
        decision = step.decision
        if step.message_type is MessageType.M6 and decision is None:
            decision = Decision.UITNODIGEN
        if step.message_type is MessageType.M6R and decision is None:
            decision = Decision.ACCEPTEREN
        body = example_body(
            step.message_type,
            decision=decision,
            plan_for=OrgId(step.plan_for) if step.plan_for else None,
            topic=step.topic,
            status=step.status,
            scope=step.scope,
        )
        fields: dict[str, object] = {}
        if step.message_type is MessageType.M1:
            fields["regie_gemeente"] = step.regie
        if decision is not None and (
            step.message_type in policy.decisions or step.extra_decision_in_header
        ):
            fields["decision"] = decision
        if step.message_type is MessageType.M5:
            fields["criminal_track"] = step.criminal_track
            body = body.model_copy(update={"strafrechtelijk_traject": step.criminal_track})
        if step.invitation is not None:
            if step.message_type is MessageType.M6 and decision is Decision.UITNODIGEN:
                world.invitations[step.invitation] = new_message_id()
            fields["invitation"] = InvitationRef(
                id=world.invitations[step.invitation], scope=step.scope
            )
        if step.plan_for:
            fields["plan_part"] = step.plan_for
        if step.handover_to:
            fields["handover_to"] = step.handover_to
            body = body.model_copy(update={"nieuwe_gemeente": step.handover_to})
        if step.message_type is MessageType.M12:
            fields["function"] = Function.BURGEMEESTER
        if step.reply_to:
            fields["in_reply_to"] = world.messages[step.reply_to]
        with_case = rule.case == "required" or step.case.startswith("attach:")
        alias = step.case.removeprefix("attach:")
        purposes = sorted(rule.purposes)
        purpose = (
            Purpose.MAR_RESOCIALISATIE
            if step.scope is InvitationScope.MAR and Purpose.MAR_RESOCIALISATIE in purposes
            else purposes[0]
        )
        state = world.states.get(alias, CaseState.SIGNAAL_ONTVANGEN)
        draft = MessageDraft.model_validate(
            {
                "case_id": self.case_id(alias) if with_case else None,
                "step": state if with_case else None,
                "purpose": purpose,
                "legal_basis": step.legal_basis or self._legal_basis(step, body),
                "no_forward": rule.force_no_forward,
                **fields,
            }
        )
        return body, draft

    def _legal_basis(self, step: Step, body: Body) -> LegalBasis:
        sender_type = org_type_of(step.sender)
        held = categories_of(body)
        for basis in self._policy.legal_bases:
            if not self._policy.legal_basis_allowed(basis, sender_type, step.message_type):
                continue
            restricted = [self._policy.categories.get(c) for c in held]
            if all(
                r is None or r.legal_bases is None or basis in r.legal_bases for r in restricted
            ):
                return basis
        return LegalBasis.WGP_PGA

    async def play(self, step: Step) -> StepResult:
        """Play one step and check its outcome."""
        client = self._clients[step.sender]
        message_id = new_message_id()
        alias = step.case.removeprefix("attach:")
        if step.message_type is MessageType.M1 and alias not in self._world.cases:
            # A new signal opens its own case: the id follows from the message id.
            self._world.cases[alias] = case_id_for(message_id)
        if step.message_type is MessageType.M16 and step.opens and step.expect == "delivered":
            self._world.cases[step.opens] = case_id_for(message_id)
        body, draft = self._body_and_draft(step)
        label = (
            f"{step.sender} -> {', '.join(step.to)}: {step.message_type} "
            f"{step.message_type.title}" + (f" ({step.note})" if step.note else "")
        )
        if step.expect == "sdk":
            try:
                await client.send(body, draft, [OrgId(o) for o in step.to], message_id=message_id)
            except ContractError as exc:
                self._narrate(f"  {'refused by the sender SDK':<31}{label}: {exc}")
                return StepResult(step, None, "sdk")
            raise ScenarioFailure(f"{label}: the SDK sent a message it should refuse")
        message_id = await client.send(
            body, draft, [OrgId(o) for o in step.to], message_id=message_id
        )
        if step.name:
            self._world.messages[step.name] = message_id
        if step.expect == "delivered":
            for org in step.to:
                item = await self._clients[org].receive(timeout=self._timeout)
                if not isinstance(item, Delivery) or item.message_id != message_id:
                    raise ScenarioFailure(f"{label}: {org} got {item!r} instead of the message")
                await item.ack()
            self._advance(step)
            self._narrate(f"  {'delivered':<31}{label}")
            result = StepResult(step, message_id, "delivered")
        else:
            item = await client.receive(timeout=self._timeout)
            if not isinstance(item, Refusal) or item.notice.message_id != message_id:
                raise ScenarioFailure(f"{label}: expected refusal {step.expect}, got {item!r}")
            await item.ack()
            if item.notice.reason != step.expect:
                raise ScenarioFailure(
                    f"{label}: refused with {item.notice.reason}, expected {step.expect}"
                )
            self._narrate(f"  refused {item.notice.reason:<23}{label}")
            result = StepResult(step, message_id, item.notice.reason.value, item.notice.text)
        if step.expect_state is not None and self._world.states.get(step.case) != step.expect_state:
            raise ScenarioFailure(f"{label}: case should now be {step.expect_state}")
        return result

    def _advance(self, step: Step) -> None:
        """Track the state the partners believe the case is in (for the header's ``step``)."""
        rule = self._policy.rule(step.message_type)
        if rule.case != "required":
            return
        current = self._world.states.get(step.case)
        if current is None:
            self._world.states[step.case] = CaseState.SIGNAAL_ONTVANGEN
            self._world.regies[step.case] = step.regie
            return
        decision = step.decision
        transition = self._policy.transition(
            step.message_type, decision, current, org_type_of(step.sender)
        )
        regie = self._world.regies.get(step.case, step.regie)
        deciders = {
            DecidedBy.REGIE_GEMEENTE: step.sender == regie,
            # the regie-gemeente or its region's ZVH (the scenarios have one ZVH per region)
            DecidedBy.PROCESREGIE: step.sender == regie or org_type_of(step.sender) is OrgType.ZVH,
            DecidedBy.SENDER: True,
        }
        if transition is not None and deciders[transition.decided_by]:
            self._world.states[step.case] = transition.to
        if step.message_type is MessageType.M16 and step.opens and step.handover_to:
            self._world.states[step.opens] = CaseState.INTAKE
            self._world.regies[step.opens] = step.handover_to

    async def assert_quiet(self, seconds: float = 0.3) -> None:
        """Check that no partner has anything left to receive (every partner waits
        ``seconds`` at once, not one after the other)."""
        orgs = list(self._clients)
        items = await asyncio.gather(*(self._clients[o].receive(timeout=seconds) for o in orgs))
        for org, item in zip(orgs, items, strict=True):
            if item is not None:
                raise ScenarioFailure(f"{org} received something unexpected: {item!r}")
