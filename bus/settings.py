"""The one settings model of Schakel: every command, the hub and the SDK read it.

Each setting has its one default here. Sources, the later winning:

1. the defaults below;
2. a TOML file: ``--config FILE`` or ``SCHAKEL_CONFIG`` (keys as the field names);
3. environment variables ``SCHAKEL_<FIELD>`` (e.g. ``SCHAKEL_NATS_URL``, ``SCHAKEL_FETCH_BATCH``);
4. command-line flags.

Secrets are never settings: passphrases come from the terminal or ``SCHAKEL_*_PASSPHRASE``
(``keys/keystore.py``), private keys from files named here.
"""

from __future__ import annotations

import base64
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings import SettingsError as _SourceError

from schakel.bus.connection import Credentials
from schakel.bus.topology import ACK_WAIT, INBOUND_ATTEMPTS, INBOUND_DELIVERIES, REDELIVERY
from schakel.contracts.errors import SchakelError
from schakel.keys.crypto import VerifyKey

__all__ = ["CONFIG_ENV", "Settings", "SettingsError"]

CONFIG_ENV = "SCHAKEL_CONFIG"


class SettingsError(SchakelError):
    """The settings (file, environment or flags) are invalid; names the setting."""


class Settings(BaseSettings):
    """Every setting, with its default and its bounds."""

    model_config = SettingsConfigDict(env_prefix="SCHAKEL_", extra="forbid", frozen=True)

    # Connecting to NATS: every command, the hub, the SDK.
    nats_url: str | None = Field(None, description="NATS URL; a cluster's, comma-separated")
    nats_nkey: Path | None = Field(None, description="NKey seed file to connect with")
    nats_tls_ca: Path | None = Field(None, description="CA to verify the NATS server against")
    nats_tls_cert: Path | None = Field(
        None, description="client certificate (PEM), for a server that verifies clients"
    )
    nats_tls_key: Path | None = Field(None, description="the client certificate's key (PEM)")
    authority_public: str | None = Field(
        None, description="the directory authority's public key (base64, or a file holding it)"
    )
    log: Literal["json", "console"] = "json"

    # The hub.
    data_dir: Path = Field(Path("schakel-data"), description="the hub's working directory")
    identity: Path | None = Field(None, description="the hub's keystore")
    policy: Path | None = Field(None, description="routing policy TOML (default: shipped one)")
    registry: Path | None = Field(None, description="partner registry TOML (default: example)")
    fetch_batch: int = Field(64, ge=1, le=1024, description="messages fetched at once")
    per_sender_inflight: int = Field(
        64, ge=1, le=4096, description="one partner's messages being routed at once"
    )
    inbound_attempts: int = Field(
        INBOUND_ATTEMPTS, ge=1, le=INBOUND_DELIVERIES,
        description="tries of an inbound message before quarantine",
    )  # fmt: skip
    partner_scan: float = Field(2.0, gt=0, le=3600, description="seconds between looks "
                                "for new partners' inbound streams")  # fmt: skip
    shutdown_timeout: float = Field(10.0, gt=0, le=3600)
    replicas: int = Field(1, ge=1, le=5, description="stream replicas (3 on a cluster)")
    ack_wait: float = Field(
        ACK_WAIT, gt=0, le=3600,
        description="seconds before a crashed hub's unfinished messages are redelivered",
    )  # fmt: skip
    redelivery: tuple[Annotated[float, Field(gt=0, le=86400)], ...] = Field(
        REDELIVERY, min_length=1, max_length=20,
        description="retry schedule (seconds) of a delivery a partner does not acknowledge",
    )  # fmt: skip
    expiry_sweep: float = Field(60.0, gt=0, le=86400, description="seconds between sweeps "
                                "for expired, undelivered messages")  # fmt: skip
    expiry_warning_days: int = Field(30, ge=0, le=3650)

    # A partner's adapter (the SDK).
    keystore: Path | None = Field(None, description="the partner's keystore")
    state_dir: Path | None = Field(None, description="where the SDK remembers what it saw")
    max_directory_age: float = Field(
        30.0, gt=0, le=86400, description="seconds after which the key directory is stale"
    )
    resync_every: float = Field(2.0, gt=0, le=3600)
    receipts: bool = True

    # The adapter's HTTP API for the back office (``schakel adapter run``).
    listen: str = Field(
        "127.0.0.1:8480",
        pattern=r"^(unix:/.+|[A-Za-z0-9.:\[\]-]+:\d{1,5})$",
        description="host:port, or unix:/path for a unix socket; not loopback: a token needed",
    )
    api_token_file: Path | None = Field(
        None, description="file holding the bearer token the back office must present"
    )
    api_tls_cert: Path | None = Field(None, description="the adapter's TLS certificate (PEM)")
    api_tls_key: Path | None = Field(None, description="its private key (PEM)")
    api_tls_client_ca: Path | None = Field(
        None, description="CA whose client certificates the adapter requires (mutual TLS)"
    )
    webhook_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s]{1,2000}$",
        description="push each item to this URL instead of holding it for GET /v1/inbox",
    )
    webhook_secret_file: Path | None = Field(
        None, description="file holding the secret the webhook's signatures are made with"
    )
    folder: Path | None = Field(
        None, description="folder mode: send outbox/*.json, write deliveries to inbox/"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags, then the environment, then the TOML file (no dotenv, no secrets dir)."""
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)

    @classmethod
    def load(cls, config: Path | None = None, **flags: Any) -> Self:
        """The settings from every source; ``flags`` that are ``None`` were not given.

        Raises:
            SettingsError: the file is missing or a value is invalid (the setting is named;
                its value is not repeated, it may be a secret's path or a typo of one).
        """
        path = config or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
        if path is not None and not path.is_file():
            raise SettingsError("the settings file (--config or SCHAKEL_CONFIG) does not exist")

        class FromFile(cls):  # type: ignore[valid-type,misc]
            model_config = SettingsConfigDict(toml_file=path)

        try:
            loaded = FromFile(**{k: v for k, v in flags.items() if v is not None})
        except ValidationError as exc:
            raise SettingsError(_describe(exc)) from None
        except tomllib.TOMLDecodeError:
            raise SettingsError("the settings file is not valid TOML") from None
        except (_SourceError, UnicodeDecodeError, OSError) as exc:
            # e.g. an environment variable that should hold JSON (a list) does not
            raise SettingsError(f"settings could not be read ({type(exc).__name__})") from None
        return cls.model_validate(loaded.model_dump())

    def authority_key(self) -> VerifyKey | None:
        """The directory authority's public key, if set (base64, or a file holding it).

        Raises:
            SettingsError: it is neither.
        """
        value = self.authority_public
        if value is None:
            return None
        try:
            path = Path(value)
            raw = path.read_text("utf-8").strip() if path.is_file() else value
            return VerifyKey(base64.b64decode(raw, validate=True))
        except (ValueError, OSError, SchakelError):
            raise SettingsError(
                "authority_public: not the base64 of a 32-byte Ed25519 key, nor a file holding one"
            ) from None

    def credentials(self, inbox_prefix: str | None = None) -> Credentials | None:
        """What to connect to NATS with (``None``: no NKey, no TLS)."""
        tls = (self.nats_tls_ca, self.nats_tls_cert, self.nats_tls_key)
        if self.nats_nkey is None and tls == (None, None, None) and inbox_prefix is None:
            return None
        return Credentials(
            nkey_seed=self.nats_nkey,
            tls_ca=self.nats_tls_ca,
            inbox_prefix=inbox_prefix,
            tls_cert=self.nats_tls_cert,
            tls_key=self.nats_tls_key,
        )


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        problems.append(f"{where}: {error['msg']}")
    return "invalid settings: " + "; ".join(problems)
