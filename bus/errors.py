"""NATS errors as Schakel's own: nothing above ``bus`` catches or names a ``nats`` class.

Every operation of :class:`~schakel.bus.connection.Bus` raises :class:`TransportError`
(with the NATS error as its ``__cause__``) when NATS could not do what was asked;
:func:`is_transient` says whether that was the connection (try again) or the request.
"""

from __future__ import annotations

from types import TracebackType
from typing import Final

import nats.errors
import nats.js.errors

from schakel.contracts.errors import SchakelError

__all__ = ["StreamFull", "TransportError", "error_code", "is_transient", "mapped"]


class TransportError(SchakelError):
    """NATS could not do what was asked."""


class StreamFull(TransportError):
    """JetStream refused a publish: the stream is at its limit of messages or bytes."""


# Failures of the connection rather than of the request: while NATS is unreachable every
# request fails alike, and none of the messages involved should be set aside as poison for it.
_TRANSIENT: Final = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoRespondersError,
    nats.errors.NoServersError,
    nats.errors.StaleConnectionError,
    nats.errors.TimeoutError,
    nats.errors.FlushTimeoutError,
    nats.js.errors.ServiceUnavailableError,
    TimeoutError,
    ConnectionError,
)
# JetStream's error codes for a stream that refuses more (maximum messages / bytes).
_STREAM_FULL: Final = frozenset({10077, 10047})


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` says NATS was unreachable or slow (try again), not that the request
    or the message cannot be done."""
    return isinstance(exc, _TRANSIENT) or (
        isinstance(exc, TransportError) and isinstance(exc.__cause__, _TRANSIENT)
    )


def error_code(exc: BaseException) -> int | None:
    """JetStream's error code behind ``exc`` (a :class:`TransportError` or its cause)."""
    cause = exc.__cause__ if isinstance(exc, TransportError) else exc
    code = getattr(cause, "err_code", None)
    return code if isinstance(code, int) else None


class mapped:
    """Raise NATS errors inside the block as :class:`TransportError` naming ``what`` was
    attempted and the kind of failure (never the server's text, which may echo input).

    A class rather than a generator: it wraps every NATS operation on the hot path, and a
    generator-based context manager costs several times more per use."""

    __slots__ = ("_what",)

    def __init__(self, what: str) -> None:
        self._what = what

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        what = self._what
        if isinstance(exc, nats.js.errors.APIError):
            code = getattr(exc, "err_code", None)  # some subclasses are raised without one
            if code in _STREAM_FULL:
                raise StreamFull(f"{what}: the stream is full") from exc
            raise TransportError(f"{what}: {type(exc).__name__} {code}") from exc
        if isinstance(exc, (nats.errors.Error, TimeoutError, ConnectionError)):
            raise TransportError(f"{what}: {type(exc).__name__}") from exc
