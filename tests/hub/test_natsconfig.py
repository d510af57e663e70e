"""The generated nats-server configuration, read as a security officer would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from schakel.contracts.ids import OrgId
from schakel.hub.natsconfig import (
    ADMIN_ROLES,
    HUB_ACCOUNT,
    account_name,
    admin_account,
    partner_permissions,
    write_config,
)
from schakel.hub.registry import default_registry


def _config(path: Path) -> dict[str, object]:
    text = "".join(line for line in path.read_text().splitlines(True) if not line.startswith("#"))
    data: dict[str, object] = json.loads(text)
    return data


def test_no_wildcards_in_jetstream_api_grants() -> None:
    """Every $JS.API grant of every partner is one exact subject."""
    for org in default_registry().partners():
        grants = partner_permissions(org)["publish"]["allow"]
        api = [g for g in grants if g.startswith("$JS.API")]
        assert api, org
        assert all("*" not in g and ">" not in g for g in api), (org, api)


def test_grants_name_only_the_partners_own_lane() -> None:
    """A partner's grants mention its own subject, consumer and inbox, and no other partner."""
    org = OrgId("POL.west")
    text = json.dumps(partner_permissions(org))
    for other in default_registry().partners() - {org}:
        assert other not in text
        assert other.replace(".", "-") not in text


def test_cli_writes_config_and_private_seeds(tmp_path: Path) -> None:
    """`schakel nats-config` writes a config with every registry partner and 0600 seeds."""
    out = tmp_path / "nats"
    result = subprocess.run(
        [sys.executable, "-m", "schakel", "nats-config", "--out", str(out), "--port", "4333",
         "--store-dir", str(tmp_path / "js"), "--tls-cert", "c.pem", "--tls-key", "k.pem",
         "--tls-ca", "ca.pem", "--cluster-port", "6222", "--route", "nats://10.0.0.2:6222"],
        capture_output=True, text=True, check=False, env=os.environ.copy(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = _config(out / "nats-server.conf")
    accounts: dict[str, Any] = config["accounts"]  # type: ignore[assignment]
    users = [user for account in accounts.values() for user in account["users"]]
    assert len(users) == len(default_registry().partners()) + 1 + len(ADMIN_ROLES)
    assert all(len(account["users"]) == 1 for account in accounts.values())
    assert config["tls"]["ca_file"] == "ca.pem"  # type: ignore[index]
    assert config["cluster"]["tls"]["verify"] is True  # type: ignore[index]
    seeds = list((out / "creds").glob("*.nk"))
    assert len(seeds) == len(users)
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in seeds)
    assert all(seed.read_text()[:2] == "SU" for seed in seeds)
    text = (out / "nats-server.conf").read_text()
    assert not any(seed.read_text().strip() in text for seed in seeds)  # public keys only
    # Adding a partner later, as the runbook says, with only --out: TLS, port, storage and the
    # cluster are kept, not silently dropped.
    again = subprocess.run(
        [sys.executable, "-m", "schakel", "nats-config", "--out", str(out)],
        capture_output=True, text=True, check=False, env=os.environ.copy(),
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert (out / "nats-server.conf").read_text() == text


def test_cli_refuses_a_public_listener_without_tls(tmp_path: Path) -> None:
    """Clients on the network would send their NKey signatures and metadata in the clear."""
    result = subprocess.run(
        [sys.executable, "-m", "schakel", "nats-config", "--out", str(tmp_path),
         "--host", "0.0.0.0"],
        capture_output=True, text=True, check=False, env=os.environ.copy(),
    )  # fmt: skip
    assert result.returncode == 2
    assert "without TLS" in result.stderr
    assert not (tmp_path / "nats-server.conf").exists()
    loopback = subprocess.run(
        [sys.executable, "-m", "schakel", "nats-config", "--out", str(tmp_path),
         "--host", "127.0.0.1"],
        capture_output=True, text=True, check=False, env=os.environ.copy(),
    )  # fmt: skip
    assert loopback.returncode == 0, loopback.stderr


def test_regenerating_keeps_existing_seeds(tmp_path: Path) -> None:
    """Adding a partner later leaves the others' credentials untouched."""
    first = write_config(tmp_path, [OrgId("POL.west")], store_dir=tmp_path / "js")
    seed = (tmp_path / "creds" / "POL.west.nk").read_bytes()
    write_config(tmp_path, [OrgId("POL.west"), OrgId("OM.west")], store_dir=tmp_path / "js")
    assert (tmp_path / "creds" / "POL.west.nk").read_bytes() == seed
    assert first.read_text().count('"nkey"') == 3 + len(ADMIN_ROLES)


def test_accounts_confine_every_partner(tmp_path: Path) -> None:
    """Only the hub's account has JetStream; each partner's account imports exactly the subjects
    its user may publish (plus the key log's stream), and the hub exports each of them to that
    partner's account alone, except the key directory, which every partner reads."""
    partners = sorted(default_registry().partners())
    config = _config(write_config(tmp_path, partners, store_dir=tmp_path / "js"))
    accounts: dict[str, Any] = config["accounts"]  # type: ignore[assignment]
    admins = [admin_account(role) for role in ADMIN_ROLES]
    assert set(accounts) == {HUB_ACCOUNT, *(account_name(o) for o in partners), *admins}
    assert [name for name, a in accounts.items() if "jetstream" in a] == [HUB_ACCOUNT]
    hub_exports = accounts[HUB_ACCOUNT]["exports"]
    exports = {e["stream"]: e["accounts"] for e in hub_exports if "stream" in e}
    exports |= {
        e["service"]: [a for a in e["accounts"] if a not in admins]
        for e in hub_exports
        if "service" in e
    }
    for org in partners:
        account = accounts[account_name(org)]
        allowed = account["users"][0]["permissions"]["publish"]["allow"]
        services = [i["service"]["subject"] for i in account["imports"] if "service" in i]
        assert sorted(services) == sorted(allowed)
        assert all(i[k]["account"] == HUB_ACCOUNT for i in account["imports"] for k in i)
        for subject in services:
            shared = "KEYLOG" in subject
            assert exports[subject] == ([account_name(o) for o in partners] if shared
                                        else [account_name(org)]), subject  # fmt: skip


def test_administrative_users_get_exactly_their_role(tmp_path: Path) -> None:
    """The operator and the security officer each have an account of their own importing
    exactly their role's grants (no JetStream API but direct gets, no partner's subject), and
    each of those exports names that account."""
    config = _config(write_config(tmp_path, [OrgId("POL.west")], store_dir=tmp_path / "js"))
    accounts: dict[str, Any] = config["accounts"]  # type: ignore[assignment]
    services = {e["service"]: e["accounts"] for e in accounts[HUB_ACCOUNT]["exports"]
                if "service" in e}  # fmt: skip
    for role, grants in ADMIN_ROLES.items():
        account = accounts[admin_account(role)]
        assert "jetstream" not in account
        allowed = account["users"][0]["permissions"]["publish"]["allow"]
        imported = [i["service"]["subject"] for i in account["imports"]]
        assert sorted(allowed) == sorted(imported) == sorted(s for s, _ in grants)
        assert all(not s.startswith("$JS.API") or s.startswith("$JS.API.DIRECT.GET.")
                   for s in allowed), allowed  # fmt: skip
        assert not any("schakel.in." in s or "schakel.out." in s for s in allowed)
        for subject in allowed:
            assert admin_account(role) in services[subject]
    assert (tmp_path / "creds" / "operator.nk").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "creds" / "security.nk").stat().st_mode & 0o777 == 0o600


async def test_reload_waits_for_the_servers_answer_and_fails_when_refused(tmp_path: Path) -> None:
    """`nats-config --reload` signals the running server and waits for its new configuration
    load time; a configuration the server refuses (a port change needs a restart) fails the
    command, where it used to exit 0."""
    import asyncio

    from schakel.hub.natsserver import NatsServer, free_port

    out, port, monitor = tmp_path / "nats", free_port(), free_port()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "schakel", "nats-config", "--out", str(out), *args],
            capture_output=True, text=True, check=False, env=os.environ.copy(), timeout=60,
        )  # fmt: skip

    first = run("--host", "127.0.0.1", "--port", str(port), "--monitor-port", str(monitor),
                "--store-dir", str(tmp_path / "js"))  # fmt: skip
    assert first.returncode == 0, first.stderr
    async with NatsServer(tmp_path / "server", port=port, config=out / "nats-server.conf"):
        again = await asyncio.to_thread(run, "--reload")
        assert again.returncode == 0, again.stderr
        assert "reloaded" in again.stdout
        refused = await asyncio.to_thread(run, "--port", str(free_port()), "--reload")
        assert refused.returncode == 2
        assert "did not take the new configuration" in refused.stderr
    stopped = await asyncio.to_thread(run, "--reload")  # no server: says so
    assert stopped.returncode == 2
    assert "reload" in stopped.stderr


def test_a_rerun_keeps_the_registry_it_was_given(tmp_path: Path) -> None:
    """Run again with --out only (as its own hint says), nats-config keeps the registry file
    it was given, instead of the shipped example (which dropped the real partners and made
    users for the example's)."""
    registry = tmp_path / "registry.toml"
    registry.write_text('national = []\n[regions.west]\ngemeenten = ["GEM.nieuwdorp"]\n'
                        'zvh = ["ZVH.west"]\npol = ["POL.west"]\nom = ["OM.west"]\n')  # fmt: skip
    out = tmp_path / "nats"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "schakel", "nats-config", "--out", str(out),
             "--host", "127.0.0.1", *args],
            capture_output=True, text=True, check=False, env=os.environ.copy(),
        )  # fmt: skip

    assert run("--registry", str(registry)).returncode == 0
    first = (out / "nats-server.conf").read_text()
    again = run()
    assert again.returncode == 0, again.stderr
    assert (out / "nats-server.conf").read_text() == first
    assert "GEM.nieuwdorp" in first and "AIVD.nl" not in first
