"""The partner registry: which organisations form a region's kern.

Each case has a regie-gemeente; its kern is that gemeente plus the ZVH, POL and OM of the
gemeente's region. The registry is operator data (a TOML file the ZVH maintains), separate from
the key directory: a partner signs its own keys, but its place in a region is assigned to it.

Every hub reads the registry from the stream ``SCHAKEL_REGISTRY``, where ``schakel registry
publish`` puts it signed by the directory authority with a version that only grows
(``contracts/KEYLOG.md``, "The partner registry"): a change reaches every running hub within a
second, and nobody who can write to the stream but lacks the authority's key can change a
region's kern. A file (``--registry``) or the shipped example serves until one is published.
"""

from __future__ import annotations

import datetime as dt
import functools
import tomllib
from importlib import resources
from pathlib import Path
from typing import Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    model_validator,
)

from schakel.bus import Bus
from schakel.bus.topology import MAX_REGISTRY_BYTES
from schakel.contracts.canonical import canonical_json
from schakel.contracts.enums import OrgType
from schakel.contracts.errors import PolicyFileError, SchakelError
from schakel.contracts.header import Base64Signature, Timestamp
from schakel.contracts.ids import OrgId, OrgIdField, org_type_of
from schakel.contracts.topology import REGISTRY_STREAM, REGISTRY_SUBJECT
from schakel.keys.crypto import SigningKey, VerifyKey

__all__ = [
    "MAX_REGISTRY_BYTES",
    "Region",
    "Registry",
    "RegistryEdition",
    "RegistryReader",
    "SignedRegistry",
    "default_registry",
    "load_registry",
    "newest_edition",
    "open_registry",
    "publish_registry",
    "sign_registry",
]

REGISTRY_LABEL: Final = b"schakel/1 registry\n"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Region(_Frozen):
    """A veiligheidsregio: its gemeenten and its kern partners."""

    gemeenten: frozenset[OrgIdField]
    zvh: frozenset[OrgIdField]
    pol: frozenset[OrgIdField]
    om: frozenset[OrgIdField]

    @model_validator(mode="after")
    def _types(self) -> Region:
        for field, kind in (
            ("gemeenten", OrgType.GEM),
            ("zvh", OrgType.ZVH),
            ("pol", OrgType.POL),
            ("om", OrgType.OM),
        ):
            for org in getattr(self, field):
                if org_type_of(org) != kind:
                    raise ValueError(f"{org} listed under {field}")
        return self

    @field_serializer("gemeenten", "zvh", "pol", "om")
    def _sorted(self, orgs: frozenset[str]) -> list[str]:
        return sorted(orgs)  # a set has no order; a signature needs one


class Registry(_Frozen):
    """All regions, and the partners that belong to no region (national organisations)."""

    regions: dict[str, Region]
    national: frozenset[OrgIdField] = frozenset()

    @field_serializer("national")
    def _sorted(self, orgs: frozenset[str]) -> list[str]:
        return sorted(orgs)  # a set has no order; a signature needs one

    def partners(self) -> frozenset[OrgId]:
        """Every organisation in the registry: who gets NATS credentials and a consumer."""
        return self._partners

    @functools.cached_property
    def _partners(self) -> frozenset[OrgId]:  # a frozen model: computed once, asked per message
        regional = {o for r in self.regions.values() for o in r.gemeenten | r.zvh | r.pol | r.om}
        return frozenset(OrgId(o) for o in regional | self.national)

    def region_of(self, gemeente: OrgId) -> Region | None:
        """The region a gemeente belongs to."""
        return self._regions.get(gemeente)

    def kern(self, regie: OrgId) -> frozenset[OrgId]:
        """The kern of a case with this regie-gemeente (empty if the gemeente is unknown)."""
        return self._kerns.get(regie, frozenset())

    @functools.cached_property
    def _regions(self) -> dict[str, Region]:  # asked several times per message: once
        regions: dict[str, Region] = {}
        for region in self.regions.values():
            for gemeente in region.gemeenten:
                regions.setdefault(gemeente, region)  # the first region naming it, as before
        return regions

    @functools.cached_property
    def _kerns(self) -> dict[str, frozenset[OrgId]]:
        return {
            gemeente: frozenset(OrgId(o) for o in {gemeente} | r.zvh | r.pol | r.om)
            for gemeente, r in self._regions.items()
        }


def _parse(text: str) -> Registry:
    try:
        return Registry.model_validate(tomllib.loads(text))
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise PolicyFileError(f"registry: {exc}") from exc


def load_registry(path: Path) -> Registry:
    """Load a registry file.

    Raises:
        PolicyFileError: the file is invalid.
    """
    return _parse(path.read_text("utf-8"))


def default_registry() -> Registry:
    """The example registry shipped for the demo and the tests (``hub/registry.toml``)."""
    return _parse(resources.files("schakel.hub").joinpath("registry.toml").read_text("utf-8"))


class RegistryEdition(_Frozen):
    """One published edition of the registry: what the authority signs."""

    format: Literal["schakel-registry/1"] = "schakel-registry/1"
    version: int = Field(ge=1)
    at: Timestamp
    registry: Registry


class SignedRegistry(_Frozen):
    """An edition with the directory authority's signature over its canonical JSON."""

    edition: RegistryEdition
    authority_signature: Base64Signature


def sign_registry(
    registry: Registry, version: int, authority: SigningKey, at: dt.datetime
) -> SignedRegistry:
    """Edition ``version`` of ``registry``, signed by the directory authority."""
    at = at.astimezone(dt.UTC).replace(microsecond=0)
    edition = RegistryEdition(version=version, at=at, registry=registry)
    return SignedRegistry(
        edition=edition,
        authority_signature=authority.sign(REGISTRY_LABEL + canonical_json(edition)),
    )


def open_registry(raw: bytes, authority: VerifyKey) -> RegistryEdition | None:
    """The edition in ``raw`` if it is one and the authority signed it; else ``None``.

    Bounded before parsing: size here, nesting depth by pydantic's parser.
    """
    if len(raw) > MAX_REGISTRY_BYTES:
        return None
    try:
        signed = SignedRegistry.model_validate_json(raw)
    except ValidationError:
        return None
    if not authority.verify(
        REGISTRY_LABEL + canonical_json(signed.edition), signed.authority_signature
    ):
        return None
    return signed.edition


class RegistryReader:
    """Follows the registry stream from where it last read: the newest genuine edition, and
    how many entries it skipped (not an edition the authority signed, or a signed edition no
    newer than one before it: an old edition appended again, a rollback)."""

    def __init__(self, authority: VerifyKey) -> None:
        self._authority = authority
        self.newest: RegistryEdition | None = None
        self.next_seq = 1
        self.skipped = 0

    async def read(self, bus: Bus) -> RegistryEdition | None:
        """Read what is new; the newest genuine edition so far."""
        async for message in bus.scan_direct(REGISTRY_STREAM, start=self.next_seq):
            self.next_seq = message.seq + 1
            edition = open_registry(message.data, self._authority)
            if edition is None or (
                self.newest is not None and edition.version <= self.newest.version
            ):
                self.skipped += 1
                continue
            self.newest = edition
        return self.newest


async def newest_edition(bus: Bus, authority: VerifyKey) -> tuple[RegistryEdition | None, int, int]:
    """The newest genuine edition, the stream's last sequence read, and how many entries were
    skipped (:class:`RegistryReader`)."""
    reader = RegistryReader(authority)
    newest = await reader.read(bus)
    return newest, reader.next_seq - 1, reader.skipped


async def publish_registry(
    bus: Bus, registry: Registry, authority: SigningKey, at: dt.datetime
) -> RegistryEdition:
    """Sign ``registry`` as the next edition and append it (the directory authority's job).

    The append expects the stream's last sequence to be the one read, so two publishers
    never give out the same version.

    Raises:
        SchakelError: the stream kept changing.
    """
    for _ in range(20):
        newest, last_seq, _ = await newest_edition(bus, authority.public)
        version = (newest.version if newest is not None else 0) + 1
        signed = sign_registry(registry, version, authority, at)
        if await bus.append(REGISTRY_SUBJECT, canonical_json(signed), after=last_seq):
            return signed.edition
    raise SchakelError("the registry stream kept changing; try again")
