"""Folder mode: a back office that can only write and read files.

Under the folder the settings name (the adapter makes the sub-folders, mode 0700)::

    outbox/   the back office writes requests here, ``<name>.json``, as POST /v1/messages
              takes them (write elsewhere, then rename into outbox/: a rename is atomic)
    sent/     the adapter moves each request it sent here, with ``<name>.sent.json`` beside
              it (message id and case id)
    failed/   ... or here, with ``<name>.problem.json`` beside it (the RFC 9457 problem)
    inbox/    each delivery and refusal notice, ``<id>.json`` as GET /v1/inbox shows it,
              written to a temporary file, flushed to disk and renamed before NATS is
              acknowledged; the back office deletes or moves it when done

A request is sent under an idempotency key made of its name and a digest of its content:
after a crash between sending and moving, the next scan finds the first answer (sent once); a
new request under a name used before is a new message (sent/ keeps both, ``name.2.json``).
Request files are read without following links, only if regular, and bounded in size. A delivery
already in ``inbox/`` is not written again when it comes back after a crash (the window left:
a crash between the rename and the acknowledgement, when the back office took the file
already; its id is its message id, to deduplicate by).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final

import structlog

from schakel.adapters.client import Delivery, DirectoryStale, PartnerClient, Refusal
from schakel.adapters.http import MAX_REQUEST_BYTES, describe, notice_id
from schakel.bus import TransportError, stop

if TYPE_CHECKING:
    from schakel.adapters.http import AdapterApi

__all__ = ["Folder", "run_folder"]

_NAME: Final = re.compile(r"[A-Za-z0-9._-]{1,100}\.json")
_SCAN: Final = 0.5  # seconds between looks at outbox/
_log = structlog.get_logger("schakel.adapter")


class Folder:
    """The folder's layout."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.outbox, self.sent, self.failed = root / "outbox", root / "sent", root / "failed"
        self.inbox, self.tmp = root / "inbox", root / ".tmp"
        for path in (root, self.outbox, self.sent, self.failed, self.inbox, self.tmp):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            if path.is_symlink() or not path.is_dir():
                raise OSError(f"{path.name}: not a folder of the adapter's")
            os.chmod(path, 0o700)  # also one that existed before

    def read(self, path: Path) -> bytes | None:
        """A request file's bytes: a regular file (no link followed, no device, no pipe), at
        most ``MAX_REQUEST_BYTES`` (``None``: larger)."""
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                raise OSError("not a regular file")
            data = b""
            while len(data) <= MAX_REQUEST_BYTES:
                chunk = os.read(descriptor, MAX_REQUEST_BYTES + 1 - len(data))
                if not chunk:
                    return data
                data += chunk
            return None
        finally:
            os.close(descriptor)

    def write(self, folder: Path, name: str, data: bytes) -> None:
        """``data`` as ``folder/name``: temporary file (created anew, no link followed),
        flushed to disk, renamed, the folder flushed (whoever sees the name sees all of it,
        also after a power cut)."""
        temporary = self.tmp / (name + ".part")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)  # a leftover of a crash, or something planted: never followed
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        descriptor = os.open(temporary, flags, 0o600)
        try:
            os.write(descriptor, data)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, folder / name)
        directory = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


async def run_folder(
    api: AdapterApi,
    client: PartnerClient,
    folder: Folder,
    *,
    on_refusal: Callable[[Refusal], None] | None = None,
) -> None:
    """Send what appears in outbox/ and write what arrives into inbox/, until cancelled.
    Neither stops for an error: each is logged (its kind only) and the work goes on. (Two
    tasks that :func:`stop` ends, not a ``TaskGroup``, which cancels only once.)"""
    tasks = [
        asyncio.create_task(_forever("folder_outbox", lambda: _outbox_once(api, folder))),
        asyncio.create_task(
            _forever("folder_inbox", lambda: _inbox_once(client, folder, on_refusal))
        ),
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # neither ends but by an error that is not an Exception: raise it
    finally:
        await stop(*tasks)


async def _forever(what: str, once: Callable[[], Awaitable[None]]) -> None:
    while True:
        try:
            await once()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _log.warning("folder_step_failed", step=what, error=type(exc).__name__)
            await asyncio.sleep(1.0)


async def _outbox_once(api: AdapterApi, folder: Folder) -> None:
    for path in sorted(folder.outbox.iterdir()):
        if _NAME.fullmatch(path.name):  # others: the back office's temporary files, say
            await _send_file(api, folder, path)
    await asyncio.sleep(_SCAN)


async def _send_file(api: AdapterApi, folder: Folder, path: Path) -> None:
    name = path.name
    try:
        data = folder.read(path)
    except OSError:
        data = b""  # gone meanwhile (the next scan sees), or not a regular file: failed
        if not os.path.lexists(path):
            return
        status, doc = 422, _problem("not-a-file", "not a regular file", 422)
    else:
        if data is None:
            status, doc = 413, _problem("too-large", "larger than the adapter takes", 413)
        else:
            # The key names the file and its content: the same request again (after a
            # crash) is sent once; a new request under an old name is a new message.
            key = f"folder/{name}/{hashlib.sha256(data).hexdigest()[:32]}"
            try:
                status, doc = await api.submit(data, key)
            except (TransportError, DirectoryStale):
                return  # the hub cannot be reached now: the next scan tries again
            except Exception as exc:
                _log.warning("folder_request_failed", error=type(exc).__name__)
                status, doc = 500, _problem("internal", "the adapter failed; nothing sent", 500)
    if status == 503:
        return  # the hub cannot take it now: the next scan tries again
    target = folder.sent if status == 202 else folder.failed
    stem = _free_stem(target, name.removesuffix(".json"))
    suffix = ".sent.json" if status == 202 else ".problem.json"
    folder.write(target, stem + suffix, json.dumps(doc).encode())
    os.replace(path, target / (stem + ".json"))
    _log.info("folder_request_done", status=status)


def _free_stem(folder: Path, stem: str) -> str:
    """``stem``, or ``stem.2``, ``stem.3``, ...: never over an earlier request's files."""
    candidate, n = stem, 1
    while os.path.lexists(folder / f"{candidate}.json"):
        n += 1
        candidate = f"{stem}.{n}"
    return candidate


def _problem(kind: str, title: str, status: int) -> dict[str, object]:
    return {"type": f"https://schakel.example/problems/{kind}", "title": title,
            "status": status}  # fmt: skip


async def _inbox_once(
    client: PartnerClient, folder: Folder, on_refusal: Callable[[Refusal], None] | None
) -> None:
    item = await client.receive(timeout=5.0)
    if not isinstance(item, Delivery | Refusal):
        return
    if isinstance(item, Refusal):
        if on_refusal is not None:
            on_refusal(item)
        item_id = f"refusal-{notice_id(item.notice.model_dump_json())}"
    else:
        item_id = item.message_id
    name = f"{item_id}.json"
    if not os.path.lexists(folder.inbox / name):  # back after a crash before the ack: once
        folder.write(folder.inbox, name, json.dumps(describe(item_id, item)).encode())
    await item.ack()  # remembered, acknowledged, then its receipt sent
