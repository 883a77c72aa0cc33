"""The transport seam: how every provider's data plane talks HTTP.

A provider builds and signs a :class:`Request` and hands it to the :class:`Transport` that
:func:`get_transport` returns for its :class:`TransportConfig`; it supplies only what is its
own (the request, the version headers, the mapping of error bodies). The transport applies
everything else once: connection pooling per loop and process, deadlines and stall
detection, and the integrity rules of :mod:`._integrity`, and raises only errors of the
package's error tree. Three transports: our lean HTTP/1.1 client, aiohttp behind a proxy,
and a scripted mock for tests.
"""

from ._integrity import describe_range
from ._mock import MockResponse, MockTransport
from ._model import (
    DEFAULT_STREAM_TIMEOUT,
    ERROR_BODY_CAP,
    STALL_FLOOR_BYTES_PER_SECOND,
    Request,
    Response,
    Transport,
    TransportConfig,
    attempt_deadline,
)
from ._proxy import bypasses_proxy, proxy_for
from ._registry import aclose_transport, aclose_transports, get_transport, peek_transport

__all__ = [
    "DEFAULT_STREAM_TIMEOUT",
    "ERROR_BODY_CAP",
    "STALL_FLOOR_BYTES_PER_SECOND",
    "MockResponse",
    "MockTransport",
    "Request",
    "Response",
    "Transport",
    "TransportConfig",
    "aclose_transport",
    "aclose_transports",
    "attempt_deadline",
    "bypasses_proxy",
    "describe_range",
    "get_transport",
    "peek_transport",
    "proxy_for",
]
