"""The package as it ships: a wheel built from this tree carries its data files and works
from site-packages, without the source tree (the shipped registry and policy were once missing
from it, and `schakel demo` and `nats-config` failed with FileNotFoundError)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_NOT_SOURCE = shutil.ignore_patterns(
    ".venv", ".git", "*.egg-info", "build", "dist", "__pycache__", ".*_cache", "tests", "bench"
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built offline from a copy of the tree and unpacked as site-packages would
    hold it; the directory to put first on ``sys.path``."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=_NOT_SOURCE)
    build = subprocess.run(
        [sys.executable, "-c", "from setuptools import build_meta as b; "
         "print(b.build_wheel('dist'))"],
        cwd=source, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = source / "dist" / build.stdout.strip().splitlines()[-1]
    site = work / "site-packages"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def _run(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHAKEL_")}
    env["PYTHONPATH"] = str(site)  # ahead of the editable install of the source tree
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, check=False, timeout=120)  # fmt: skip


def test_the_wheel_carries_its_data_and_runs_from_site_packages(
    installed: Path, tmp_path: Path
) -> None:
    """Registry, policy, schemas and vectors load from the installed package, and the commands
    that need them work."""
    probe = _run(installed, "-c", (
        "import schakel, schakel.hub.registry as r, schakel.contracts.policy as p; "
        "print(schakel.__file__); print(len(r.default_registry().partners())); "
        "print(len(p.default_policy().transitions))"
    ), cwd=tmp_path)  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    where, partners, transitions = probe.stdout.split()
    assert Path(where).is_relative_to(installed), where
    assert int(partners) > 0 and int(transitions) > 0
    config = _run(installed, "-m", "schakel", "nats-config", "--out", str(tmp_path / "nats"),
                  "--host", "127.0.0.1", cwd=tmp_path)  # fmt: skip
    assert config.returncode == 0, config.stderr
    version = _run(installed, "-m", "schakel", "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("schakel "), version
    assert "unknown" not in version.stdout
