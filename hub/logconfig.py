"""Logging: structlog configured once, JSON lines, metadata only.

:func:`drop_content` runs on every event. It removes any field whose name suggests content or
key material and any bytes value, so a careless ``log.info(..., body=...)`` cannot leak a
message or a key into the log.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Final, TextIO

import structlog

__all__ = ["FORBIDDEN_FIELDS", "configure_logging", "drop_content"]

FORBIDDEN_FIELDS: Final = frozenset(
    {
        "body",
        "content",
        "payload",
        "data",
        "envelope",
        "plaintext",
        "ciphertext",
        "key",
        "secret",
        "seed",
        "passphrase",
        "wrapped_key",
        "signature",
        "text",
    }
)


def drop_content(
    logger: object, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Remove content and key material from a log event."""
    for name in list(event):
        value = event[name]
        if name in FORBIDDEN_FIELDS or isinstance(value, bytes | bytearray | memoryview):
            event[name] = "<dropped>"
    return event


def configure_logging(
    *, json: bool = True, level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    """Configure structlog for the process (call once, at the edge)."""
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            drop_content,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
