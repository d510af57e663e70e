"""The running hub's configuration: :class:`~schakel.bus.settings.Settings` resolved into
the objects the hub works with (policy, registry, keys, clock).

Defaults are the settings model's; this module adds none of its own.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any, Final, Self

from pydantic import BaseModel, ConfigDict, Field

from schakel.bus import Credentials
from schakel.bus.settings import Settings
from schakel.contracts.clock import Clock
from schakel.contracts.ids import OrgId
from schakel.contracts.policy import Policy, default_policy, load_policy
from schakel.hub.registry import Registry, default_registry, load_registry
from schakel.keys.crypto import VerifyKey

__all__ = ["HubSettings"]

_DEFAULTS: Final = Settings.model_construct()  # the defaults, without reading any source


class HubSettings(BaseModel):
    """Everything a hub instance is configured with; built once at the edge (CLI, harness)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    nats_url: str | None = _DEFAULTS.nats_url
    data_dir: Path = _DEFAULTS.data_dir
    fetch_batch: int = _DEFAULTS.fetch_batch
    per_sender_inflight: int = _DEFAULTS.per_sender_inflight
    inbound_attempts: int = _DEFAULTS.inbound_attempts
    partner_scan: float = _DEFAULTS.partner_scan
    shutdown_timeout: float = _DEFAULTS.shutdown_timeout
    replicas: int = _DEFAULTS.replicas
    ack_wait: float = _DEFAULTS.ack_wait
    redelivery: tuple[float, ...] = _DEFAULTS.redelivery
    expiry_sweep: float = _DEFAULTS.expiry_sweep
    expiry_warning: dt.timedelta = dt.timedelta(days=_DEFAULTS.expiry_warning_days)
    partners: tuple[OrgId, ...] = ()
    policy: Policy = Field(default_factory=default_policy)
    registry: Registry = Field(default_factory=default_registry)
    instance: str = Field(default_factory=lambda: f"hub-{uuid.uuid4().hex[:8]}")
    credentials: Credentials | None = None
    authority: VerifyKey | None = None
    clock: Clock | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **runtime: Any) -> Self:
        """The hub's configuration from the settings; ``runtime`` adds objects that are not
        settings (a clock, partners) or replaces what the settings name (a policy)."""
        values: dict[str, Any] = {
            name: getattr(settings, name)
            for name in cls.model_fields
            if name in Settings.model_fields
            and name not in ("policy", "registry")  # file names there, objects here
        }
        values["expiry_warning"] = dt.timedelta(days=settings.expiry_warning_days)
        values["credentials"] = settings.credentials()
        values["authority"] = settings.authority_key()
        if settings.policy is not None:
            values["policy"] = load_policy(settings.policy)
        if settings.registry is not None:
            values["registry"] = load_registry(settings.registry)
        return cls(**{**values, **runtime})
