"""Adapters: the SDK partners use to connect their back office to the hub.

Needs only the base install (``pip install schakel``), not the hub's dependencies.
"""

from schakel.adapters.client import (
    Delivery,
    DirectoryStale,
    InboundFull,
    NotRegistered,
    PartnerClient,
    Refusal,
    Rejected,
)

__all__ = [
    "Delivery",
    "DirectoryStale",
    "InboundFull",
    "NotRegistered",
    "PartnerClient",
    "Refusal",
    "Rejected",
]
