"""Exactly-once effect at the back office: the adapter's seen-set survives a restart."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from schakel.adapters.seen import SeenStore


def test_store_forgets_expired_ids(tmp_path: Path) -> None:
    """Ids are kept until their message expires, and no longer, across reloads."""
    path = tmp_path / "x.seen"
    store = SeenStore(path)
    now = dt.datetime.now(dt.UTC)
    store.add("live", now + dt.timedelta(days=1))
    store.add("dead", now - dt.timedelta(seconds=1))
    again = SeenStore(path)
    assert "live" in again
    assert "dead" not in again
    assert len(path.read_text().splitlines()) == 1  # compacted on load
