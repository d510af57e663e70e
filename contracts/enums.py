"""Closed lists: every code that crosses the wire or lands in the audit trail.

Adding a value is a contract change: bump the format or contract version and regenerate the
JSON Schemas (``python -m contracts.schema``).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "REASON_TEXTS",
    "CaseState",
    "DataCategory",
    "Decision",
    "Function",
    "HeaderField",
    "InvitationScope",
    "LegalBasis",
    "MelderStatus",
    "MessageType",
    "OrgType",
    "Purpose",
    "ReasonCode",
]


class OrgType(StrEnum):
    """Partner organisation types of PROCESS.md."""

    GEM = "GEM"
    ZVH = "ZVH"
    POL = "POL"
    OM = "OM"
    RVDK = "RVDK"
    RN = "RN"
    DJI = "DJI"
    AIVD = "AIVD"
    NCTV = "NCTV"
    IND = "IND"
    KMAR = "KMAR"
    LSE = "LSE"
    ESS = "ESS"
    LIV = "LIV"
    DTV = "DTV"
    EXT = "EXT"
    HUB = "HUB"  # the hub itself: signs refusal notices, never sends or receives case traffic


class CaseState(StrEnum):
    """States of a case (PROCESS.md, "States of a case")."""

    SIGNAAL_ONTVANGEN = "SIGNAAL_ONTVANGEN"
    INTAKE = "INTAKE"
    WEGING = "WEGING"
    MEER_INFORMATIE = "MEER_INFORMATIE"
    AFGESLOTEN_ZONDER_PGA = "AFGESLOTEN_ZONDER_PGA"
    CASUSOVERLEG = "CASUSOVERLEG"
    PLAN_VAN_AANPAK = "PLAN_VAN_AANPAK"
    UITVOERING = "UITVOERING"
    MONITORING = "MONITORING"
    AFSCHALEN = "AFSCHALEN"
    AFGESLOTEN = "AFGESLOTEN"
    DETENTIE = "DETENTIE"
    VERNIETIGD = "VERNIETIGD"


class MessageType(StrEnum):
    """Message types M1-M16 of PROCESS.md, plus M6R, the answer to an invitation (design)."""

    M1 = "M1"
    M2 = "M2"
    M3 = "M3"
    M4 = "M4"
    M5 = "M5"
    M6 = "M6"
    M6R = "M6R"
    M7 = "M7"
    M8 = "M8"
    M9 = "M9"
    M10 = "M10"
    M11 = "M11"
    M12 = "M12"
    M13 = "M13"
    M14 = "M14"
    M15 = "M15"
    M16 = "M16"

    @property
    def title(self) -> str:  # type: ignore[override]
        """The Dutch name of the message type."""
        return _TITLES[self]


_TITLES = {
    MessageType.M1: "SIGNAAL",
    MessageType.M2: "MELDER_STATUS",
    MessageType.M3: "VERZOEK_INFORMATIE_WEGING",
    MessageType.M4: "INFORMATIE_WEGING",
    MessageType.M5: "BESLUIT_WEGING",
    MessageType.M6: "UITNODIGING_CASUSOVERLEG",
    MessageType.M6R: "ANTWOORD_UITNODIGING",
    MessageType.M7: "CASUSINFORMATIE",
    MessageType.M8: "PLAN_VAN_AANPAK",
    MessageType.M9: "VOORTGANG",
    MessageType.M10: "BESLUIT_AFSCHALEN_AFSLUITEN",
    MessageType.M11: "VEILIGHEIDSMELDING",
    MessageType.M12: "AMBTSBERICHT",
    MessageType.M13: "MAR_INBRENG",
    MessageType.M14: "DETENTIE_UITSTROOM",
    MessageType.M15: "ADVIESVRAAG_ADVIES",
    MessageType.M16: "OVERDRACHT_CASUS",
}


class Purpose(StrEnum):
    """Purpose codes (doelbinding), one on every message."""

    MELDPUNT_HULP = "MELDPUNT_HULP"
    WEGING = "WEGING"
    CASUSOVERLEG_RISICO_EN_INTERVENTIE = "CASUSOVERLEG_RISICO_EN_INTERVENTIE"
    UITVOERING_INTERVENTIE = "UITVOERING_INTERVENTIE"
    MAR_RESOCIALISATIE = "MAR_RESOCIALISATIE"
    ADVIES = "ADVIES"
    VERANTWOORDING = "VERANTWOORDING"


class LegalBasis(StrEnum):
    """Legal-basis codes (design: the list a privacy officer confirms; see policy.toml)."""

    WGP_PGA = "WGP_PGA"
    CONVENANT_PGA_2017 = "CONVENANT_PGA_2017"
    WPG_ART19_MACHTIGINGSBESLUIT = "WPG_ART19_MACHTIGINGSBESLUIT"
    WJSG_STRAFVORDERLIJK = "WJSG_STRAFVORDERLIJK"
    PBW_DETENTIE = "PBW_DETENTIE"
    VW2000_GEGEVENSVERSTREKKING = "VW2000_GEGEVENSVERSTREKKING"
    BW1_KINDERBESCHERMING = "BW1_KINDERBESCHERMING"
    WIV2017_AMBTSBERICHT = "WIV2017_AMBTSBERICHT"
    WCAT_NCTV = "WCAT_NCTV"
    AVG_9_2_A_TOESTEMMING = "AVG_9_2_A_TOESTEMMING"
    GEHEIMHOUDINGSVERKLARING = "GEHEIMHOUDINGSVERKLARING"
    GEEN_PERSOONSGEGEVENS = "GEEN_PERSOONSGEGEVENS"


class DataCategory(StrEnum):
    """Data categories a message declares and a body field is tagged with."""

    GEEN = "geen"
    IDENTIFICEREND = "identificerend"
    STRAFRECHTELIJK = "strafrechtelijk"
    RELIGIE_LEVENSOVERTUIGING = "bijzonder:religie_levensovertuiging"
    POLITIEK = "bijzonder:politiek"
    GEZONDHEID = "bijzonder:gezondheid"
    MINDERJARIGE = "minderjarige"
    NETWERK_DERDEN = "netwerk_derden"
    INLICHTINGEN = "inlichtingen"
    VERBLIJFSRECHTELIJK = "verblijfsrechtelijk"


class Decision(StrEnum):
    """Decision values carried in the header of decision messages."""

    # M5 BESLUIT_WEGING
    GEEN_PGA = "GEEN_PGA"
    MEER_INFORMATIE = "MEER_INFORMATIE"
    OPSCHALEN = "OPSCHALEN"
    # M6 UITNODIGING_CASUSOVERLEG
    UITNODIGEN = "UITNODIGEN"
    INTREKKEN = "INTREKKEN"
    # M6R ANTWOORD_UITNODIGING
    ACCEPTEREN = "ACCEPTEREN"
    WEIGEREN = "WEIGEREN"
    # M9 VOORTGANG
    NAAR_MONITORING = "NAAR_MONITORING"
    NAAR_UITVOERING = "NAAR_UITVOERING"
    # M10 BESLUIT_AFSCHALEN_AFSLUITEN
    AFSCHALEN = "AFSCHALEN"
    AFSLUITEN = "AFSLUITEN"


class MelderStatus(StrEnum):
    """The only content of M2: status feedback to the melder."""

    ONTVANGEN = "ONTVANGEN"
    IN_BEHANDELING = "IN_BEHANDELING"
    AFGEHANDELD = "AFGEHANDELD"
    DOORVERWEZEN = "DOORVERWEZEN"


class InvitationScope(StrEnum):
    """What an invitation admits a partner to."""

    CASUSOVERLEG = "CASUSOVERLEG"
    MAR = "MAR"


class Function(StrEnum):
    """Named functions a message can be addressed to (c9)."""

    BURGEMEESTER = "BURGEMEESTER"


class HeaderField(StrEnum):
    """Optional header fields whose presence the policy prescribes per message type."""

    REGIE_GEMEENTE = "regie_gemeente"
    DECISION = "decision"
    CRIMINAL_TRACK = "criminal_track"
    INVITATION = "invitation"
    PLAN_PART = "plan_part"
    HANDOVER_TO = "handover_to"
    FUNCTION = "function"


class ReasonCode(StrEnum):
    """Why the hub refused a message. Closed list; texts in :data:`REASON_TEXTS`."""

    MALFORMED = "MALFORMED"
    TOO_LARGE = "TOO_LARGE"
    UNSUPPORTED_FORMAT = "UNSUPPORTED_FORMAT"
    DUPLICATE = "DUPLICATE"
    EXPIRED = "EXPIRED"
    NOT_YET_VALID = "NOT_YET_VALID"
    LIFETIME_TOO_LONG = "LIFETIME_TOO_LONG"
    SENDER_MISMATCH = "SENDER_MISMATCH"
    UNKNOWN_KEY = "UNKNOWN_KEY"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    KEY_REVOKED = "KEY_REVOKED"
    KEY_EXPIRED = "KEY_EXPIRED"
    RECIPIENT_KEY_STALE = "RECIPIENT_KEY_STALE"
    HEADER_FIELDS_INVALID = "HEADER_FIELDS_INVALID"
    NOT_PERMITTED = "NOT_PERMITTED"
    STATE_NOT_ALLOWED = "STATE_NOT_ALLOWED"
    PURPOSE_NOT_ALLOWED = "PURPOSE_NOT_ALLOWED"
    LEGAL_BASIS_NOT_ALLOWED = "LEGAL_BASIS_NOT_ALLOWED"
    CATEGORY_NOT_ALLOWED = "CATEGORY_NOT_ALLOWED"
    CONFLICT = "CONFLICT"
    BACKLOG_FULL = "BACKLOG_FULL"
    UNDELIVERABLE = "UNDELIVERABLE"
    UNDELIVERED_EXPIRED = "UNDELIVERED_EXPIRED"
    HEADER_NOT_ALLOWED = "HEADER_NOT_ALLOWED"
    SENDER_QUOTA = "SENDER_QUOTA"
    RATE_LIMITED = "RATE_LIMITED"
    PROCESSING_FAILED = "PROCESSING_FAILED"


REASON_TEXTS: dict[ReasonCode, str] = {
    ReasonCode.MALFORMED: "The envelope or its header does not follow the wire format.",
    ReasonCode.TOO_LARGE: "The envelope exceeds the size limit.",
    ReasonCode.UNSUPPORTED_FORMAT: "Unknown envelope format, crypto suite or contract version.",
    ReasonCode.DUPLICATE: "A message with this id was already accepted.",
    ReasonCode.EXPIRED: "The message expired before the hub could route it.",
    ReasonCode.NOT_YET_VALID: "The message was created in the future; check the sender's clock.",
    ReasonCode.LIFETIME_TOO_LONG: "The expiry lies further ahead than the policy allows.",
    ReasonCode.SENDER_MISMATCH: "The signed sender is not the partner that published it.",
    ReasonCode.UNKNOWN_KEY: "The signing key is not in the key directory.",
    ReasonCode.BAD_SIGNATURE: "The signature does not verify.",
    ReasonCode.KEY_REVOKED: "The signing key was revoked.",
    ReasonCode.KEY_EXPIRED: "The signing key is outside its validity window.",
    ReasonCode.RECIPIENT_KEY_STALE: (
        "A recipient key is unknown, revoked or expired: refresh the key directory and reseal."
    ),
    ReasonCode.HEADER_FIELDS_INVALID: (
        "Header fields missing or not allowed for this message type."
    ),
    ReasonCode.NOT_PERMITTED: "Not permitted: no access, or no such case.",
    ReasonCode.STATE_NOT_ALLOWED: "This message type is not allowed in the case's current state.",
    ReasonCode.PURPOSE_NOT_ALLOWED: "The purpose code is not allowed for this message type.",
    ReasonCode.LEGAL_BASIS_NOT_ALLOWED: (
        "The legal basis is not on the allow-list for this sender and message type."
    ),
    ReasonCode.CATEGORY_NOT_ALLOWED: (
        "A declared data category is not allowed for this sender or message type."
    ),
    ReasonCode.CONFLICT: "The case changed concurrently; send again.",
    ReasonCode.BACKLOG_FULL: "A recipient's backlog is full; try again later.",
    ReasonCode.HEADER_NOT_ALLOWED: "The message carries a NATS header the hub does not accept.",
    ReasonCode.SENDER_QUOTA: (
        "Your undelivered messages for a recipient reached your share of its backlog; "
        "try again later."
    ),
    ReasonCode.RATE_LIMITED: "You sent more messages than the hub accepts per second; slow down.",
    ReasonCode.PROCESSING_FAILED: (
        "The hub could not process the message after several attempts; it was set aside "
        "for the operator."
    ),
    ReasonCode.UNDELIVERED_EXPIRED: (
        "The message expired before a recipient took it; it was removed, undelivered."
    ),
    ReasonCode.UNDELIVERABLE: (
        "A recipient did not accept the message after every retry; the operator holds it."
    ),
}
