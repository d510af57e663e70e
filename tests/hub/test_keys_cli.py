"""The key lifecycle commands, run as real processes against a real nats-server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from pydantic import SecretStr

from schakel.bus import Bus, Topology
from schakel.contracts.policy import default_policy
from schakel.hub.natsserver import NatsServer
from schakel.keys.keystore import load_keystore


def _schakel(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "schakel", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


async def test_authority_register_rotate_revoke_verify(tmp_path: Path) -> None:
    """A security officer registers partners, rotates a key, revokes one; the log verifies."""
    env = {**os.environ, "SCHAKEL_KEYSTORE_PASSPHRASE": "partner-pass",
           "SCHAKEL_AUTHORITY_PASSPHRASE": "authority-pass"}  # fmt: skip

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return _schakel(*args, env=env)

    authority = tmp_path / "authority"
    assert run("keys", "authority-init", "--out", str(authority)).returncode == 0
    for org, kind in (("west", "POL"), ("west", "ZVH")):
        result = run("keys", "init", "--org", org, "--type", kind, "--out", str(tmp_path / kind))
        assert result.returncode == 0, result.stderr
    pol_kid = json.loads((tmp_path / "POL" / "POL.west.public.json").read_text())["signing_key"][
        "kid"
    ]
    async with NatsServer(tmp_path / "nats") as server:
        async with Bus(server.url, name="test") as bus:  # what a hub does when it starts
            await Topology(bus, default_policy().limits).ensure()
        url = ["--nats", server.url]
        keystore = str(authority / "directory-authority.keystore")
        steps = [
            ("keys", "register", str(tmp_path / "POL" / "POL.west.register.json"),
             str(tmp_path / "ZVH" / "ZVH.west.register.json"), "--authority", keystore, *url),
            ("keys", "rotate", "--keystore", str(tmp_path / "ZVH" / "ZVH.west.keystore"),
             "--authority", keystore, *url),
            ("keys", "revoke", "--org", "POL.west", "--kid", pol_kid, "--reason", "compromised",
             "--authority", keystore, *url),
        ]  # fmt: skip
        for step in steps:
            result = await asyncio.to_thread(run, *step)
            assert result.returncode == 0, (step[:2], result.stderr)
        # Registering again changes nothing and says so (exit 1), instead of claiming success.
        again = await asyncio.to_thread(run, *steps[0])
        assert again.returncode == 1
        assert "POL.west is registered already" in again.stderr
        assert "registered 0 request(s)" in again.stdout
        # A key that would be expired already is refused before anything happens; a rotation
        # that cannot publish leaves the keystore as it was.
        zvh_keystore = tmp_path / "ZVH" / "ZVH.west.keystore"

        def kids() -> list[str]:
            opened = load_keystore(zvh_keystore, SecretStr("partner-pass"))
            return [c.kid for c in opened.certificates]

        before = kids()
        negative = await asyncio.to_thread(run, "keys", "rotate", "--keystore",
                                           str(zvh_keystore), "--authority", keystore,
                                           "--days", "-5", *url)  # fmt: skip
        assert negative.returncode == 2 and "from 1 to 3650" in negative.stderr
        assert kids() == before
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed = f"nats://127.0.0.1:{probe.getsockname()[1]}"
        failed = await asyncio.to_thread(run, "keys", "rotate", "--keystore", str(zvh_keystore),
                                         "--authority", keystore, "--nats", closed)  # fmt: skip
        assert failed.returncode == 2
        assert "the key was not published; the keystore is as it was" in failed.stderr
        assert kids() == before
        # The two halves of a rotation on two machines: the partner signs, the authority appends.
        request = tmp_path / "ZVH" / "ZVH.west.rotate.json"
        half = await asyncio.to_thread(run, "keys", "rotate", "--keystore",
                                       str(tmp_path / "ZVH" / "ZVH.west.keystore"),
                                       "--request-out", str(request))  # fmt: skip
        assert half.returncode == 0, half.stderr
        other = await asyncio.to_thread(run, "keys", "register", str(request),
                                        "--authority", keystore, *url)  # fmt: skip
        assert other.returncode == 0, other.stderr
        verify = await asyncio.to_thread(
            run, "keys", "verify-directory", "--authority-public",
            str(authority / "directory-authority.pub"), *url,
        )  # fmt: skip
        assert verify.returncode == 0, verify.stderr
        assert "key log: 5 valid events" in verify.stdout
        listing = await asyncio.to_thread(
            run, "keys", "list", "--authority-public",
            str(authority / "directory-authority.pub"), *url,
        )  # fmt: skip
        assert listing.returncode == 0, listing.stderr
        assert f"{pol_kid}  REVOKED" in listing.stdout
        zvh = listing.stdout.split("ZVH.west")[1]
        assert zvh.count("encryption") == 3 and "valid" in zvh
        assert "2 organisation(s), key log of 5 events" in listing.stdout
        version = await asyncio.to_thread(run, "--version")
        assert version.returncode == 0 and version.stdout.startswith("schakel ")
        assert "ALARM" not in verify.stdout
        wrong = await asyncio.to_thread(
            run, "keys", "verify-directory", "--authority-public", "A" * 43 + "=", *url
        )
        assert wrong.returncode == 1
        assert "ALARM: entry at stream sequence 1 skipped" in wrong.stdout
        assert "key log: 0 valid events" in wrong.stdout
