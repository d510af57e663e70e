"""One valid example body per message type, with fictitious data.

Used by the test suite, the known-answer vectors, the benchmark and the demo. The person is
invented; ``canary`` lets a test plant a unique marker in the content and then search for it
everywhere the hub might have leaked it.
"""

from __future__ import annotations

import datetime as dt

from schakel.contracts.bodies import (
    Actie,
    Advies,
    Ambtsbericht,
    AntwoordUitnodiging,
    BesluitAfschalenAfsluiten,
    BesluitWeging,
    Body,
    Casusinformatie,
    DetentieUitstroom,
    InformatieWeging,
    MarInbreng,
    MelderStatusBericht,
    OverdrachtCasus,
    Persoon,
    PlanVanAanpak,
    Section,
    Signaal,
    UitnodigingCasusoverleg,
    Veiligheidsmelding,
    VerzoekInformatieWeging,
    Voortgang,
)
from schakel.contracts.enums import (
    CaseState,
    DataCategory,
    Decision,
    Function,
    HeaderField,
    InvitationScope,
    LegalBasis,
    MelderStatus,
    MessageType,
)
from schakel.contracts.header import InvitationRef, MessageDraft
from schakel.contracts.ids import CaseId, MessageId, OrgId, new_case_id
from schakel.contracts.policy import default_policy

__all__ = ["example_body", "example_draft", "example_person", "section"]

_REGIE = OrgId("GEM.westerstad")


def example_person(canary: str = "") -> Persoon:
    """A fictitious person (born 2009, so a minor in 2026)."""
    return Persoon(
        voornamen=f"Noor{canary}",
        achternaam="van Fictief",
        geboortedatum=dt.date(2009, 4, 1),
        bsn="123456782",
    )


def section(category: DataCategory, text: str, title: str = "Waarneming") -> Section:
    """A free-text section in one data category."""
    return Section(categorie=category, titel=title, tekst=text)


def _sections(category: DataCategory, text: str) -> tuple[Section, ...]:
    step = 16_000
    return tuple(section(category, text[i : i + step]) for i in range(0, len(text), step))


def example_body(
    message_type: MessageType,
    *,
    canary: str = "",
    plan_for: OrgId | None = None,
    decision: Decision | None = None,
    size: int = 0,
    topic: DataCategory = DataCategory.IDENTIFICEREND,
    status: MelderStatus = MelderStatus.ONTVANGEN,
    scope: InvitationScope = InvitationScope.CASUSOVERLEG,
) -> Body:
    """A valid body of ``message_type``; ``size`` pads the free text to about that many bytes."""
    text = f"Fictieve tekst {canary}".ljust(max(size, 1), ".")
    person = example_person(canary)
    cat = DataCategory
    if message_type is MessageType.M1:
        return Signaal(
            persoon=person,
            minderjarig=True,
            datum_signaal=dt.date(2026, 11, 2),
            onderdelen=_sections(cat.RELIGIE_LEVENSOVERTUIGING, text),
        )
    if message_type is MessageType.M2:
        return MelderStatusBericht(status=status)
    if message_type is MessageType.M3:
        return VerzoekInformatieWeging(persoon=person, vragen=(f"Is betrokkene bekend? {text}",))
    if message_type is MessageType.M4:
        return InformatieWeging(onderdelen=_sections(topic, text))
    if message_type is MessageType.M5:
        return BesluitWeging(
            besluit=decision or Decision.OPSCHALEN,
            strafrechtelijk_traject=False,
            motivering=text,
        )
    if message_type is MessageType.M6:
        return UitnodigingCasusoverleg(
            scope=scope,
            intrekking=decision is Decision.INTREKKEN,
            datum=dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC),
            locatie="Stadhuis, zaal 3",
            agenda=text,
        )
    if message_type is MessageType.M6R:
        accept = decision is not Decision.WEIGEREN
        return AntwoordUitnodiging(
            geaccepteerd=accept,
            geheimhoudingsverklaring_getekend=accept,
            verklaring_versie="2026-1" if accept else None,
        )
    if message_type is MessageType.M7:
        return Casusinformatie(onderdelen=_sections(topic, text))
    if message_type is MessageType.M8:
        owner = plan_for or OrgId("ZVH.west")
        return PlanVanAanpak(
            versie=1,
            doelen=() if plan_for else ("Toeleiding naar school en begeleiding",),
            acties=(Actie(uitvoerder=owner, omschrijving=text, termijn=dt.date(2027, 1, 15)),),
        )
    if message_type is MessageType.M9:
        return Voortgang(actie_ref="A1", onderdelen=_sections(topic, text))
    if message_type is MessageType.M10:
        return BesluitAfschalenAfsluiten(besluit=decision or Decision.AFSLUITEN, motivering=text)
    if message_type is MessageType.M11:
        return Veiligheidsmelding(persoon=person, urgent=True, onderdelen=_sections(topic, text))
    if message_type is MessageType.M12:
        return Ambtsbericht(kenmerk="AB-2026-001", persoon=person, inhoud=text)
    if message_type is MessageType.M13:
        return MarInbreng(mar_datum=dt.date(2026, 12, 10), onderdelen=_sections(topic, text))
    if message_type is MessageType.M14:
        return DetentieUitstroom(
            verwachte_uitstroom=dt.date(2027, 3, 1),
            onderdelen=_sections(topic, text),
        )
    if message_type is MessageType.M15:
        return Advies(soort="VRAAG", thema="Online radicalisering jongeren", tekst=text)
    if message_type is MessageType.M16:
        return OverdrachtCasus(
            nieuwe_gemeente=OrgId("GEM.oosterdorp"),
            ingangsdatum=dt.date(2027, 2, 1),
            onderdelen=_sections(topic, text),
        )
    raise AssertionError(message_type)  # pragma: no cover - every type is handled above


def example_draft(
    message_type: MessageType,
    body: Body,
    *,
    case_id: CaseId | None = None,
    regie: OrgId = _REGIE,
) -> MessageDraft:
    """A draft whose header fields satisfy the policy's per-type rules for ``body``."""
    rule = default_policy().rule(message_type)
    fields: dict[str, object] = {}
    required = rule.required_fields
    if HeaderField.REGIE_GEMEENTE in required:
        fields["regie_gemeente"] = regie
    if HeaderField.DECISION in required:
        fields["decision"] = _decision_of(body)
    if HeaderField.CRIMINAL_TRACK in required:
        fields["criminal_track"] = getattr(body, "strafrechtelijk_traject", False)
    if HeaderField.INVITATION in required:
        fields["invitation"] = InvitationRef(
            id=MessageId("00000000-0000-4000-8000-000000000006"),
            scope=getattr(body, "scope", InvitationScope.CASUSOVERLEG),
        )
    if HeaderField.HANDOVER_TO in required:
        fields["handover_to"] = getattr(body, "nieuwe_gemeente", None)
    if HeaderField.FUNCTION in required:
        fields["function"] = Function.BURGEMEESTER
    with_case = rule.case == "required"
    return MessageDraft.model_validate(
        {
            # A new signal's case id is derived from its message id when it is sealed.
            "case_id": (case_id if case_id or rule.creates_case else new_case_id())
            if with_case
            else None,
            "step": (
                (CaseState.SIGNAAL_ONTVANGEN if rule.creates_case else min(rule.states))
                if with_case
                else None
            ),
            "purpose": min(rule.purposes),
            "legal_basis": LegalBasis.WGP_PGA,
            "no_forward": rule.force_no_forward,
            **fields,
        }
    )


def _decision_of(body: Body) -> Decision:
    besluit = getattr(body, "besluit", None)
    if isinstance(besluit, Decision):
        return besluit
    if hasattr(body, "intrekking"):
        return Decision.INTREKKEN if body.intrekking else Decision.UITNODIGEN
    if hasattr(body, "geaccepteerd"):
        return Decision.ACCEPTEREN if body.geaccepteerd else Decision.WEIGEREN
    raise ValueError(f"{body.MESSAGE_TYPE} carries no decision")
