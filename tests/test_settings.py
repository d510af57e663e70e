"""One settings model: defaults < TOML file < SCHAKEL_* environment < flags, read by every
command, the hub and the SDK, with each default written once."""

from __future__ import annotations

import base64
import inspect
import os
from pathlib import Path

import pytest

from schakel.adapters.client import PartnerClient
from schakel.bus.settings import Settings, SettingsError
from schakel.cli import build_parser
from schakel.hub.settings import HubSettings
from schakel.keys.crypto import SigningKey

CANARY = "Jansen-geheim-42"


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's own SCHAKEL_* variables play no part in these tests."""
    for name in [n for n in os.environ if n.startswith("SCHAKEL_")]:
        monkeypatch.delenv(name)


def _load(parser_args: list[str]) -> Settings:
    from schakel.cli import _settings

    return _settings(build_parser().parse_args(parser_args))


def test_each_source_overrides_the_one_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "schakel.toml"
    config.write_text('fetch_batch = 8\nreplicas = 3\nnats_url = "nats://file:4222"\n', "utf-8")
    monkeypatch.setenv("SCHAKEL_REPLICAS", "2")
    monkeypatch.setenv("SCHAKEL_NATS_URL", "nats://env:4222")
    settings = _load(["--config", str(config), "hub", "run", "--nats", "nats://flag:4222"])
    assert settings.per_sender_inflight == 64  # default
    assert settings.fetch_batch == 8  # file
    assert settings.replicas == 2  # environment over file
    assert settings.nats_url == "nats://flag:4222"  # flag over environment


def test_the_file_may_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "schakel.toml"
    config.write_text("ack_wait = 12.5\n", "utf-8")
    monkeypatch.setenv("SCHAKEL_CONFIG", str(config))
    assert _load(["audit", "verify"]).ack_wait == 12.5


@pytest.mark.parametrize(
    ("source", "text"),
    [
        ("file", f'fetch_batch = "{CANARY}"\n'),
        ("env", CANARY),
        ("flag", CANARY),
    ],
)
def test_an_invalid_value_names_the_setting_not_the_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, text: str
) -> None:
    args = ["hub", "run"]
    if source == "file":
        config = tmp_path / "schakel.toml"
        config.write_text(text, "utf-8")
        args = ["--config", str(config), *args]
    elif source == "env":
        monkeypatch.setenv("SCHAKEL_FETCH_BATCH", text)
    else:
        args += ["--fetch-batch", text]
    with pytest.raises(SettingsError, match="fetch_batch") as raised:
        _load(args)
    assert CANARY not in str(raised.value)


def test_out_of_bounds_unknown_and_missing_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="fetch_batch"):
        Settings.load(fetch_batch=0)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("wrokers = 8\n", "utf-8")
    with pytest.raises(SettingsError, match="wrokers"):
        Settings.load(unknown)
    with pytest.raises(SettingsError, match="does not exist"):
        Settings.load(tmp_path / "absent.toml")


def test_the_hub_and_the_sdk_take_their_defaults_from_the_model() -> None:
    defaults = Settings.model_construct()
    hub = HubSettings()
    for name in HubSettings.model_fields.keys() & Settings.model_fields.keys():
        if name not in ("policy", "registry"):
            assert getattr(hub, name) == getattr(defaults, name), name
    assert hub.expiry_warning.days == defaults.expiry_warning_days
    sdk = inspect.signature(PartnerClient.__init__).parameters
    for name in ("resync_every", "state_dir", "receipts"):
        assert sdk[name].default == getattr(defaults, name), name
    assert sdk["max_directory_age"].default.total_seconds() == defaults.max_directory_age


def test_the_hub_settings_come_from_the_settings(tmp_path: Path) -> None:
    authority = SigningKey.generate().public
    key_file = tmp_path / "authority.pub"
    key_file.write_text(base64.b64encode(authority.raw).decode() + "\n", "utf-8")
    seed = tmp_path / "hub.nk"
    settings = Settings.load(
        fetch_batch=3, authority_public=str(key_file), nats_nkey=str(seed), inbound_attempts=2
    )
    hub = HubSettings.from_settings(settings)
    assert (hub.fetch_batch, hub.inbound_attempts) == (3, 2)
    assert hub.authority == authority
    assert hub.credentials is not None
    assert hub.credentials.nkey_seed == seed


@pytest.mark.parametrize("value", [CANARY, CANARY * 30, "/" + CANARY])
def test_a_bad_authority_key_is_named_without_echo(value: str) -> None:
    with pytest.raises(SettingsError, match="authority_public") as raised:
        Settings.load(authority_public=value).authority_key()
    assert CANARY not in str(raised.value)


@pytest.mark.parametrize(
    ("env", "text"),
    [("SCHAKEL_REDELIVERY", CANARY), ("SCHAKEL_REDELIVERY", "[-5, 0]"), (None, "= " + CANARY)],
)
def test_unreadable_sources_are_settings_errors_without_echo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: str | None, text: str
) -> None:
    config = None
    if env is None:
        config = tmp_path / "broken.toml"
        config.write_text(text, "utf-8")
    else:
        monkeypatch.setenv(env, text)
    with pytest.raises(SettingsError) as raised:
        Settings.load(config)
    assert CANARY not in str(raised.value)


def test_the_cli_reports_a_bad_setting_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from schakel.cli import main

    monkeypatch.setenv("SCHAKEL_AUTHORITY_PUBLIC", base64.b64encode(bytes(32)).decode())
    assert main(["hub", "run", "--fetch-batch", CANARY]) == 2
    err = capsys.readouterr().err
    assert "fetch_batch" in err
    assert CANARY not in err
    assert "Traceback" not in err


def test_the_sdk_says_which_setting_it_lacks(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="nats_url"):
        PartnerClient.from_settings(Settings.load())
    authority = base64.b64encode(SigningKey.generate().public.raw).decode()
    with pytest.raises(SettingsError, match="keystore"):
        PartnerClient.from_settings(
            Settings.load(nats_url="nats://127.0.0.1:4222", authority_public=authority)
        )
