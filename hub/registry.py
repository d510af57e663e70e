"""The partner registry: which organisations form a region's kern.

Each case has a regie-gemeente; its kern is that gemeente plus the ZVH, POL and OM of the
gemeente's region. The registry is operator data (a TOML file the ZVH maintains), separate from
the key directory: a partner signs its own keys, but its place in a region is assigned to it.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from schakel.contracts.enums import OrgType
from schakel.contracts.errors import PolicyFileError
from schakel.contracts.ids import OrgId, OrgIdField, org_type_of

__all__ = ["Region", "Registry", "default_registry", "load_registry"]


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


class Registry(_Frozen):
    """All regions, and the partners that belong to no region (national organisations)."""

    regions: dict[str, Region]
    national: frozenset[OrgIdField] = frozenset()

    def partners(self) -> frozenset[OrgId]:
        """Every organisation in the registry: who gets NATS credentials and a consumer."""
        regional = {o for r in self.regions.values() for o in r.gemeenten | r.zvh | r.pol | r.om}
        return frozenset(OrgId(o) for o in regional | self.national)

    def region_of(self, gemeente: OrgId) -> Region | None:
        """The region a gemeente belongs to."""
        return next((r for r in self.regions.values() if gemeente in r.gemeenten), None)

    def kern(self, regie: OrgId) -> frozenset[OrgId]:
        """The kern of a case with this regie-gemeente (empty if the gemeente is unknown)."""
        region = self.region_of(regie)
        if region is None:
            return frozenset()
        return frozenset({regie} | region.zvh | region.pol | region.om)


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
