"""The routing policy file: complete, equal to PROCESS.md, and strict about what it accepts."""

from __future__ import annotations

from importlib import resources

import pytest

from schakel.contracts.enums import LegalBasis, MessageType, OrgType
from schakel.contracts.errors import PolicyFileError
from schakel.contracts.policy import Cell, default_policy, parse_policy

# The matrix of PROCESS.md ("Message types and who may send (S) or receive (R)"), verbatim.
PROCESS_MATRIX = """
| M1 | SIGNAAL | SR | R | SR | SR | S | S | S | – | – | S | S | S | – | S | S | S |
| M2 | MELDER_STATUS (status enum only) | S | S | S | S | R* | R* | R* | – | – | R* | R* | R* | – | R* | R* | R* |
| M3 | VERZOEK_INFORMATIE_WEGING | SR | SR | SR | SR | R c3 | R c3 | R c3 | – | – | R c3 | R c3 | – | – | – | – | – |
| M4 | INFORMATIE_WEGING | SR | SR | SR | SR | S c3 | S c3 | S c3 | – | – | S c3 | S c3 | – | – | – | – | – |
| M5 | BESLUIT_WEGING | S | R | R | R | – | – | – | – | – | – | – | – | – | – | – | – |
| M6 | UITNODIGING_CASUSOVERLEG | S | S | R | R | iR | iR | iR | – | iR c5 | iR | iR | iR | – | iR | iR | iR |
| M7 | CASUSINFORMATIE | SR | SR | SR | SR | iSR | iSR | iSR | – | iSR c5 | iSR | iSR | iSR | – | iSR | iSR | iSR |
| M8 | PLAN_VAN_AANPAK | SR | SR | SR | R | iR c7 | iR c7 | iR c7 | – | iR c5 | iR c7 | iR c7 | iR c7 | – | iR c7 | iR c7 | iR c7 |
| M9 | VOORTGANG | SR | R | SR | SR | iS | iS | iS | – | – | iS | iS | iS | – | iS | iS | iS |
| M10 | BESLUIT_AFSCHALEN_AFSLUITEN | S | R | R | R | iR | iR | iR | – | iR c5 | iR | iR | iR | – | iR | iR | iR |
| M11 | VEILIGHEIDSMELDING | R | R c8 | – | – | – | – | – | – | – | – | – | – | – | S | – | – |
| M12 | AMBTSBERICHT | R c9 | – | R c9 | R c9 | – | – | – | S | – | – | – | – | – | – | – | – |
| M13 | MAR_INBRENG | SR | – | iSR | iSR | – | SR | SR | – | – | iSR | – | iSR | – | – | iSR | iSR |
| M14 | DETENTIE_UITSTROOM | R | R c8 | R c11 | R c11 | – | S | S | – | – | – | – | – | – | – | – | – |
| M15 | ADVIESVRAAG / ADVIES (no identity) | SR | SR | SR | SR | SR | SR | – | – | SR | – | – | SR | SR | – | – | – |
| M16 | OVERDRACHT_CASUS (person moves) | SR c12 | SR | R c12 | R c12 | – | – | – | – | – | – | – | – | – | – | – | – |
"""
COLUMNS = [
    "GEM",
    "ZVH",
    "POL",
    "OM",
    "RVDK",
    "RN",
    "DJI",
    "AIVD",
    "NCTV",
    "IND",
    "KMAR",
    "LSE",
    "ESS",
    "LIV",
    "DTV",
    "EXT",
]
POLICY_TEXT = resources.files("schakel.contracts").joinpath("policy.toml").read_text("utf-8")


def _process_rows() -> list[tuple[str, str, str]]:
    rows = []
    for line in PROCESS_MATRIX.strip().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        for column, cell in zip(COLUMNS, cells[2:], strict=True):
            rows.append((cells[0], column, cell))
    return rows


@pytest.mark.parametrize(("message", "org", "cell"), _process_rows())
def test_policy_matrix_equals_process_md(message: str, org: str, cell: str) -> None:
    """Every cell of the PROCESS.md matrix is in the policy file exactly as written."""
    got = default_policy().cell(MessageType(message), OrgType(org))
    if cell == "–":
        assert got is None
    else:
        assert got == Cell.parse(cell)


def test_policy_covers_every_type_and_invitation_answer() -> None:
    """The policy has a rule for every message type, including the M6R answer (design)."""
    policy = default_policy()
    assert set(policy.messages) == set(MessageType)
    m6r = policy.rule(MessageType.M6R)
    assert all("c6r" in c.conditions for c in m6r.matrix.values() if c.send)


def test_aivd_never_receives_and_m12_is_no_forward() -> None:
    """AIVD receives nothing; an ambtsbericht forces no_forward and has no case."""
    policy = default_policy()
    assert not any(
        (c := policy.cell(mt, OrgType.AIVD)) is not None and c.receive for mt in MessageType
    )
    assert policy.rule(MessageType.M12).force_no_forward
    assert policy.rule(MessageType.M12).case == "forbidden"


def test_legal_basis_allow_list() -> None:
    """Legal bases are checked per (sender type, message type), not just by name."""
    policy = default_policy()
    assert policy.legal_basis_allowed(
        LegalBasis.WIV2017_AMBTSBERICHT, OrgType.AIVD, MessageType.M12
    )
    assert not policy.legal_basis_allowed(
        LegalBasis.WIV2017_AMBTSBERICHT, OrgType.POL, MessageType.M12
    )
    assert not policy.legal_basis_allowed(LegalBasis.WGP_PGA, OrgType.AIVD, MessageType.M12)


def test_flags_default_off() -> None:
    """NCTV participation and the ZVH meldpunt mandate are off unless configured."""
    flags = default_policy().flags
    assert not flags.nctv_coordination_law and not flags.zvh_meldpunt_mandate


def _line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ('KMAR = "R c3" }', 'KMAR = "R c99" }', 'KMAR = "R c99" }'),
        ('RVDK = "S", RN = "S"', 'RVDK = "S", XYZ = "S", RN = "S"', "XYZ"),
        ("[messages.M16]", "[messages.M17]", "[messages.M17]"),
        ('to = "CASUSOVERLEG"', 'to = "OPGESCHAALD"', 'to = "OPGESCHAALD"'),
        (
            'messages = ["M12"]\n\n[legal_bases.WCAT',
            'messages = ["M99"]\n\n[legal_bases.WCAT',
            '"M99"',
        ),
        ("[legal_bases.PBW_DETENTIE]", "[legal_bases.PBW_NIEUW]", "PBW_NIEUW"),
        ('[categories."inlichtingen"]', '[categories."geheim"]', '"geheim"'),
        ("nctv_coordination_law = false", "nctv_coordination_law = 3", "nctv_coordination_law = 3"),
    ],
    ids=[
        "condition",
        "partner",
        "message-type",
        "state",
        "code",
        "legal-basis",
        "category",
        "flag",
    ],
)
def test_invalid_policy_names_the_line(old: str, new: str, needle: str) -> None:
    """An unknown type, partner, state, code or condition is rejected naming its line."""
    assert old in POLICY_TEXT
    text = POLICY_TEXT.replace(old, new, 1)
    with pytest.raises(PolicyFileError) as info:
        parse_policy(text)
    assert info.value.line == _line_of(text, needle), str(info.value)


def test_missing_message_type_rejected() -> None:
    """A policy that forgets a message type is incomplete and rejected."""
    start = POLICY_TEXT.index("[messages.M16]")
    end = POLICY_TEXT.index("# --- state transitions")
    with pytest.raises(PolicyFileError, match="M16"):
        parse_policy(POLICY_TEXT[:start] + POLICY_TEXT[end:])


def test_toml_syntax_error_names_the_line() -> None:
    """A TOML syntax error is reported with its line."""
    text = POLICY_TEXT.replace("version = 1", "version = = 1", 1)
    with pytest.raises(PolicyFileError) as info:
        parse_policy(text)
    assert info.value.line == _line_of(text, "version = = 1")


def test_a_retention_start_the_hub_does_not_implement_is_refused() -> None:
    """PROCESS.md leaves the start of the retention clock open ("make it configurable"); the
    hub implements "closure" only, so any other start is refused at load, never ignored."""
    text = POLICY_TEXT.replace('starts = "closure"', 'starts = "last_message"')
    assert text != POLICY_TEXT
    with pytest.raises(PolicyFileError, match="starts"):
        parse_policy(text)


def test_every_transition_says_who_decides_it() -> None:
    """PROCESS.md's table has a "who decides" column; the policy carries it for each one."""
    body = POLICY_TEXT[POLICY_TEXT.index("[[transitions]]") : POLICY_TEXT.index("[decisions]")]
    blocks = body.split("[[transitions]]")[1:]
    assert blocks
    assert all("decided_by" in block for block in blocks)
    start = POLICY_TEXT.index("[[transitions]]")
    stripped = POLICY_TEXT[:start] + POLICY_TEXT[start:].replace(
        'decided_by = "procesregie"', "", 1
    )
    with pytest.raises(PolicyFileError, match="decided_by"):
        parse_policy(stripped)
