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

A request is sent under the idempotency key ``file:<name>``: after a crash between sending
and moving, the next scan sends it again under the same message id (stored once). A delivery
already in ``inbox/`` is not written again when it comes back after a crash (the window left:
a crash between the rename and the acknowledgement, when the back office took the file
already; its id is its message id, to deduplicate by).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final

import structlog

from schakel.adapters.client import Delivery, PartnerClient, Refusal
from schakel.adapters.http import MAX_REQUEST_BYTES, describe, notice_id

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
        for path in (self.outbox, self.sent, self.failed, self.inbox, self.tmp):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)

    def write(self, folder: Path, name: str, data: bytes) -> None:
        """``data`` as ``folder/name``: temporary file, flushed to disk, renamed, the folder
        flushed (whoever sees the name sees all of it, also after a power cut)."""
        temporary = self.tmp / (name + ".part")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
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
    """Send what appears in outbox/ and write what arrives into inbox/, until cancelled."""
    await asyncio.gather(_outbox(api, folder), _inbox(client, folder, on_refusal))


async def _outbox(api: AdapterApi, folder: Folder) -> None:
    while True:
        for path in sorted(folder.outbox.iterdir()):
            if not _NAME.fullmatch(path.name) or not path.is_file():
                continue  # not a request (a temporary file of the back office's, say)
            await _send_file(api, folder, path)
        await asyncio.sleep(_SCAN)


async def _send_file(api: AdapterApi, folder: Folder, path: Path) -> None:
    name = path.name
    try:
        if path.stat().st_size > MAX_REQUEST_BYTES:
            status, doc = 413, {"type": "https://schakel.example/problems/too-large",
                                "title": "the request is larger than the adapter takes",
                                "status": 413}  # fmt: skip
        else:
            status, doc = await api.submit(path.read_bytes(), f"file:{name}")
    except OSError:
        return  # gone meanwhile, or unreadable now: the next scan sees
    if status == 503:
        return  # the hub cannot take it now: the next scan tries again
    target = folder.sent if status == 202 else folder.failed
    suffix = ".sent.json" if status == 202 else ".problem.json"
    folder.write(target, name.removesuffix(".json") + suffix, json.dumps(doc).encode())
    os.replace(path, target / name)
    _log.info("folder_request_done", status=status)


async def _inbox(
    client: PartnerClient, folder: Folder, on_refusal: Callable[[Refusal], None] | None
) -> None:
    while True:
        item = await client.receive(timeout=5.0)
        if not isinstance(item, Delivery | Refusal):
            continue
        if isinstance(item, Refusal):
            if on_refusal is not None:
                on_refusal(item)
            item_id = f"refusal-{notice_id(item.notice.model_dump_json())}"
        else:
            item_id = item.message_id
        name = f"{item_id}.json"
        if not (folder.inbox / name).exists():  # back after a crash before the ack: once
            folder.write(folder.inbox, name, json.dumps(describe(item_id, item)).encode())
        await item.ack()  # remembered, acknowledged, then its receipt sent
