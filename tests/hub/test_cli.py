"""The `schakel` command line, run as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pydantic import SecretStr

from schakel.keys.identity import PublicKeyRecord
from schakel.keys.keystore import PASSPHRASE_ENV, load_keystore


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "schakel", *args],
        capture_output=True, text=True, env=env, check=False,
    )


def test_keys_init_creates_keystore_and_prints_record(tmp_path: Path) -> None:
    """`schakel keys init` writes a 0600 keystore and prints a valid public key record."""
    env = {**os.environ, PASSPHRASE_ENV: "s3cret-pass"}
    result = _run("keys", "init", "--org", "west", "--type", "POL", "--out", str(tmp_path), env=env)
    assert result.returncode == 0, result.stderr
    record = PublicKeyRecord.model_validate(json.loads(result.stdout))
    assert record.org == "POL.west"
    keystore = tmp_path / "POL.west.keystore"
    assert keystore.stat().st_mode & 0o777 == 0o600
    assert load_keystore(keystore, SecretStr("s3cret-pass")).signing_kid == record.signing_key.kid
    again = _run("keys", "init", "--org", "POL.west", "--out", str(tmp_path), env=env)
    assert again.returncode == 2 and "exists" in again.stderr


def test_keys_init_rejects_bad_org(tmp_path: Path) -> None:
    """An organisation id of an unknown type is a clear error with exit status 2."""
    env = {**os.environ, PASSPHRASE_ENV: "x"}
    result = _run("keys", "init", "--org", "XYZ.foo", "--out", str(tmp_path), env=env)
    assert result.returncode == 2
    assert "not an organisation id" in result.stderr
