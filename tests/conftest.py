"""Shared fixtures: partner identities and a key directory with their public records."""

from __future__ import annotations

import pytest

from schakel.contracts.ids import OrgId
from schakel.keys.directory import KeyDirectory
from schakel.keys.identity import PartnerIdentity

ORGS = ("RVDK.noord", "ZVH.west", "GEM.westerstad", "POL.west", "OM.west", "IND.landelijk")


@pytest.fixture(scope="session")
def identities() -> dict[str, PartnerIdentity]:
    """One identity per organisation used in tests."""
    return {org: PartnerIdentity.generate(OrgId(org)) for org in ORGS}


@pytest.fixture(scope="session")
def directory(identities: dict[str, PartnerIdentity]) -> KeyDirectory:
    """A key directory holding every test identity's public record."""
    return KeyDirectory(i.public_record() for i in identities.values())
