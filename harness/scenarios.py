"""The acceptance scenarios of PROCESS.md as data: who sends what, and what must happen.

Partners: RvdK noord, ZVH west, gemeente Westerstad (regie), politie west, OM west, IND, KMar,
Reclassering TER, DJI Vught, AIVD, LIV, LSE, a school (EXT) and the NCTV adviser.
"""

from __future__ import annotations

from dataclasses import dataclass

from schakel.contracts.enums import CaseState, DataCategory, Decision, InvitationScope, MelderStatus
from schakel.contracts.enums import MessageType as M
from schakel.contracts.enums import ReasonCode as R
from schakel.contracts.ids import CaseId
from schakel.harness.simulation import ScenarioRunner, Step

__all__ = [
    "AIVD",
    "DJI",
    "GEM",
    "IND",
    "KERN_OF_WEST",
    "KMAR",
    "LIV",
    "LSE",
    "OM",
    "PARTNERS",
    "POL",
    "RN",
    "RVDK",
    "SCENARIOS",
    "SCHOOL",
    "ZVH",
    "Scenario",
    "open_cases",
]

RVDK, ZVH, GEM, POL, OM = "RVDK.noord", "ZVH.west", "GEM.westerstad", "POL.west", "OM.west"
IND, KMAR, RN, DJI, AIVD = "IND.landelijk", "KMAR.landelijk", "RN.ter", "DJI.vught", "AIVD.nl"
LIV, LSE, SCHOOL = "LIV.landelijk", "LSE.nl", "EXT.school-west"
PARTNERS = (RVDK, ZVH, GEM, POL, OM, IND, KMAR, RN, DJI, AIVD, LIV, LSE, SCHOOL)
KERN_OF_WEST = (ZVH, POL, OM)


@dataclass(frozen=True, slots=True)
class Scenario:
    """A numbered acceptance scenario."""

    number: int
    title: str
    steps: tuple[Step, ...]


def _escalate(case: str, melder: str = POL) -> tuple[Step, ...]:
    """A police signal escalated to a casusoverleg: the set-up several scenarios share."""
    return (
        Step(melder, M.M1, (GEM, ZVH), case=case, note="signal"),
        Step(ZVH, M.M3, (OM,), case=case, expect_state=CaseState.WEGING),
        Step(GEM, M.M5, KERN_OF_WEST, case=case, decision=Decision.OPSCHALEN,
             expect_state=CaseState.CASUSOVERLEG),
    )  # fmt: skip


SCENARIO_1 = Scenario(
    1,
    "RvdK signal, escalation, IND invited, closure",
    (
        Step(RVDK, M.M1, (ZVH,), note="minor, religion",
             topic=DataCategory.RELIGIE_LEVENSOVERTUIGING,
             expect_state=CaseState.SIGNAAL_ONTVANGEN),
        Step(ZVH, M.M2, (RVDK,), status=MelderStatus.ONTVANGEN, note="status ONTVANGEN",
             expect_state=CaseState.INTAKE),
        Step(ZVH, M.M2, (RVDK,), decision=Decision.OPSCHALEN, extra_decision_in_header=True,
             expect=R.HEADER_FIELDS_INVALID, note="M2 with another field: the decision"),
        Step(ZVH, M.M3, (POL, OM), note="questions for the weging", expect_state=CaseState.WEGING),
        Step(POL, M.M4, (ZVH,), topic=DataCategory.STRAFRECHTELIJK, note="strafrechtelijk"),
        Step(RVDK, M.M4, (ZVH,), topic=DataCategory.STRAFRECHTELIJK, expect=R.CATEGORY_NOT_ALLOWED,
             note="RvdK may not send strafrechtelijk"),
        Step(GEM, M.M5, (ZVH, POL, OM), decision=Decision.OPSCHALEN, note="opschalen",
             expect_state=CaseState.CASUSOVERLEG),
        Step(GEM, M.M5, (RVDK,), decision=Decision.OPSCHALEN, expect=R.NOT_PERMITTED,
             note="a weging decision to the RvdK"),
        Step(ZVH, M.M6, (POL, OM, RVDK, IND), invitation="co", note="invitation casusoverleg"),
        Step(IND, M.M6R, (ZVH,), invitation="co", note="IND accepts, signs secrecy"),
        Step(IND, M.M7, (ZVH, GEM), topic=DataCategory.VERBLIJFSRECHTELIJK,
             note="verblijfsrechtelijk"),
        Step(ZVH, M.M8, (GEM, POL, OM, IND), expect=R.NOT_PERMITTED, note="full plan to IND"),
        Step(ZVH, M.M8, (IND,), plan_for=IND, note="IND's own part of the plan",
             expect_state=CaseState.PLAN_VAN_AANPAK),
        Step(GEM, M.M10, (ZVH, POL, OM, IND), decision=Decision.AFSLUITEN, note="afsluiten",
             expect_state=CaseState.AFGESLOTEN),
        Step(ZVH, M.M2, (RVDK,), status=MelderStatus.AFGEHANDELD, note="status AFGEHANDELD"),
        Step(ZVH, M.M2, (RVDK,), status=MelderStatus.AFGEHANDELD, decision=Decision.AFSLUITEN,
             extra_decision_in_header=True, expect=R.HEADER_FIELDS_INVALID,
             note="M2 carrying the decision"),
        Step(IND, M.M7, (ZVH,), expect=R.NOT_PERMITTED, note="former invitee after closure"),
    ),
)  # fmt: skip

SCENARIO_2 = Scenario(
    2,
    "Not invited",
    (
        *_escalate("A"),
        *_escalate("B"),
        Step(ZVH, M.M6, (RN,), case="B", invitation="b", note="RN invited to case B"),
        Step(RN, M.M6R, (ZVH,), case="B", invitation="b"),
        Step(KMAR, M.M1, (ZVH,), case="A", expect=R.NOT_PERMITTED, note="KMar on case A"),
        Step(KMAR, M.M4, (ZVH,), case="A", expect=R.NOT_PERMITTED, note="KMar answers on A"),
        Step(KMAR, M.M4, (ZVH,), case="GHOST", expect=R.NOT_PERMITTED,
             note="KMar on a case that does not exist"),
        Step(KMAR, M.M7, (ZVH,), case="A", expect=R.NOT_PERMITTED, note="KMar case info on A"),
        Step(RN, M.M7, (ZVH,), case="A", expect=R.NOT_PERMITTED, note="RN, invited to B, on A"),
        Step(RN, M.M7, (ZVH,), case="B", note="RN on its own case B"),
        Step(ZVH, M.M7, (AIVD,), case="A", expect=R.NOT_PERMITTED, note="AIVD never receives"),
    ),
)  # fmt: skip

SCENARIO_3 = Scenario(
    3,
    "Citizen signal, no radicalisation",
    (
        Step(GEM, M.M1, (ZVH,), note="the gemeente enters a citizen's signal"),
        Step(GEM, M.M3, (POL,), expect_state=CaseState.WEGING),
        Step(GEM, M.M5, (ZVH, POL, OM), decision=Decision.GEEN_PGA, note="geen actie",
             expect_state=CaseState.AFGESLOTEN_ZONDER_PGA),
        Step(ZVH, M.M6, (POL, OM), invitation="x", expect=R.STATE_NOT_ALLOWED,
             note="M6 on a case closed without PGA"),
    ),
)  # fmt: skip

SCENARIO_4 = Scenario(
    4,
    "Police signal, more information, criminal track",
    (
        Step(POL, M.M1, (GEM, ZVH), note="police signal"),
        Step(ZVH, M.M3, (OM,), expect_state=CaseState.WEGING),
        Step(GEM, M.M5, (ZVH, POL, OM), decision=Decision.MEER_INFORMATIE,
             expect_state=CaseState.MEER_INFORMATIE),
        Step(GEM, M.M3, (OM,), note="more information from OM"),
        Step(GEM, M.M3, (SCHOOL,), expect=R.NOT_PERMITTED, note="M3 to a school"),
        Step(GEM, M.M5, (ZVH, POL, OM), decision=Decision.OPSCHALEN, criminal_track=True,
             note="opschalen, criminal track (OM)", expect_state=CaseState.CASUSOVERLEG),
    ),
)  # fmt: skip

SCENARIO_5 = Scenario(
    5,
    "Ambtsbericht",
    (
        *_escalate("A"),
        Step(AIVD, M.M12, (GEM,), name="ab", note="to the burgemeester, no_forward"),
        Step(AIVD, M.M12, (GEM,), case="attach:A", expect=R.HEADER_FIELDS_INVALID,
             note="attached to a case"),
        Step(GEM, M.M7, (POL,), case="A", reply_to="ab", expect=R.NOT_PERMITTED,
             note="forwarding the ambtsbericht"),
        Step(GEM, M.M15, (AIVD,), expect=R.NOT_PERMITTED, note="anything to AIVD"),
        Step(GEM, M.M12, (POL,), expect=R.NOT_PERMITTED, note="the gemeente sending M12"),
    ),
)  # fmt: skip

SCENARIO_6 = Scenario(
    6,
    "Detention and MAR",
    (
        *_escalate("A"),
        Step(GEM, M.M13, (DJI, RN), note="gemeente brings DJI and RN in"),
        Step(DJI, M.M13, (GEM, RN), expect_state=CaseState.DETENTIE, note="detention"),
        Step(RN, M.M13, (GEM, DJI)),
        Step(POL, M.M13, (GEM,), expect=R.NOT_PERMITTED, note="police without MAR invitation"),
        Step(GEM, M.M6, (POL,), invitation="mar", scope=InvitationScope.MAR, note="MAR invitation"),
        Step(POL, M.M6R, (GEM,), invitation="mar", scope=InvitationScope.MAR),
        Step(POL, M.M13, (GEM, DJI), note="police with MAR invitation"),
        Step(DJI, M.M14, (GEM, LSE), expect=R.NOT_PERMITTED, note="release notice to LSE"),
        Step(DJI, M.M14, (GEM, POL), note="release notice", expect_state=CaseState.WEGING),
    ),
)  # fmt: skip

SCENARIO_7 = Scenario(
    7,
    "Veiligheidsmelding",
    (
        Step(LIV, M.M11, (GEM,), note="to the gemeente"),
        Step(LIV, M.M11, (POL,), expect=R.NOT_PERMITTED, note="to the police directly"),
    ),
)

SCENARIOS = {
    s.number: s
    for s in (SCENARIO_1, SCENARIO_2, SCENARIO_3, SCENARIO_4, SCENARIO_5, SCENARIO_6, SCENARIO_7)
}


async def open_cases(runner: ScenarioRunner, aliases: list[str]) -> list[CaseId]:
    """Open a case per alias and bring it to CASUSOVERLEG (a signal from the politie, the
    ZVH's weging, the gemeente's escalation): the cases the benchmark and the fault and
    share tests send case information about. Their ids, in order."""
    for alias in aliases:
        await runner.run([
            Step(POL, M.M1, (GEM, ZVH), case=alias),
            Step(ZVH, M.M3, (OM,), case=alias),
            Step(GEM, M.M5, (ZVH, POL, OM), case=alias, decision=Decision.OPSCHALEN),
        ])  # fmt: skip
    return [runner.case_id(alias) for alias in aliases]
