"""README "Running it", run as written: the deployment walkthrough as real processes.

The shell block between the ``walkthrough`` markers in README.md is extracted and run by bash
in an empty directory, with this environment's ``bin/`` (``schakel``, ``nats-server``,
``python``) first on PATH and free ports for NATS and its monitoring. Nothing is substituted:
if the README's commands stop working, this test fails; if the test needs another step, the
README gets it. Each step checks its own outcome (``set -e``: the first failing command fails
the walkthrough), and the block ends by stopping what it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from schakel.hub.natsserver import free_port

README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(
    r"<!-- walkthrough -->\s*```sh\n(?P<script>.*?)```\s*<!-- /walkthrough -->", re.DOTALL
)


def walkthrough() -> str:
    """The walkthrough's shell lines, exactly as the README shows them."""
    found = _BLOCK.search(README.read_text("utf-8"))
    assert found is not None, "README.md has no walkthrough block"
    return found["script"]


@pytest.mark.timeout(420)
def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    """Authority, hub keystore, three partners, nats-config with a throwaway CA, nats-server on
    that config, `hub run`, registration, an exchange, rotation of the recipient's encryption
    key while its adapter runs (0 lost, 0 undecryptable), a revocation, a new partner added
    and talking without a hub restart, `audit verify`, `dlq list`: every administrative step
    through the CLI as the operator's or the security officer's user."""
    script = tmp_path / "walkthrough.sh"
    script.write_text("set -euo pipefail\nset -x\n" + walkthrough(), "utf-8")
    bin_dir = str(Path(sys.executable).parent)
    env = {key: value for key, value in os.environ.items() if not key.startswith("SCHAKEL_")}
    env |= {
        "PATH": bin_dir + os.pathsep + env.get("PATH", ""),
        "NATS_PORT": str(free_port()),
        "MONITOR_PORT": str(free_port()),
    }
    process = subprocess.Popen(
        ["bash", str(script)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its background jobs are ours to stop, whatever happens
    )
    try:
        output, _ = process.communicate(timeout=360)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    text = output.decode("utf-8", "replace")
    logs = "".join(
        f"\n--- {log.relative_to(tmp_path)} ---\n{log.read_text('utf-8', 'replace')[-4000:]}"
        for log in (tmp_path / "hub" / "hub.log", tmp_path / "nats" / "server.log")
        if log.exists()
    )
    assert process.returncode == 0, text[-8000:] + logs
    received = (tmp_path / "zvh.out").read_text("utf-8")
    assert received.count("received ") == 4, received
    assert "REJECTED" not in received, received
    # The adapters' log lines go to stderr (here: the output); stdout is the answer.
    assert "foreign_key_for_own_org" not in text + received  # no compromise alarm
    hub_log = (tmp_path / "hub" / "hub.log").read_text("utf-8")
    assert "Traceback" not in text + hub_log
    for line in hub_log.splitlines():  # `hub run` writes nothing but JSON lines
        assert isinstance(json.loads(line), dict), line
    assert "audit chain intact" in text
    assert "0 dead letter(s)" in text
