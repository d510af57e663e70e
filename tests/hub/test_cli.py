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
        capture_output=True,
        text=True,
        env=env,
        check=False,
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


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens there once the probe is closed


def _hub_run_against_nothing(tmp_path: Path) -> list[str]:
    import base64

    key = base64.b64encode(bytes(range(32))).decode()
    return [sys.executable, "-m", "schakel", "hub", "run",
            "--nats", f"nats://127.0.0.1:{_closed_port()}", "--authority-public", key,
            "--data-dir", str(tmp_path)]  # fmt: skip


def test_a_hub_that_cannot_connect_says_so_in_one_line_and_exits(tmp_path: Path) -> None:
    """A wrong NATS address ends within the first-connect timeout, with one actionable line and
    a non-zero exit, not an endless retry."""
    import time

    start = time.monotonic()
    result = subprocess.run(_hub_run_against_nothing(tmp_path), capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    assert time.monotonic() - start < 30
    assert result.returncode == 2
    assert result.stdout == ""
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    # Nothing but JSON lines: the log's (errors counted, not repeated), then the reason.
    assert lines[-1]["event"] == "hub_failed", result.stderr
    assert lines[-1]["error"].startswith("cannot connect to nats://127.0.0.1:")
    assert all(line["event"] == "nats_error" for line in lines[:-1])
    assert len(lines) < 10
    assert "Traceback" not in result.stdout + result.stderr


def test_a_hub_still_connecting_stops_at_sigterm(tmp_path: Path) -> None:
    """SIGTERM is honoured at any moment, also while the first connection is being tried."""
    import signal
    import time

    process = subprocess.Popen(_hub_run_against_nothing(tmp_path), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        time.sleep(1.0)  # let it start connecting (the timeout is 10 s)
        start = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)
        assert time.monotonic() - start < 5
        assert "Traceback" not in err
    finally:
        process.kill()


def test_operator_mistakes_are_one_actionable_line(tmp_path: Path) -> None:
    """A slug without --type, a file that is no registration request, a malformed key id and a
    replay without naming what to replay: each ends with one line saying what to do."""
    env = {**os.environ, PASSPHRASE_ENV: "x", "SCHAKEL_AUTHORITY_PASSPHRASE": "x"}
    nowhere = f"nats://127.0.0.1:{_closed_port()}"
    junk = tmp_path / "POL.west.register.json"
    junk.write_text('{"not": "a request"}', "utf-8")
    cases = [
        (["keys", "init", "--org", "west", "--out", str(tmp_path)], "--type"),
        (["keys", "register", str(junk), "--authority", str(junk), "--nats", nowhere],
         "not a key event request"),
        (["keys", "revoke", "--org", "POL.west", "--kid", "nonsense", "--reason",
          "compromised", "--authority", str(junk), "--nats", nowhere], "not a key id"),
        (["dlq", "replay", "--nats", nowhere], "--seq"),
    ]  # fmt: skip
    for args, expected in cases:
        result = _run(*args, env=env)
        assert result.returncode == 2, (args, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and expected in lines[0], (args, result.stderr)
        assert "None." not in lines[0]


def test_an_embedded_hub_keeps_its_port_and_key_across_restarts(tmp_path: Path) -> None:
    """Without --nats and --identity (development), a restart finds the same server address
    and the same hub key, so partners keep connecting and keep trusting its notices."""
    import base64
    import signal
    import time

    key = base64.b64encode(bytes(range(32))).decode()
    command = [sys.executable, "-m", "schakel", "hub", "run", "--authority-public", key,
               "--data-dir", str(tmp_path)]  # fmt: skip
    seen = []
    for _ in range(2):
        with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) as process:  # fmt: skip
            assert process.stderr is not None
            deadline = time.monotonic() + 60
            event: dict[str, str] = {}
            while event.get("event") != "hub_running":
                assert time.monotonic() < deadline, "the hub did not start"
                line = process.stderr.readline()
                assert line or process.poll() is None, "the hub stopped"
                event = json.loads(line)  # nothing but JSON lines
            passphrase = (tmp_path / "hub.keystore.passphrase").read_text().strip()
            hub_key = load_keystore(tmp_path / "hub.keystore", SecretStr(passphrase)).signing_kid
            seen.append((event["nats"], hub_key))
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    assert seen[0] == seen[1]
    assert (tmp_path / "hub.keystore.passphrase").stat().st_mode & 0o777 == 0o600
