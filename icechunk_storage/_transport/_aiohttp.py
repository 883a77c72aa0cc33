"""``AiohttpTransport``: the transport behind an HTTP(S) proxy (our lean client speaks no
proxy protocol). Same rules as the lean transport: the body goes through the same
:mod:`._integrity` plans, redirects are never followed, the same deadline and throughput
floor apply, and aiohttp's errors become the same error types at one boundary here.

aiohttp adds no header of its own that we did not set (no User-Agent, Accept-Encoding or
Content-Type), so a server cannot tell which transport sent a request. Connections are not
kept alive (see ``__init__``): the one rule aiohttp cannot be made to keep otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import weakref
from typing import TYPE_CHECKING, Any

from .._errors import (
    ConnectionLostError,
    EndpointUnreachableError,
    ProtocolError,
    StorageError,
    StorageTimeoutError,
    TLSVerificationError,
    is_connection_refused,
)
from ._integrity import BodyPlan, PlannedTransport
from ._model import STALL_FLOOR_BYTES_PER_SECOND, Request, Response, TransportConfig
from ._tls import ssl_context

if TYPE_CHECKING:
    import aiohttp

__all__ = ["AiohttpTransport", "without_silent_resends"]

_READ_SIZE = 256 * 1024
_SKIP_AUTO = ("User-Agent", "Accept-Encoding", "Content-Type", "Accept")


def _close_session_soon(session: aiohttp.ClientSession, loop: asyncio.AbstractEventLoop) -> None:
    """Finalizer: a transport nobody closed closes its session on its loop, if it still runs
    (so aiohttp never reports an unclosed session)."""
    if loop.is_closed() or session.closed:
        return
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
        loop.call_soon_threadsafe(lambda: loop.create_task(session.close()))


def without_silent_resends(session: aiohttp.ClientSession) -> aiohttp.ClientSession:
    """``session`` with aiohttp's own resend turned off. aiohttp (3.10 and later) sends an
    idempotent request, PUT included, a second time when the connection drops before the
    answer. Our retry loop is the only one: it knows that a conditional write it sent twice
    may have landed the first time, and looks for its own write id; a silent second send
    would turn our own landed write into a conflict. aiohttp has no public switch; this is
    the attribute its own test client sets (``tests/test_transport_hostile.py`` checks
    that a dropped conditional PUT goes out once)."""
    if hasattr(session, "_retry_connection"):
        session._retry_connection = False
    return session


class AiohttpTransport(PlannedTransport):
    """One aiohttp session (one connection pool) per origin and loop, through ``proxy``."""

    def __init__(self, config: TransportConfig) -> None:
        import aiohttp

        self.loop = asyncio.get_running_loop()
        self.config = config
        context: ssl.SSLContext | bool = (
            ssl_context(config.ca_bundle) if config.scheme == "https" else False
        )
        self._session = without_silent_resends(
            aiohttp.ClientSession(
                # No keep-alive: aiohttp reads bytes that arrive after a response as the next
                # response on a reused connection; we cannot check the socket before reuse as
                # the lean transport does. A new connection per request is the price, behind a
                # proxy only.
                connector=aiohttp.TCPConnector(limit=0, ssl=context, force_close=True),
                auto_decompress=False,
                skip_auto_headers=_SKIP_AUTO,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=config.connect_timeout,
                    sock_read=config.stream_timeout,
                ),
            )
        )
        self._finalizer = weakref.finalize(self, _close_session_soon, self._session, self.loop)

    def __repr__(self) -> str:
        return f"AiohttpTransport({self.config.origin}, proxy=yes)"

    async def _send(self, request: Request, plan: BodyPlan, what: str, size: int) -> Response:
        import aiohttp
        import yarl

        url = yarl.URL(self.config.origin + request.target, encoded=True)
        deadline = self.config.deadline(size)
        data: Any = request.body if request.body is not None else None
        if data is None and request.method in ("PUT", "POST"):
            data = b""
        try:
            async with (
                asyncio.timeout(deadline),
                self._session.request(
                    request.method,
                    url,
                    headers=request.headers,
                    data=data,
                    proxy=self.config.proxy,
                    allow_redirects=False,
                ) as response,
            ):
                return await self._receive(response, plan)
        except StorageError:
            raise
        except TimeoutError:
            raise StorageTimeoutError(
                f"{what} failed: the response did not complete within {deadline:g} s, or "
                f"stalled for {self.config.stream_timeout} s."
            ) from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise TLSVerificationError(
                f"{what} failed: the TLS certificate did not verify ({exc.certificate_error}). "
                "This is not retried: fix the endpoint, or trust its CA with AWS_CA_BUNDLE or "
                "SSL_CERT_FILE."
            ) from None
        except aiohttp.ClientSSLError as exc:
            raise TLSVerificationError(f"{what} failed: TLS error ({exc}).") from None
        except aiohttp.ClientPayloadError as exc:
            raise ConnectionLostError(f"{what} failed: the body was cut short ({exc}).") from None
        except aiohttp.ClientResponseError as exc:
            raise ProtocolError(f"{what} failed: malformed response ({exc.message}).") from None
        except (aiohttp.ClientError, OSError) as exc:
            kind = EndpointUnreachableError if is_connection_refused(exc) else ConnectionLostError
            raise kind(
                f"{what} failed: the connection was lost ({type(exc).__name__}: {exc})."
            ) from None

    async def _receive(self, response: aiohttp.ClientResponse, plan: BodyPlan) -> Response:
        headers: dict[str, str] = {}
        for name, value in response.headers.items():
            key = name.lower()
            previous = headers.get(key)
            headers[key] = value if previous is None else f"{previous}, {value}"
        length: int | None = response.content_length
        if "chunked" in headers.get("transfer-encoding", "").lower():
            length = None
        if plan.method == "HEAD" or response.status in (204, 304):
            length = 0
        sink = plan.on_head(response.status, headers, length)
        window = self.config.stream_timeout
        started, window_bytes = self.loop.time(), 0
        while not sink.done:
            piece = await response.content.read(_READ_SIZE)
            if not piece:
                break
            sink.feed(piece)
            if window is not None:
                window_bytes += len(piece)
                now = self.loop.time()
                if now - started >= window:
                    if window_bytes < STALL_FLOOR_BYTES_PER_SECOND * window and not sink.done:
                        raise StorageTimeoutError(
                            f"{plan.what} failed: the response stalled: {window_bytes} bytes "
                            f"in {now - started:.3g} s, below the floor of "
                            f"{STALL_FLOOR_BYTES_PER_SECOND} bytes/s."
                        )
                    started, window_bytes = now, 0
        if sink.length is not None and sink.pos < (sink.stop_after or 0):
            raise ConnectionLostError(
                f"{plan.what} failed: the body was cut short after {sink.pos} of "
                f"{sink.length} bytes."
            )
        if not sink.done or sink.close_after:
            response.close()  # stopped early (or oversized): do not reuse the connection
        return plan.finish(response.status, headers, sink)

    @property
    def closed(self) -> bool:
        return self._session.closed

    async def aclose(self) -> None:
        self._finalizer.detach()
        await self._session.close()
