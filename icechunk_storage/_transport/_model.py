"""What crosses the transport seam: requests, responses, the transport protocol, its config,
and the time limits every attempt lives under.

A provider builds and signs a :class:`Request`; a :class:`Transport` sends it and returns a
:class:`Response`. ``Transport.read`` is an object GET with the integrity rules of
``_integrity.py`` applied; ``Transport.request`` is any other request. Transports raise only
errors of the ``_errors`` tree; mapping an HTTP status to an error is the provider's job,
retrying is ``BaseStorage._call``'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import urlsplit

import attrs

from .._errors import ConfigurationError

if TYPE_CHECKING:
    from .._ranges import ByteRequest

__all__ = [
    "DEFAULT_STREAM_TIMEOUT",
    "ERROR_BODY_CAP",
    "MAX_INTERIM_RESPONSES",
    "MAX_RESPONSE_HEAD",
    "MAX_TRAILER_BYTES",
    "STALL_FLOOR_BYTES_PER_SECOND",
    "Request",
    "Response",
    "Transport",
    "TransportConfig",
    "attempt_deadline",
]

MAX_RESPONSE_HEAD: Final = 64 * 1024
"""A response head (status line and headers) larger than this is a protocol error."""
ERROR_BODY_CAP: Final = 64 * 1024
"""Bodies of non-2xx responses are read up to this; past it the connection is dropped."""
MAX_INTERIM_RESPONSES: Final = 4
"""Interim (1xx) responses accepted before the final one; more is a protocol error."""
MAX_TRAILER_BYTES: Final = 8 * 1024
"""The trailer section of a chunked body, at most."""
DISCARD_LIMIT: Final = 1024 * 1024
"""A server that ignores Range answers with the whole object; at most this many bytes past
the range asked for are read and dropped before the connection is closed instead."""

DEFAULT_STREAM_TIMEOUT: Final = 10.0
"""Window of the stall check, when the user sets none (Icechunk's 10 s grace)."""
STALL_FLOOR_BYTES_PER_SECOND: Final = 1024
"""The throughput floor: in every stall window a body still expected must deliver at least
this many bytes per second on average (or all it has left). A drip of a few bytes a second
is a stall."""
DEADLINE_BASE_SECONDS: Final = 60.0
DEADLINE_BYTES_PER_SECOND: Final = 256 * 1024
"""Every attempt has a deadline even when the user sets no timeout: 60 s, plus one second
per 256 KiB of body sent or expected (the size asked for, or the Content-Length announced).
``StorageTimeoutSettings.operation_attempt_timeout_ms`` replaces it when set."""


def attempt_deadline(size: int) -> float:
    """Seconds one attempt may take when the user set no attempt timeout."""
    return DEADLINE_BASE_SECONDS + max(size, 0) / DEADLINE_BYTES_PER_SECOND


def _check_origin(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    parts = urlsplit(value) if isinstance(value, str) else None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.username is not None
    ):
        raise ConfigurationError(
            f"A transport origin is 'http(s)://host[:port]' with no path or credentials, "
            f"got {value!r}."
        )


def _check_optional_positive(instance: object, attribute: Any, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigurationError(f"{attribute.name} must be a number > 0 or None, got {value!r}.")


@attrs.frozen(cache_hash=True)
class TransportConfig:
    """How to reach one origin. Equal configs share one pool per event loop.

    ``stream_timeout``: the stall-check window (None: the stall check is off, the attempt
    deadline still holds). ``attempt_timeout``: seconds per attempt (None: the size-scaled
    default of :func:`attempt_deadline`). ``ca_bundle``: a PEM file of trusted CAs (None: the
    system's). ``proxy``: an HTTP(S) proxy URL, served by the aiohttp transport.
    """

    origin: str = attrs.field(validator=_check_origin)
    connect_timeout: float = attrs.field(default=10.0, validator=_check_optional_positive)
    stream_timeout: float | None = attrs.field(
        default=DEFAULT_STREAM_TIMEOUT, validator=_check_optional_positive
    )
    attempt_timeout: float | None = attrs.field(default=None, validator=_check_optional_positive)
    ca_bundle: str | None = None
    proxy: str | None = None

    @property
    def scheme(self) -> str:
        return urlsplit(self.origin).scheme

    @property
    def host(self) -> str:
        host = urlsplit(self.origin).hostname
        assert host is not None
        return host

    @property
    def port(self) -> int:
        parts = urlsplit(self.origin)
        return parts.port or (443 if parts.scheme == "https" else 80)

    def deadline(self, size: int) -> float:
        """Seconds this attempt may take, for a body of ``size`` bytes sent or expected."""
        if self.attempt_timeout is not None:
            return self.attempt_timeout
        return attempt_deadline(size)


class Request:
    """One HTTP request. ``target`` is origin-form (``/path?query``), already encoded;
    ``headers`` have lower-case names and include ``host``; ``body`` is sent without a copy.

    ``resend_if_stale``: whether a transport may send it once more, on a new connection,
    when a reused keep-alive connection closed before any byte of the answer. Conditional
    writes say no: if the first copy did land, the second fails its own condition, and only
    the storage layer, which counts its attempts, knows to look for its own write then.
    """

    __slots__ = ("body", "headers", "method", "resend_if_stale", "target")

    def __init__(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes | bytearray | memoryview | None = None,
        *,
        resend_if_stale: bool = True,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.resend_if_stale = resend_if_stale

    def __repr__(self) -> str:  # never the headers: they carry signatures and tokens
        size = len(self.body) if self.body is not None else 0
        return f"Request({self.method} {self.target.split('?', 1)[0]!r}, body_bytes={size})"


class Response:
    """One response. ``headers`` have lower-case names (repeats joined by ``", "``).

    ``written``: body bytes placed in the caller's buffer (``body`` is then empty), or -1 when
    the body is in ``body``. ``total``: the object's size, for reads that learned it.
    """

    __slots__ = ("body", "headers", "status", "total", "written")

    def __init__(
        self,
        status: int,
        headers: dict[str, str],
        body: bytes | bytearray | memoryview = b"",
        written: int = -1,
        total: int | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.written = written
        self.total = total

    def __repr__(self) -> str:
        size = self.written if self.written >= 0 else len(self.body)
        return f"Response(status={self.status}, body_bytes={size}, total={self.total})"


class Transport(Protocol):
    """Sends requests to one origin. Implementations: ``LeanTransport`` (our HTTP/1.1
    client), ``AiohttpTransport`` (behind a proxy), ``MockTransport`` (scripted, for tests).
    """

    async def request(self, request: Request, *, what: str, max_body: int = ...) -> Response:
        """Any request; every status is returned. Non-2xx bodies are capped at
        :data:`ERROR_BODY_CAP`, 2xx bodies at ``max_body`` (more is an integrity error)."""
        ...

    async def read(
        self,
        request: Request,
        byte_range: ByteRequest | None,
        *,
        what: str,
        into: memoryview | None = None,
    ) -> Response:
        """An object GET with the integrity rules applied; 200 and 206 come back holding
        exactly the bytes asked for (in ``into`` when given). Other statuses are returned."""
        ...

    async def aclose(self) -> None:
        """Close every connection."""
        ...

    @property
    def closed(self) -> bool:
        """True once closed: ask :func:`get_transport` for a new one."""
        ...
