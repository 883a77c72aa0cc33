"""A small HTTP/1.1 GET client for the lean read path: response bodies land in the caller's
buffer with one copy (kernel to buffer).

aiohttp copies every body chunk three times on its way to a ranged read's destination
(``recv`` into a new ``bytes``, the parser into the stream, our copy into the buffer), and
pays for stream and parser objects per chunk. Here each connection is an asyncio
``BufferedProtocol``: ``get_buffer`` hands the transport (plain or TLS) the unfilled tail
of the destination, so ``recv_into`` (or the TLS object's ``read``) writes straight into
it. Only the response head, and whatever body bytes arrive in the same read, go through a
small per-connection scratch buffer.

Scope: GET only, one request per connection at a time (no pipelining), keep-alive pool of
idle connections per origin. Bodies framed by Content-Length take the fast path; chunked
and close-delimited bodies (error responses, odd servers) are decoded into a new buffer.
Interim 1xx responses are skipped. Proxies are not supported (the caller uses aiohttp then).

Errors are builtin-derived so the storage's mapping applies: :class:`HttpProtocolError`
(a ``ConnectionError``: framing broken, connection closed early) and
:class:`BodyCutShort` become transient connection errors, :class:`ResponseStalled`
(a ``TimeoutError``) a timeout; :class:`BodyTooLarge` and :class:`TLSSetupError` are
not retried. A failed or cancelled request aborts its connection at once, so nothing is
ever written into a caller's buffer after the call returned.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import socket
import ssl
from typing import Any, Final

__all__ = [
    "BodyCutShort",
    "BodyTooLarge",
    "HttpPool",
    "HttpProtocolError",
    "Response",
    "ResponseStalled",
    "TLSSetupError",
    "request_head",
]

SCRATCH_SIZE: Final = 64 * 1024
"""Per-connection buffer for response heads; bodies up to SMALL_BODY stay in it."""
SMALL_BODY: Final = 32 * 1024
"""Bodies up to this size are returned as ``bytes`` copied out of the scratch buffer (as
fast as a fresh buffer for chunk-sized reads); larger ones as a ``bytearray`` read in place."""
MAX_UNFRAMED_BODY: Final = 64 * 1024 * 1024
"""Cap on chunked or close-delimited bodies, which cannot be sized in advance."""
DNS_TTL: Final = 300.0
DEFAULT_KEEPALIVE: Final = 12.0

_NO_BODY_STATUSES: Final = frozenset({204, 304})

# Connection states.
_IDLE: Final = 0
_HEAD: Final = 1  # reading the response head into scratch
_BODY: Final = 2  # reading a Content-Length body into _dest
_CHUNKED: Final = 3
_UNTIL_CLOSE: Final = 4
_CLOSED: Final = 5


class HttpProtocolError(ConnectionError):
    """The response broke HTTP/1.1 framing, or the connection closed before it ended."""


class ClosedBeforeResponse(HttpProtocolError):
    """The server closed the connection before sending a byte: a stale keep-alive
    connection when it was reused, so the request is resent once on a new one."""


class BodyCutShort(HttpProtocolError):
    """The connection ended before the whole body (Content-Length or chunked) arrived."""


class ResponseStalled(TimeoutError):
    """No byte arrived for the read timeout (a stalled stream)."""


class BodyTooLarge(Exception):
    """A response meant for the caller's buffer is larger than that buffer."""

    def __init__(self, length: int, capacity: int) -> None:
        super().__init__(f"the body has {length} bytes, the buffer room for {capacity}")
        self.length = length
        self.capacity = capacity


class TLSSetupError(Exception):
    """The TLS handshake failed (certificate, protocol): retrying will not help."""


class Response:
    """One response. ``written``: body bytes placed in the caller's buffer (``body`` is then
    empty); -1 if the body is in ``body``. ``headers`` has lower-case names."""

    __slots__ = ("body", "headers", "status", "written")

    def __init__(
        self, status: int, headers: dict[str, str], body: bytes | bytearray, written: int
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.written = written

    def __repr__(self) -> str:
        size = self.written if self.written >= 0 else len(self.body)
        return f"Response(status={self.status}, body_bytes={size})"


def request_head(target: str, headers: dict[str, str], extra: str) -> bytes:
    """The bytes of ``GET target``: ``headers`` (lower-case names; ``host`` goes first) then
    ``extra`` (pre-formatted ``Name: value\\r\\n`` lines). Refuses CR/LF in a value, which
    would inject headers."""
    lines = [f"GET {target} HTTP/1.1\r\n"]
    host = headers.get("host")
    if host is not None:
        lines.append(f"host: {host}\r\n")
    for name, value in headers.items():
        if "\n" in value or "\r" in value:
            raise ValueError(f"header {name!r} has a line break in its value")
        if name != "host":
            lines.append(f"{name}: {value}\r\n")
    lines.append(extra)
    lines.append("\r\n")
    return "".join(lines).encode("utf-8")


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _parse_head(head: str) -> tuple[int, bool, dict[str, str]]:
    """``(status, keep_alive, headers)`` of a response head (without the final CRLFCRLF)."""
    lines = head.split("\r\n")
    status_line = lines[0]
    if (
        len(status_line) < 12
        or not status_line.startswith("HTTP/1.")
        or status_line[8] != " "
        or not _is_number(status_line[9:12])
        or (len(status_line) > 12 and status_line[12] != " ")
    ):
        raise HttpProtocolError(f"malformed status line {status_line[:80]!r}")
    status = int(status_line[9:12])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name[-1] in " \t" or line[0] in " \t":
            raise HttpProtocolError(f"malformed header line {line[:80]!r}")
        name = name.lower()
        value = value.strip(" \t")
        previous = headers.get(name)
        headers[name] = value if previous is None else f"{previous}, {value}"
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    # HTTP/1.1 keeps the connection unless told not to; HTTP/1.0 only when asked to.
    keep_alive = "close" not in tokens if status_line[7] == "1" else "keep-alive" in tokens
    return status, keep_alive, headers


def _as_protocol_error(exc: Exception) -> Exception:
    """Our errors as they are; anything else a parser raised means a malformed response."""
    if isinstance(exc, HttpProtocolError | BodyTooLarge):
        return exc
    return HttpProtocolError(f"malformed response ({type(exc).__name__}: {exc})")


class _Connection(asyncio.BufferedProtocol):
    """One connection; one request at a time. See the module docstring."""

    def __init__(self, pool: HttpPool) -> None:
        self._pool: HttpPool | None = pool
        self._loop = pool.loop
        self._time = pool.loop.time
        self._read_timeout = pool.read_timeout
        self.transport: asyncio.Transport | None = None
        self._scratch = bytearray(SCRATCH_SIZE)
        self._scratch_view = memoryview(self._scratch)
        self._state = _IDLE
        self._filled = 0  # bytes in scratch (head, chunked, close-delimited states)
        self._scan = 0  # where to resume looking for the end of the head
        self._waiter: asyncio.Future[Response] | None = None
        self._into: memoryview | None = None
        self._dest: memoryview | None = None  # where the Content-Length body goes
        self._pos = 0
        self._end = 0
        self._small = False  # the body is in scratch at [_body_start, _body_start + _end)
        self._body_start = 0
        self._body: bytearray | None = None
        self._status = 0
        self._headers: dict[str, str] = {}
        self._keep_alive = False
        self._chunk_left = 0  # >0: data bytes left in this chunk; -1: CRLF after data due
        self._trailers = False
        self._pending = bytearray()
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.lost: asyncio.Future[None] = pool.loop.create_future()
        self.idle_since = 0.0
        self.served = 0

    # --- asyncio callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._state == _BODY:
            assert self._dest is not None
            return self._dest[self._pos :]
        if self._state == _HEAD:
            return self._scratch_view[self._filled :]
        return self._scratch_view  # idle, closed, chunked, close-delimited: consumed at once

    def buffer_updated(self, nbytes: int) -> None:
        if self._state == _BODY:
            self._pos += nbytes
            self._last = self._time()
            if self._pos == self._end:
                self._finish_length_body()
            return
        self._last = self._time()
        state = self._state
        if state == _HEAD:
            self._filled += nbytes
            try:
                self._parse_heads()
            except Exception as exc:
                self._fail(_as_protocol_error(exc))
        elif state == _CHUNKED:
            try:
                self._feed_chunked(self._scratch_view[:nbytes])
            except Exception as exc:
                self._fail(_as_protocol_error(exc))
        elif state == _UNTIL_CLOSE:
            assert self._body is not None
            self._body += self._scratch_view[:nbytes]
            if len(self._body) > MAX_UNFRAMED_BODY:
                self._fail(HttpProtocolError("the close-delimited body is too large"))
        elif state == _IDLE:
            self._fail(HttpProtocolError("the server sent data on an idle connection"))

    def eof_received(self) -> bool:
        if self._state == _UNTIL_CLOSE:
            self._keep_alive = False
            body = self._body if self._body is not None else bytearray()
            try:
                self._deliver_unframed(body)
            except Exception as exc:
                self._fail(_as_protocol_error(exc))
        elif self._state == _HEAD and self._filled == 0:
            self._fail(ClosedBeforeResponse("the server closed the connection before responding"))
        elif self._state == _HEAD:
            self._fail(HttpProtocolError("the connection closed in the middle of the response"))
        elif self._state in (_BODY, _CHUNKED):
            got = self._pos if self._state == _BODY else -1
            detail = f" after {got} of {self._end} bytes" if got >= 0 else ""
            self._fail(BodyCutShort(f"the connection closed{detail}"))
        else:
            self._close_state()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._state == _UNTIL_CLOSE and exc is None:
            self.eof_received()
        elif self._state == _HEAD and self._filled == 0:
            self._fail(ClosedBeforeResponse(f"the connection was lost before a response ({exc})"))
        elif self._state in (_BODY, _CHUNKED):
            self._fail(BodyCutShort(f"the connection was lost ({exc})"))
        elif self._state not in (_IDLE, _CLOSED):
            self._fail(HttpProtocolError(f"the connection was lost ({exc})"))
        self._close_state()
        if not self.lost.done():
            self.lost.set_result(None)

    # --- requests ----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._state == _CLOSED

    def send(self, head: bytes, into: memoryview | None) -> asyncio.Future[Response]:
        """Write the request; the future resolves with the whole response."""
        assert self._state == _IDLE
        assert self.transport is not None
        waiter: asyncio.Future[Response] = self._loop.create_future()
        self._waiter = waiter
        self._into = into
        self._state = _HEAD
        self._filled = self._scan = 0
        self._last = self._time()
        if self._read_timeout is not None:
            self._timer = self._loop.call_at(self._last + self._read_timeout, self._check_stall)
        self.transport.write(head)
        return waiter

    def abort(self) -> None:
        """Drop the connection now (a failed or cancelled request)."""
        self._close_state()
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self._close_state()
        if self.transport is not None:
            self.transport.close()

    @property
    def reusable(self) -> bool:
        return self._state == _IDLE and self._keep_alive

    # --- internals ---------------------------------------------------------------------

    def _check_stall(self) -> None:
        self._timer = None
        if self._waiter is None or self._read_timeout is None:
            return
        deadline = self._last + self._read_timeout
        if self._time() >= deadline:
            self._fail(ResponseStalled(f"no byte arrived for {self._read_timeout:g} s"))
        else:
            self._timer = self._loop.call_at(deadline, self._check_stall)

    def _parse_heads(self) -> None:
        scratch = self._scratch
        while True:
            end = scratch.find(b"\r\n\r\n", self._scan, self._filled)
            if end < 0:
                if self._filled >= SCRATCH_SIZE:
                    raise HttpProtocolError("the response head is too large")
                self._scan = max(0, self._filled - 3)
                return
            status, keep_alive, headers = _parse_head(scratch[:end].decode("latin-1"))
            head_end = end + 4
            if 100 <= status < 200:  # an interim response: drop it, parse what follows
                rest = bytes(self._scratch_view[head_end : self._filled])
                scratch[: len(rest)] = rest
                self._filled = len(rest)
                self._scan = 0
                continue
            self._status, self._keep_alive, self._headers = status, keep_alive, headers
            self._start_body(head_end)
            return

    def _start_body(self, head_end: int) -> None:
        headers = self._headers
        already = self._filled - head_end
        if self._status in _NO_BODY_STATUSES:
            if already:
                self._keep_alive = False
            self._complete(b"")
            return
        encoding = headers.get("transfer-encoding")
        if encoding is not None:
            if encoding.strip().lower() != "chunked":
                raise HttpProtocolError(f"unsupported transfer-encoding {encoding[:40]!r}")
            self._state = _CHUNKED
            self._body = bytearray()
            self._chunk_left = 0
            self._trailers = False
            self._feed_chunked(self._scratch_view[head_end : self._filled])
            return
        length_text = headers.get("content-length")
        if length_text is None:
            self._keep_alive = False
            self._state = _UNTIL_CLOSE
            self._body = bytearray(self._scratch_view[head_end : self._filled])
            return
        if not _is_number(length_text):
            raise HttpProtocolError(f"bad content-length {length_text[:40]!r}")
        length = int(length_text)
        if already > length:  # bytes past the body: the connection cannot be trusted
            self._keep_alive = False
            already = length
        into = self._into
        if into is not None and self._status == 206:
            if length > len(into):
                raise BodyTooLarge(length, len(into))
            dest = into if length == len(into) else into[:length]
            self._small = False
        elif length <= SMALL_BODY and head_end + length <= SCRATCH_SIZE:
            dest = self._scratch_view[head_end : head_end + length]
            self._small = True
            self._body_start = head_end
        else:
            self._body = bytearray(length)
            dest = memoryview(self._body)
            self._small = False
        if already and not self._small:
            dest[:already] = self._scratch_view[head_end : head_end + already]
        self._dest = dest
        self._pos = already
        self._end = length
        if already == length:
            self._finish_length_body()
        else:
            self._state = _BODY

    def _finish_length_body(self) -> None:
        if self._small:
            start = self._body_start
            body: bytes | bytearray = bytes(self._scratch_view[start : start + self._end])
            self._complete(body)
        elif self._body is not None:
            self._complete(self._body)
        else:
            self._complete(b"", written=self._end)

    def _feed_chunked(self, data: memoryview) -> None:
        pending = self._pending
        pending += data
        body = self._body
        assert body is not None
        i = 0
        while True:
            if self._chunk_left > 0:
                take = min(self._chunk_left, len(pending) - i)
                if take == 0:
                    break
                body += pending[i : i + take]
                i += take
                self._chunk_left -= take
                if self._chunk_left:
                    break
                self._chunk_left = -1
            if self._chunk_left == -1:
                if len(pending) - i < 2:
                    break
                if pending[i : i + 2] != b"\r\n":
                    raise HttpProtocolError("a chunk is not followed by CRLF")
                i += 2
                self._chunk_left = 0
            line_end = pending.find(b"\r\n", i)
            if line_end < 0:
                if len(pending) - i > 8192:
                    raise HttpProtocolError("a chunk size line is too long")
                break
            line = bytes(pending[i:line_end])
            i = line_end + 2
            if self._trailers:
                if not line:  # the blank line that ends the trailers
                    if i < len(pending):
                        self._keep_alive = False
                    del pending[:]
                    self._deliver_unframed(body)
                    return
                continue
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HttpProtocolError(f"bad chunk size {size_text[:20]!r}") from None
            if size < 0:
                raise HttpProtocolError("negative chunk size")
            if size == 0:
                self._trailers = True
                continue
            if len(body) + size > MAX_UNFRAMED_BODY:
                raise HttpProtocolError("the chunked body is too large")
            self._chunk_left = size
        del pending[:i]

    def _deliver_unframed(self, body: bytearray) -> None:
        """A chunked or close-delimited body is complete; for the caller's buffer, copy it."""
        into = self._into
        if into is not None and self._status == 206:
            if len(body) > len(into):
                raise BodyTooLarge(len(body), len(into))
            into[: len(body)] = body
            self._complete(b"", written=len(body))
        else:
            self._complete(body)

    def _complete(self, body: bytes | bytearray, written: int = -1) -> None:
        waiter = self._waiter
        response = Response(self._status, self._headers, body, written)
        self._reset_request()
        self._state = _IDLE
        self.served += 1
        if waiter is not None and not waiter.done():
            waiter.set_result(response)
        if not self._keep_alive:
            self.close()

    def _reset_request(self) -> None:
        """Forget the request: above all the caller's buffer, which must not be touched."""
        self._waiter = None
        self._into = self._dest = None
        self._body = None
        self._small = False
        self._filled = self._scan = self._pos = self._end = 0
        if self._pending:
            self._pending = bytearray()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fail(self, exc: BaseException) -> None:
        waiter, self._waiter = self._waiter, None
        self.abort()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _close_state(self) -> None:
        if self._state == _CLOSED:
            return
        waiter = self._waiter
        self._reset_request()
        self._state = _CLOSED
        self._keep_alive = False
        pool, self._pool = self._pool, None
        if pool is not None:
            pool._forget(self)
        if waiter is not None and not waiter.done():
            waiter.set_exception(HttpProtocolError("the connection was closed by the client"))


class HttpPool:
    """Keep-alive connections to one origin, for one event loop (``LoopLocal``-held).

    ``read_timeout``: seconds without a byte before a response is abandoned (None: never);
    ``connect_timeout`` covers DNS, TCP and the TLS handshake. The request limit is the
    caller's (``request_slots``), so the pool has no cap of its own; idle connections older
    than ``keepalive`` seconds are closed, not reused (servers drop them about then).
    """

    def __init__(
        self,
        *,
        scheme: str,
        host: str,
        port: int | None,
        ssl_context: ssl.SSLContext | None,
        connect_timeout: float,
        read_timeout: float | None,
        keepalive: float = DEFAULT_KEEPALIVE,
    ) -> None:
        if scheme not in ("http", "https"):
            raise ValueError(f"unsupported scheme {scheme!r}")
        self.loop = asyncio.get_running_loop()
        self.scheme = scheme
        self.host = host
        self.port = port if port is not None else (443 if scheme == "https" else 80)
        self.ssl_context = ssl_context if scheme == "https" else None
        if scheme == "https" and self.ssl_context is None:
            self.ssl_context = ssl.create_default_context()
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.keepalive = keepalive
        self._idle: collections.deque[_Connection] = collections.deque()
        self._all: set[_Connection] = set()
        self._addresses: list[tuple[Any, ...]] = []
        self._resolved_at = -DNS_TTL
        self._closed = False
        self.connections_made = 0

    def __repr__(self) -> str:
        return (
            f"HttpPool({self.scheme}://{self.host}:{self.port}, open={len(self._all)}, "
            f"idle={len(self._idle)})"
        )

    @property
    def closed(self) -> bool:
        return self._closed

    async def get(self, head: bytes, into: memoryview | None = None) -> Response:
        """Send one GET (``head`` from :func:`request_head`) and read the whole response.

        A 206 body goes into ``into`` (``Response.written`` says how much; more than fits
        raises :class:`BodyTooLarge`); any other body comes back in ``Response.body``. A
        reused connection the server had closed is replaced once, transparently.
        """
        for attempt in (0, 1):
            connection = self._take_idle()
            if connection is None:
                connection = await self._connect()
            try:
                response = await connection.send(head, into)
            except ClosedBeforeResponse:
                if connection.served and attempt == 0:
                    continue
                raise
            except BaseException:
                connection.abort()
                raise
            if connection.reusable:
                if self._closed:
                    connection.close()
                else:
                    connection.idle_since = self.loop.time()
                    self._idle.append(connection)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _take_idle(self) -> _Connection | None:
        idle = self._idle
        if not idle:
            return None
        cutoff = self.loop.time() - self.keepalive
        while idle and idle[0].idle_since < cutoff:  # the oldest first: too old to trust
            idle.popleft().close()
        while idle:
            connection = idle.pop()  # the most recent: warmest, least likely dropped
            transport = connection.transport
            if not connection.closed and transport is not None and not transport.is_closing():
                return connection
            connection.abort()
        return None

    async def _resolve(self) -> list[tuple[Any, ...]]:
        now = self.loop.time()
        if self._addresses and now - self._resolved_at < DNS_TTL:
            return self._addresses
        try:  # an IP address needs no lookup (and no thread hop)
            ip = ipaddress.ip_address(self.host)
        except ValueError:
            pass
        else:
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            self._addresses = [(family, (self.host, self.port))]
            self._resolved_at = now
            return self._addresses
        infos = await self.loop.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        if not infos:
            raise OSError(f"could not resolve {self.host!r}")
        self._addresses = [(family, address) for family, _, _, _, address in infos]
        self._resolved_at = now
        return self._addresses

    async def _connect(self) -> _Connection:
        if self._closed:
            raise HttpProtocolError("the connection pool is closed")
        async with asyncio.timeout(self.connect_timeout):
            addresses = await self._resolve()
            last: OSError | None = None
            for family, address in addresses:
                try:
                    _, protocol = await self.loop.create_connection(
                        lambda: _Connection(self),
                        host=address[0],
                        port=address[1],
                        family=family,
                        ssl=self.ssl_context,
                        server_hostname=self.host if self.ssl_context is not None else None,
                    )
                except ssl.SSLError as exc:
                    raise TLSSetupError(f"TLS handshake with {self.host!r} failed: {exc}") from exc
                except OSError as exc:
                    last = exc
                    continue
                assert isinstance(protocol, _Connection)
                if self._closed:  # closed while we connected
                    protocol.abort()
                    raise HttpProtocolError("the connection pool is closed")
                self._all.add(protocol)
                self.connections_made += 1
                return protocol
            assert last is not None
            self._addresses = []  # resolve again next time
            raise last

    def _forget(self, connection: _Connection) -> None:
        self._all.discard(connection)
        with contextlib.suppress(ValueError):  # not idle
            self._idle.remove(connection)

    async def aclose(self) -> None:
        """Close every connection, in use or idle; requests in flight fail (and retry)."""
        self._closed = True
        connections = list(self._all)
        self._all.clear()
        self._idle.clear()
        waits = [c.lost for c in connections if not c.lost.done()]
        for connection in connections:
            connection.close()
        if waits:
            _, pending = await asyncio.wait(waits, timeout=1.0)
            for connection in connections:
                if not connection.lost.done() and connection.transport is not None:
                    connection.transport.abort()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
