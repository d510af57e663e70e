"""One settings model: defaults < TOML file < SCHAKEL_* environment < flags, read by every
command, the hub and the SDK, with each default written once."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from schakel.adapters.client import PartnerClient
from schakel.bus.settings import Settings, SettingsError
from schakel.cli import build_parser
from schakel.hub.settings import HubSettings
from schakel.keys.crypto import SigningKey

CANARY = "Jansen-geheim-42"


def _load(parser_args: list[str]) -> Settings:
    from schakel.cli import _settings

    return _settings(build_parser().parse_args(parser_args))


def test_each_source_overrides_the_one_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "schakel.toml"
    config.write_text('workers = 8\nreplicas = 3\nnats_url = "nats://file:4222"\n', "utf-8")
    monkeypatch.setenv("SCHAKEL_REPLICAS", "2")
    monkeypatch.setenv("SCHAKEL_NATS_URL", "nats://env:4222")
    settings = _load(["--config", str(config), "hub", "run", "--nats", "nats://flag:4222"])
    assert settings.fetch_batch == 64  # default
    assert settings.workers == 8  # file
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
        ("file", f'workers = "{CANARY}"\n'),
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
        monkeypatch.setenv("SCHAKEL_WORKERS", text)
    else:
        args += ["--workers", text]
    if source == "flag":
        with pytest.raises(SystemExit):  # argparse's type=int refuses it first
            _load(args)
        return
    with pytest.raises(SettingsError, match="workers") as raised:
        _load(args)
    assert CANARY not in str(raised.value)


def test_out_of_bounds_unknown_and_missing_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="workers"):
        Settings.load(workers=0)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("wrokers = 8\n", "utf-8")
    with pytest.raises(SettingsError, match="wrokers"):
        Settings.load(unknown)
    with pytest.raises(SettingsError, match="no settings file"):
        Settings.load(tmp_path / "absent.toml")


def test_the_hub_and_the_sdk_take_their_defaults_from_the_model() -> None:
    defaults = Settings.model_construct()
    hub = HubSettings()
    for name in HubSettings.model_fields.keys() & Settings.model_fields.keys():
        if name not in ("policy", "registry"):
            assert getattr(hub, name) == getattr(defaults, name), name
    assert hub.expiry_warning.days == defaults.expiry_warning_days


def test_the_hub_settings_come_from_the_settings(tmp_path: Path) -> None:
    authority = SigningKey.generate().public
    key_file = tmp_path / "authority.pub"
    key_file.write_text(base64.b64encode(authority.raw).decode() + "\n", "utf-8")
    seed = tmp_path / "hub.nk"
    settings = Settings.load(
        workers=3, authority_public=str(key_file), nats_nkey=str(seed), inbound_attempts=2
    )
    hub = HubSettings.from_settings(settings)
    assert (hub.workers, hub.inbound_attempts) == (3, 2)
    assert hub.authority == authority
    assert hub.credentials is not None
    assert hub.credentials.nkey_seed == seed


def test_a_bad_authority_key_is_named_without_echo() -> None:
    with pytest.raises(SettingsError, match="authority_public") as raised:
        Settings.load(authority_public=CANARY).authority_key()
    assert CANARY not in str(raised.value)


def test_the_sdk_says_which_setting_it_lacks(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="nats_url"):
        PartnerClient.from_settings(Settings.load())
    authority = base64.b64encode(SigningKey.generate().public.raw).decode()
    with pytest.raises(SettingsError, match="keystore"):
        PartnerClient.from_settings(
            Settings.load(nats_url="nats://127.0.0.1:4222", authority_public=authority)
        )
