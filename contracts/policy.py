"""The routing policy as validated data, loaded from ``policy.toml``.

The file is the reviewable artefact (a privacy officer reads and diffs it); this module turns it
into frozen models and rejects any unknown message type, partner type, state, code or
condition with an error that names the line of the file. No routing decisions are made here;
the hub's policy engine evaluates this data.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping, Sequence
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from schakel.contracts.enums import (
    CaseState,
    DataCategory,
    Decision,
    HeaderField,
    InvitationScope,
    LegalBasis,
    MessageType,
    OrgType,
    Purpose,
)
from schakel.contracts.errors import PolicyFileError

__all__ = [
    "CONDITIONS",
    "CategoryRule",
    "Cell",
    "ClosureReason",
    "Condition",
    "DecidedBy",
    "Flags",
    "Kern",
    "LegalBasisRule",
    "Limits",
    "MessageRule",
    "Policy",
    "Retention",
    "Transition",
    "default_policy",
    "default_policy_text",
    "load_policy",
    "parse_policy",
    "with_limits",
]


class Condition(StrEnum):
    """A condition of a matrix cell (PROCESS.md's footnotes; ``c6r`` is Schakel's own)."""

    C3 = "c3"
    C5 = "c5"
    C6R = "c6r"
    C7 = "c7"
    C8 = "c8"
    C9 = "c9"
    C11 = "c11"
    C12 = "c12"


CONDITIONS: Final[dict[Condition, str]] = {
    Condition.C3: "non-kern partner only when already involved in the case",
    Condition.C5: "NCTV only when the coordination-law flag is on",
    Condition.C6R: "only the organisation the referenced invitation was sent to, while it is open",
    Condition.C7: "invitees outside the kern receive only their own plan part",
    Condition.C8: "ZVH only when mandated as meldpunt",
    Condition.C9: "addressed to a named function; no_forward forced; nothing back to the sender",
    Condition.C11: "POL/OM only when already involved or the person is in a PGA",
    Condition.C12: "handover: the current and new gemeente and the new region's kern",
}
_CELL = re.compile(r"^(?P<i>i)?(?P<s>S)?(?P<r>R\*?)?$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Cell(_Frozen):
    """One cell of the routing matrix: what one partner type may do with one message type."""

    send: bool = False
    receive: bool = False
    invited: bool = False
    melder_only: bool = False
    conditions: frozenset[Condition] = frozenset()

    @classmethod
    def parse(cls, text: str) -> Cell:
        """Parse a cell such as ``"iSR c5"`` or ``"R*"``.

        Raises:
            ValueError: unknown roles or conditions.
        """
        roles, *conditions = text.split()
        match = _CELL.fullmatch(roles)
        if not match or not (match["s"] or match["r"]):
            raise ValueError(f"bad matrix cell {text!r}: roles are [i][S][R|R*]")
        unknown = sorted(set(conditions) - set(Condition))
        if unknown:
            raise ValueError(f"unknown condition {unknown[0]!r} in cell {text!r}")
        return cls(
            send=bool(match["s"]),
            receive=bool(match["r"]),
            invited=bool(match["i"]),
            melder_only=match["r"] == "R*",
            conditions=frozenset(Condition(c) for c in conditions),
        )


def _cells(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: Cell.parse(v) if isinstance(v, str) else v for k, v in value.items()}
    return value


class MessageRule(_Frozen):
    """Everything the policy says about one message type."""

    title: str
    case: Literal["required", "forbidden"]
    creates_case: bool = False
    states: frozenset[CaseState] = frozenset()
    purposes: frozenset[Purpose] = Field(min_length=1)
    required_fields: frozenset[HeaderField] = frozenset()
    optional_fields: frozenset[HeaderField] = frozenset()
    invitation_scope: InvitationScope | None = None
    force_no_forward: bool = False
    matrix: Annotated[dict[OrgType, Cell], BeforeValidator(_cells)]

    @model_validator(mode="after")
    def _coherent(self) -> MessageRule:
        if self.case == "required" and not self.states:
            raise ValueError("a case message needs the states it is allowed in")
        if self.case == "forbidden" and (self.states or self.creates_case):
            raise ValueError("a message without a case has no states")
        # 'i' cells need a scope, except on M6/M6R, where the header's invitation carries it.
        invites = HeaderField.INVITATION in self.required_fields
        if any(c.invited for c in self.matrix.values()) and not (self.invitation_scope or invites):
            raise ValueError("'i' cells need an invitation_scope")
        return self

    def senders(self) -> frozenset[OrgType]:
        """Partner types that may send this message type at all."""
        return frozenset(t for t, c in self.matrix.items() if c.send)


class DecidedBy(StrEnum):
    """Who may make a transition (PROCESS.md, "who decides")."""

    REGIE_GEMEENTE = "regie-gemeente"  # the case's regie-gemeente
    PROCESREGIE = "procesregie"  # the regie-gemeente or the ZVH of its region, on its behalf
    SENDER = "sender"  # whoever may send the message on the case


class ClosureReason(StrEnum):
    """Why a case closed."""

    AFGESLOTEN = "AFGESLOTEN"  # afgeschaald and closed (M10)
    ZONDER_PGA = "ZONDER_PGA"  # closed without a PGA (M5 GEEN_PGA)
    OVERGEDRAGEN = "OVERGEDRAGEN"  # handed over to another gemeente (M16)


class Transition(_Frozen):
    """A state change carried by a message (and decision), and who decides it."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    message: MessageType
    decision: Decision | None = None
    from_: frozenset[CaseState] = Field(alias="from", min_length=1)
    to: CaseState
    by: frozenset[OrgType] = frozenset()
    decided_by: DecidedBy  # required: the table must say it for every transition
    closure: ClosureReason | None = None  # why the case closes, when ``to`` is a closed state


class LegalBasisRule(_Frozen):
    """Which sender types may invoke a legal basis, for which message types."""

    description: str
    senders: frozenset[OrgType]
    messages: frozenset[MessageType]


class CategoryRule(_Frozen):
    """Restrictions on one data category; an absent field means no restriction."""

    senders: frozenset[OrgType] | None = None
    messages: frozenset[MessageType] | None = None
    legal_bases: frozenset[LegalBasis] | None = None


class Flags(_Frozen):
    """Configuration flags of PROCESS.md."""

    nctv_coordination_law: bool = False
    zvh_meldpunt_mandate: bool = False


class Kern(_Frozen):
    """Partner types that form the kern of every case."""

    types: frozenset[OrgType]


class Limits(_Frozen):
    """Size and time limits the hub enforces."""

    max_lifetime_days: int = Field(ge=1, le=365)
    max_clock_skew_seconds: int = Field(ge=0, le=3600)
    max_envelope_bytes: int = Field(ge=1024, le=64 * 1024 * 1024)
    max_backlog: int = Field(default=10_000, ge=1)
    # One sender's share of a recipient's backlog: no sender can lock the others out.
    max_backlog_per_sender: int = Field(default=2_500, ge=1)
    # Per sender: inbound messages the hub accepts per second (sustained, and in a burst);
    # more are refused with RATE_LIMITED.
    max_inbound_per_second: float = Field(default=200.0, gt=0)
    max_inbound_burst: int = Field(default=2_000, ge=1)
    # Per sender: refusals recorded one by one (audit record and notice) per second and in a
    # burst; beyond that they are counted and recorded together, once a second.
    max_refusal_records_per_second: float = Field(default=10.0, gt=0)
    max_refusal_records_burst: int = Field(default=100, ge=1)
    # Per sender: what its inbound stream may hold before JetStream refuses the publish.
    max_inbound_pending: int = Field(default=20_000, ge=1)
    max_inbound_bytes: int = Field(default=512 * 1024 * 1024, ge=1024 * 1024)


class Retention(_Frozen):
    """How long case metadata and audit records are kept."""

    years: int = Field(ge=1, le=100)
    # Only "closure" is implemented (the hub sets purge_after when a case closes); a policy
    # that names another start is refused at load rather than silently ignored.
    starts: Literal["closure"]


class Policy(_Frozen):
    """The whole routing policy."""

    version: Literal[1]
    flags: Flags
    kern: Kern
    limits: Limits
    retention: Retention
    messages: dict[MessageType, MessageRule]
    transitions: tuple[Transition, ...]
    decisions: dict[MessageType, frozenset[Decision]]
    legal_bases: dict[LegalBasis, LegalBasisRule]
    categories: dict[DataCategory, CategoryRule]

    @model_validator(mode="after")
    def _complete(self) -> Policy:
        missing = sorted(set(MessageType) - self.messages.keys())
        if missing:
            raise ValueError(f"message types without a rule: {', '.join(missing)}")
        for mt, rule in self.messages.items():
            if rule.title != mt.title:
                raise ValueError(f"{mt} is titled {mt.title}, not {rule.title}")
            wants_decision = HeaderField.DECISION in rule.required_fields | rule.optional_fields
            if wants_decision != (mt in self.decisions):
                raise ValueError(f"{mt}: decision field and [decisions] disagree")
        for t in self.transitions:
            rule = self.messages[t.message]
            if not t.from_ <= rule.states:
                raise ValueError(f"transition of {t.message} from a state it is not allowed in")
            if t.decision is not None and t.decision not in self.decisions.get(t.message, ()):
                raise ValueError(f"transition of {t.message} on a decision it cannot carry")
        return self

    def rule(self, message_type: MessageType) -> MessageRule:
        """The rule for a message type."""
        return self.messages[message_type]

    def cell(self, message_type: MessageType, org_type: OrgType) -> Cell | None:
        """The matrix cell, or ``None`` when the partner type has no role at all."""
        return self.messages[message_type].matrix.get(org_type)

    def legal_basis_allowed(
        self, basis: LegalBasis, sender: OrgType, message_type: MessageType
    ) -> bool:
        """Whether a sender type may invoke a legal basis for a message type."""
        rule = self.legal_bases.get(basis)
        return rule is not None and sender in rule.senders and message_type in rule.messages

    def transition(
        self,
        message_type: MessageType,
        decision: Decision | None,
        state: CaseState,
        sender: OrgType,
    ) -> Transition | None:
        """The first transition that applies, or ``None`` when the state stays."""
        for t in self.transitions:
            if (
                t.message == message_type
                and (t.decision is None or t.decision == decision)
                and state in t.from_
                and (not t.by or sender in t.by)
            ):
                return t
        return None


def parse_policy(text: str) -> Policy:
    """Parse and validate policy TOML text.

    Raises:
        PolicyFileError: the text is not valid TOML or not a valid policy; names the line.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None) or _lineno_from_message(str(exc))
        raise PolicyFileError(str(exc), line) from exc
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = tuple(str(p) for p in first["loc"])
        path = ".".join(loc)
        raise PolicyFileError(f"{path}: {first['msg']}", _locate(text, loc)) from exc


def load_policy(path: Path) -> Policy:
    """Load a policy file from disk.

    Raises:
        PolicyFileError: see :func:`parse_policy`.
    """
    return parse_policy(path.read_text(encoding="utf-8"))


def default_policy_text() -> str:
    """The policy file shipped with this package (``contracts/policy.toml``)."""
    return resources.files("schakel.contracts").joinpath("policy.toml").read_text("utf-8")


@functools.cache
def default_policy() -> Policy:
    """The policy shipped with this package, parsed once."""
    return parse_policy(default_policy_text())


def with_limits(text: str, **limits: float) -> str:
    """``text`` (a policy file) with some ``[limits]`` values replaced, comments kept: for load
    tests and drills that need other limits than the reviewed ones.

    Raises:
        PolicyFileError: a name is not a limit the file sets, or the result is invalid.
    """
    for name, value in limits.items():
        if name not in Limits.model_fields:
            raise PolicyFileError(f"{name} is not a limit")
        text, count = re.subn(rf"(?m)^{name}\s*=\s*[^\s#]+", f"{name} = {value}", text)
        if count != 1:
            raise PolicyFileError(f"{name} is not set exactly once")
    parse_policy(text)
    return text


# --- finding the line of a validation error ------------------------------------------------

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r'^\s*("[^"]*"|[A-Za-z0-9_\-]+)\s*=')


def _split_dotted(text: str) -> list[str]:
    return [p.strip().strip('"') for p in re.findall(r'"[^"]*"|[^.]+', text)]


def _locate(text: str, loc: Sequence[str]) -> int | None:
    """Return the line best matching an error location, by the longest matching key path."""
    lines = text.splitlines()
    table: list[str] = []
    array_counts: dict[str, int] = {}
    best: tuple[int, int] | None = None  # (matched length, line)
    for number, line in enumerate(lines, start=1):
        if table_match := _HEADER.match(line):
            table = _split_dotted(table_match[1])
            if line.lstrip().startswith("[["):
                name = ".".join(table)
                array_counts[name] = array_counts.get(name, -1) + 1
                table = [*table, str(array_counts[name])]
            path = table
        elif key_match := _KEY.match(line):
            path = [*table, key_match[1].strip('"')]
        else:
            continue
        matched = _common_prefix(path, loc)
        if matched == len(path) and (best is None or matched > best[0]):
            best = (matched, number)
        # An inline table on one line: the error may be inside it (matrix = { XYZ = ... }).
        if matched == len(path) and len(loc) > len(path) and f"{loc[len(path)]} =" in line:
            best = (len(path) + 1, number)
    return best[1] if best else None


def _common_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _lineno_from_message(message: str) -> int | None:
    match = re.search(r"line (\d+)", message)
    return int(match[1]) if match else None
