"""Body contracts: the encrypted content of each message type, frozen and strict.

Every field carries its data category in its JSON Schema (``x-schakel-category``), so a
receiver can compare what a body holds with what its header declared (ENVELOPE.md section 6).
A field is either tagged with a category, or is itself a model (or a tuple of models) whose
fields are tagged. :class:`Section` is the one dynamic case: free text whose category the
sender states per section.

Register a new contract version in :data:`BODIES`; the header names ``(message_type,
contract_version)``.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any, ClassVar, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schakel.contracts.enums import (
    DataCategory,
    Decision,
    InvitationScope,
    MelderStatus,
    MessageType,
)
from schakel.contracts.errors import ContractError
from schakel.contracts.ids import OrgIdField

__all__ = [
    "BODIES",
    "CATEGORY_KEY",
    "Actie",
    "Advies",
    "Ambtsbericht",
    "AntwoordUitnodiging",
    "BesluitAfschalenAfsluiten",
    "BesluitWeging",
    "Body",
    "Casusinformatie",
    "DetentieUitstroom",
    "InformatieWeging",
    "MarInbreng",
    "MelderStatusBericht",
    "OverdrachtCasus",
    "Persoon",
    "PlanVanAanpak",
    "Section",
    "Signaal",
    "UitnodigingCasusoverleg",
    "Veiligheidsmelding",
    "VerzoekInformatieWeging",
    "Voortgang",
    "body_contract",
    "categories_of",
    "contract_categories",
    "parse_body",
    "tagged",
]

CATEGORY_KEY: Final = "x-schakel-category"
_Cat = DataCategory


def tagged(category: DataCategory, **kwargs: Any) -> Any:
    """Declare a body field together with the data category it carries."""
    return Field(json_schema_extra={CATEGORY_KEY: category.value}, **kwargs)


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Body(_Strict):
    """Base of every body contract."""

    MESSAGE_TYPE: ClassVar[MessageType]
    CONTRACT_VERSION: ClassVar[int] = 1

    def check_header(self, header_fields: dict[str, Any]) -> None:
        """Check fields that must agree with the header (override where needed).

        Raises:
            ValueError: the body contradicts the header.
        """


_SHORT = 200
_LONG = 20_000


class Persoon(_Strict):
    """The person a case is about. Identifying data; never in a header."""

    voornamen: str = tagged(_Cat.IDENTIFICEREND, min_length=1, max_length=_SHORT)
    achternaam: str = tagged(_Cat.IDENTIFICEREND, min_length=1, max_length=_SHORT)
    geboortedatum: dt.date = tagged(_Cat.IDENTIFICEREND)
    bsn: str | None = tagged(_Cat.IDENTIFICEREND, default=None, pattern=r"^\d{9}$")


class Section(_Strict):
    """Free text on one topic; the sender states the topic's data category."""

    categorie: DataCategory = tagged(_Cat.GEEN)
    titel: str = tagged(_Cat.GEEN, min_length=1, max_length=_SHORT)
    tekst: str = Field(min_length=1, max_length=_LONG)

    def own_categories(self) -> frozenset[DataCategory]:
        """The category of this section's text."""
        return frozenset({self.categorie})


class Actie(_Strict):
    """One action of a plan van aanpak, carried out by one organisation."""

    uitvoerder: OrgIdField = tagged(_Cat.GEEN)
    omschrijving: str = tagged(_Cat.IDENTIFICEREND, min_length=1, max_length=_LONG)
    termijn: dt.date | None = tagged(_Cat.GEEN, default=None)
    onderdelen: tuple[Section, ...] = Field(default=(), max_length=50)


# --- M1 .. M16 ----------------------------------------------------------------------------


class Signaal(Body):
    """M1 SIGNAAL: a signal about a person, the start (or re-opening) of a case."""

    MESSAGE_TYPE = MessageType.M1
    persoon: Persoon
    minderjarig: bool = tagged(_Cat.MINDERJARIGE)
    datum_signaal: dt.date = tagged(_Cat.GEEN)
    onderdelen: tuple[Section, ...] = Field(min_length=1, max_length=50)


class MelderStatusBericht(Body):
    """M2 MELDER_STATUS: status feedback to the melder. A status and nothing else."""

    MESSAGE_TYPE = MessageType.M2
    status: MelderStatus = tagged(_Cat.GEEN)


class VerzoekInformatieWeging(Body):
    """M3 VERZOEK_INFORMATIE_WEGING: questions to a partner for the weging."""

    MESSAGE_TYPE = MessageType.M3
    persoon: Persoon
    vragen: tuple[str, ...] = tagged(_Cat.IDENTIFICEREND, min_length=1, max_length=20)
    antwoord_voor: dt.date | None = tagged(_Cat.GEEN, default=None)


class InformatieWeging(Body):
    """M4 INFORMATIE_WEGING: a partner's answer for the weging."""

    MESSAGE_TYPE = MessageType.M4
    onderdelen: tuple[Section, ...] = Field(min_length=1, max_length=50)


class BesluitWeging(Body):
    """M5 BESLUIT_WEGING: the weegploeg's decision; the header carries the same decision."""

    MESSAGE_TYPE = MessageType.M5
    besluit: Decision = tagged(_Cat.GEEN)
    # The criminal-track flag is case metadata the header carries too (criminal_track), so
    # the gemeente that records the weegploeg's decision may send it.
    strafrechtelijk_traject: bool = tagged(_Cat.GEEN)
    motivering: str = tagged(_Cat.IDENTIFICEREND, min_length=1, max_length=_LONG)

    @model_validator(mode="after")
    def _m5_decision(self) -> BesluitWeging:
        if self.besluit not in (Decision.GEEN_PGA, Decision.MEER_INFORMATIE, Decision.OPSCHALEN):
            raise ValueError("not a weging decision")
        return self

    def check_header(self, header_fields: dict[str, Any]) -> None:
        """The header's decision and criminal flag are the body's."""
        if header_fields.get("decision") != self.besluit:
            raise ValueError("header decision differs from the body")
        if header_fields.get("criminal_track") != self.strafrechtelijk_traject:
            raise ValueError("header criminal_track differs from the body")


class UitnodigingCasusoverleg(Body):
    """M6 UITNODIGING_CASUSOVERLEG: invitation to (or withdrawal from) a casusoverleg or MAR."""

    MESSAGE_TYPE = MessageType.M6
    scope: InvitationScope = tagged(_Cat.GEEN)
    intrekking: bool = tagged(_Cat.GEEN, default=False)
    datum: dt.datetime | None = tagged(_Cat.GEEN, default=None)
    locatie: str | None = tagged(_Cat.GEEN, default=None, max_length=_SHORT)
    agenda: str | None = tagged(_Cat.GEEN, default=None, max_length=_LONG)
    geheimhouding_vereist: bool = tagged(_Cat.GEEN, default=True)

    def check_header(self, header_fields: dict[str, Any]) -> None:
        """Scope and withdrawal agree with the header's invitation and decision."""
        invitation = header_fields.get("invitation") or {}
        if invitation.get("scope") != self.scope:
            raise ValueError("header invitation scope differs from the body")
        want = Decision.INTREKKEN if self.intrekking else Decision.UITNODIGEN
        if header_fields.get("decision") != want:
            raise ValueError("header decision differs from the body")


class AntwoordUitnodiging(Body):
    """M6R ANTWOORD_UITNODIGING (design): accept or decline; acceptance signs secrecy."""

    MESSAGE_TYPE = MessageType.M6R
    geaccepteerd: bool = tagged(_Cat.GEEN)
    geheimhoudingsverklaring_getekend: bool = tagged(_Cat.GEEN)
    verklaring_versie: str | None = tagged(_Cat.GEEN, default=None, max_length=_SHORT)

    @model_validator(mode="after")
    def _secrecy(self) -> AntwoordUitnodiging:
        if self.geaccepteerd and not self.geheimhoudingsverklaring_getekend:
            raise ValueError("accepting requires the geheimhoudingsverklaring")
        return self

    def check_header(self, header_fields: dict[str, Any]) -> None:
        """The header decision says the same as the body."""
        want = Decision.ACCEPTEREN if self.geaccepteerd else Decision.WEIGEREN
        if header_fields.get("decision") != want:
            raise ValueError("header decision differs from the body")


class Casusinformatie(Body):
    """M7 CASUSINFORMATIE: case information shared among participants."""

    MESSAGE_TYPE = MessageType.M7
    onderdelen: tuple[Section, ...] = Field(min_length=1, max_length=50)


class PlanVanAanpak(Body):
    """M8 PLAN_VAN_AANPAK: the whole plan, or the part for one organisation's actions (c7)."""

    MESSAGE_TYPE = MessageType.M8
    versie: int = tagged(_Cat.GEEN, ge=1)
    doelen: tuple[str, ...] = tagged(_Cat.IDENTIFICEREND, max_length=50)
    acties: tuple[Actie, ...] = Field(min_length=1, max_length=200)

    def check_header(self, header_fields: dict[str, Any]) -> None:
        """A partial plan holds only the actions of the organisation it is for, and no goals."""
        part = header_fields.get("plan_part")
        if part is None:
            return
        if self.doelen or any(a.uitvoerder != part for a in self.acties):
            raise ValueError("partial plan holds more than the part's own actions")


class Voortgang(Body):
    """M9 VOORTGANG: progress on actions; optionally moves UITVOERING <-> MONITORING."""

    MESSAGE_TYPE = MessageType.M9
    actie_ref: str | None = tagged(_Cat.GEEN, default=None, max_length=_SHORT)
    onderdelen: tuple[Section, ...] = Field(min_length=1, max_length=50)


class BesluitAfschalenAfsluiten(Body):
    """M10 BESLUIT_AFSCHALEN_AFSLUITEN: the driehoek's decision to scale down or close."""

    MESSAGE_TYPE = MessageType.M10
    besluit: Decision = tagged(_Cat.GEEN)
    motivering: str = tagged(_Cat.IDENTIFICEREND, min_length=1, max_length=_LONG)

    @model_validator(mode="after")
    def _m10_decision(self) -> BesluitAfschalenAfsluiten:
        if self.besluit not in (Decision.AFSCHALEN, Decision.AFSLUITEN):
            raise ValueError("not an afschalen/afsluiten decision")
        return self

    def check_header(self, header_fields: dict[str, Any]) -> None:
        """The header's decision is the body's."""
        if header_fields.get("decision") != self.besluit:
            raise ValueError("header decision differs from the body")


class Veiligheidsmelding(Body):
    """M11 VEILIGHEIDSMELDING: a direct safety risk reported to the gemeente."""

    MESSAGE_TYPE = MessageType.M11
    persoon: Persoon
    urgent: bool = tagged(_Cat.GEEN)
    onderdelen: tuple[Section, ...] = Field(min_length=1, max_length=50)


class Ambtsbericht(Body):
    """M12 AMBTSBERICHT: an AIVD official report to a named function; never forwarded."""

    MESSAGE_TYPE = MessageType.M12
    kenmerk: str = tagged(_Cat.GEEN, min_length=1, max_length=_SHORT)
    persoon: Persoon | None = None
    inhoud: str = tagged(_Cat.INLICHTINGEN, min_length=1, max_length=_LONG)


class MarInbreng(Body):
    """M13 MAR_INBRENG: input for the Multidisciplinair Afstemmingsoverleg Resocialisatie."""

    MESSAGE_TYPE = MessageType.M13
    mar_datum: dt.date | None = tagged(_Cat.GEEN, default=None)
    onderdelen: tuple[Section, ...] = Field(min_length=1, max_length=50)


class DetentieUitstroom(Body):
    """M14 DETENTIE_UITSTROOM: release from detention is coming; back to the weegtafel."""

    MESSAGE_TYPE = MessageType.M14
    verwachte_uitstroom: dt.date = tagged(_Cat.IDENTIFICEREND)
    voorwaarden: tuple[str, ...] = tagged(_Cat.STRAFRECHTELIJK, default=(), max_length=50)
    onderdelen: tuple[Section, ...] = Field(default=(), max_length=50)


class Advies(Body):
    """M15 ADVIESVRAAG / ADVIES: a question or advice without any identifying data."""

    MESSAGE_TYPE = MessageType.M15
    soort: str = tagged(_Cat.GEEN, pattern=r"^(VRAAG|ADVIES)$")
    thema: str = tagged(_Cat.GEEN, min_length=1, max_length=_SHORT)
    tekst: str = tagged(_Cat.GEEN, min_length=1, max_length=_LONG)


class OverdrachtCasus(Body):
    """M16 OVERDRACHT_CASUS: the person moves; regie passes to another gemeente (c12)."""

    MESSAGE_TYPE = MessageType.M16
    nieuwe_gemeente: OrgIdField = tagged(_Cat.GEEN)
    ingangsdatum: dt.date = tagged(_Cat.GEEN)
    onderdelen: tuple[Section, ...] = Field(min_length=1, max_length=50)

    def check_header(self, header_fields: dict[str, Any]) -> None:
        """The header's handover target is the body's new gemeente."""
        if header_fields.get("handover_to") != self.nieuwe_gemeente:
            raise ValueError("header handover_to differs from the body")


BODIES: Final[dict[tuple[MessageType, int], type[Body]]] = {
    (cls.MESSAGE_TYPE, cls.CONTRACT_VERSION): cls
    for cls in (
        Signaal,
        MelderStatusBericht,
        VerzoekInformatieWeging,
        InformatieWeging,
        BesluitWeging,
        UitnodigingCasusoverleg,
        AntwoordUitnodiging,
        Casusinformatie,
        PlanVanAanpak,
        Voortgang,
        BesluitAfschalenAfsluiten,
        Veiligheidsmelding,
        Ambtsbericht,
        MarInbreng,
        DetentieUitstroom,
        Advies,
        OverdrachtCasus,
    )
}


def body_contract(message_type: MessageType, version: int) -> type[Body]:
    """Return the body contract for a message type and contract version.

    Raises:
        ContractError: no such contract.
    """
    try:
        return BODIES[(message_type, version)]
    except KeyError:
        raise ContractError(f"no contract {message_type} v{version}") from None


def parse_body(message_type: MessageType, version: int, raw: bytes) -> Body:
    """Validate JSON bytes against their contract.

    Raises:
        ContractError: the bytes do not satisfy the contract (the message names the field,
            never its value).
    """
    cls = body_contract(message_type, version)
    try:
        return cls.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ContractError(f"{message_type} body: {where}: {first['type']}") from exc


def _field_category(model: type[BaseModel], name: str) -> DataCategory | None:
    extra = model.model_fields[name].json_schema_extra
    if isinstance(extra, dict) and CATEGORY_KEY in extra:
        return DataCategory(str(extra[CATEGORY_KEY]))
    return None


def _is_empty(value: object) -> bool:
    # A false flag ("minderjarig: false") says nothing in its category.
    return value is None or value == () or value is False


def categories_of(value: BaseModel) -> frozenset[DataCategory]:
    """Return the data categories a body (or part of one) actually holds.

    A tagged field counts when it is present (not ``None``, empty or false); an untagged field must
    be a model or a tuple of models and counts for what they hold. ``geen`` is never returned.
    """
    found: set[DataCategory] = set()
    own = getattr(value, "own_categories", None)
    if callable(own):
        found |= own()
    for name in type(value).model_fields:
        item = getattr(value, name)
        if _is_empty(item):
            continue
        category = _field_category(type(value), name)
        if category is not None:
            found.add(category)
        elif isinstance(item, BaseModel):
            found |= categories_of(item)
        elif isinstance(item, tuple):
            for element in item:
                if isinstance(element, BaseModel):
                    found |= categories_of(element)
    found.discard(DataCategory.GEEN)
    return frozenset(found)


@functools.cache  # contracts are fixed classes; the hub asks once per message
def contract_categories(cls: type[BaseModel]) -> frozenset[DataCategory]:
    """Return every category a contract could hold: the most a header may declare for it."""
    found: set[DataCategory] = set()
    if hasattr(cls, "own_categories"):
        return frozenset(DataCategory) - {DataCategory.GEEN}
    for name, info in cls.model_fields.items():
        category = _field_category(cls, name)
        if category is not None:
            found.add(category)
            continue
        for arg in _model_args(info.annotation):
            found |= contract_categories(arg)
    found.discard(DataCategory.GEEN)
    return frozenset(found)


def _model_args(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _model_args(arg)]
