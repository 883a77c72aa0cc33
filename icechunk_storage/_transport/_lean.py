"""``LeanTransport``: our own HTTP/1.1 client, where body bytes land in the caller's buffer
with one copy (kernel to buffer).

aiohttp copies every body chunk three times on its way to a ranged read's destination and
pays for stream and parser objects per chunk. Here each connection is an asyncio
``BufferedProtocol``: while a Content-Length body arrives, ``get_buffer`` hands the socket
(plain or TLS) the next free slice of the destination chosen by the body's
:class:`~._integrity.Sink`, so ``recv_into`` writes straight into it. Response heads, and
chunked bodies, are parsed by httptools (llhttp) out of a small per-connection scratch
buffer; llhttp has no limit of its own, so the head is capped at :data:`MAX_RESPONSE_HEAD`,
interim responses at :data:`MAX_INTERIM_RESPONSES`, trailers at :data:`MAX_TRAILER_BYTES`.

Plain ``http`` connections run on :class:`._socket.PlainSocketTransport`, which costs a
third less CPU per connection than asyncio's own transport (it matters where a server closes
every connection); TLS connections, and loops that do not poll descriptors themselves, use
``loop.create_connection``. The protocol is the same on both.

One request per connection at a time (no pipelining); a keep-alive pool of idle connections
per origin and loop. A connection is pooled again only when its response ended exactly
where its framing said and nothing else is waiting on the socket; a connection whose
response broke any rule is dropped. A failed or cancelled request aborts its connection at
once, so nothing is ever written into a caller's buffer after the call returned. A reused
connection that closes before any byte of the answer was a stale keep-alive: the request
goes once more on a new connection, unless it says otherwise (``Request.resend_if_stale``).

Time: every attempt has a deadline (:meth:`TransportConfig.deadline`), and a response must
keep up a minimum throughput over each ``stream_timeout`` window (:mod:`._model`).
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import select
import socket
import ssl
from typing import Any, Final

import httptools

from .._errors import (
    ConnectionLostError,
    EndpointUnreachableError,
    ProtocolError,
    ResponseIntegrityError,
    StorageError,
    StorageTimeoutError,
    TLSVerificationError,
)
from ._integrity import BodyPlan, PlannedTransport, Sink
from ._model import (
    MAX_INTERIM_RESPONSES,
    MAX_RESPONSE_HEAD,
    MAX_TRAILER_BYTES,
    STALL_FLOOR_BYTES_PER_SECOND,
    Request,
    Response,
    TransportConfig,
    attempt_deadline,
)
from ._socket import open_plain_connection, supports_plain_sockets
from ._tls import ssl_context

__all__ = ["LeanTransport", "request_head"]

_SPARE_SCRATCH_BUFFERS = 64
"""Scratch buffers of closed connections kept for new ones (64 KiB each): a fresh one costs
~40 us of page faults, paid per request to a server that closes every connection (moto)."""

DNS_TTL: Final = 300.0
KEEPALIVE_SECONDS: Final = 12.0
"""Idle connections older than this are closed, not reused (S3 drops them after ~20 s)."""
WRITE_SLICE: Final = 1024 * 1024
"""Large request bodies go out in slices of this size, waiting for the socket to drain, so
the transport never copies more than one slice of the caller's buffer."""

# Connection states.
_IDLE: Final = 0
_HEAD: Final = 1  # reading a response head into scratch
_BODY: Final = 2  # a Content-Length body, straight into the sink's buffers
_CHUNKED: Final = 3  # a chunked body, through httptools
_UNTIL_CLOSE: Final = 4  # neither length nor chunked: the body ends with the connection
_CLOSED: Final = 5


class _Failure(Exception):
    """Raised inside a connection; turned into the error tree at the transport boundary."""

    def __init__(self, kind: type[StorageError], message: str) -> None:
        super().__init__(message)
        self.kind = kind


class _ClosedBeforeResponse(_Failure):
    """Not a byte came back on a reused connection: a stale keep-alive, resent once (unless
    the request is not ``resend_if_stale``)."""


def request_head(request: Request) -> bytes:
    """The bytes of the request line and headers (``host`` first, Content-Length added for
    a body). Refuses CR, LF or NUL in a name or value, which would inject headers."""
    lines = [f"{request.method} {request.target} HTTP/1.1\r\n"]
    headers = request.headers
    host = headers.get("host")
    if host is not None:
        lines.append(f"host: {host}\r\n")
    for name, value in headers.items():
        if "\n" in value or "\r" in value or "\0" in value or not name.isascii() or ":" in name:
            raise ValueError(f"header {name!r} has a line break or a bad character")
        if name != "host":
            lines.append(f"{name}: {value}\r\n")
    body = request.body
    if body is not None and "content-length" not in headers:
        lines.append(f"content-length: {len(body)}\r\n")
    elif body is None and request.method in ("PUT", "POST") and "content-length" not in headers:
        lines.append("content-length: 0\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("utf-8")


class _HeadParser:
    """httptools callbacks for one response: the head, then (chunked) the body.

    Header fields are collected by ``dict.__setitem__`` itself (no Python frame per header:
    this is the hot path of every small read) and normalised once by :meth:`headers`;
    trailers, after the head, go through :meth:`on_trailer`, which bounds them."""

    __slots__ = ("complete", "extra", "on_header", "raw", "sink", "trailer_bytes")

    def __init__(self) -> None:
        self.raw: dict[bytes, bytes] = {}
        self.on_header: Any = self.raw.__setitem__
        self.complete = False
        self.extra = False
        self.trailer_bytes = 0
        self.sink: Sink | None = None

    def headers(self) -> dict[str, str]:
        """Lower-case names; names differing only in case are joined (as repeats would be)."""
        raw = self.raw
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1") for name, value in raw.items()
        }
        if len(headers) != len(raw):
            headers = {}
            for name, value in raw.items():
                key, text = name.decode("latin-1").lower(), value.decode("latin-1")
                headers[key] = f"{headers[key]}, {text}" if key in headers else text
        return headers

    def on_headers_complete(self) -> None:
        self.on_header = self.on_trailer

    def on_trailer(self, name: bytes, value: bytes) -> None:
        self.trailer_bytes += len(name) + len(value) + 4
        if self.trailer_bytes > MAX_TRAILER_BYTES:
            raise _Failure(ProtocolError, f"the trailers exceed {MAX_TRAILER_BYTES} bytes")

    def on_body(self, body: bytes) -> None:
        sink = self.sink
        if sink is not None and not self.complete:
            sink.feed(body)
            if sink.overflowed:
                raise _Failure(ResponseIntegrityError, "the body is longer than allowed")

    def on_message_begin(self) -> None:
        if self.complete:
            self.extra = True  # bytes after the response: a second message began

    def on_message_complete(self) -> None:
        self.complete = True


def _parse_head(
    head: bytes,
) -> tuple[int, bool, dict[str, str], httptools.HttpResponseParser, _HeadParser]:
    callbacks = _HeadParser()
    parser = httptools.HttpResponseParser(callbacks)
    try:
        parser.feed_data(head)
    except httptools.HttpParserCallbackError as exc:
        raise _callback_failure(exc) from None
    except httptools.HttpParserError as exc:
        raise _Failure(ProtocolError, f"malformed response head ({exc})") from None
    status = parser.get_status_code()
    headers = callbacks.headers()
    # Not parser.should_keep_alive(): llhttp resets its flags once a bodiless message (304,
    # 204, 1xx) completes, and would then say keep-alive despite "Connection: close".
    connection = headers.get("connection")
    if parser.get_http_version() == "1.1":
        keep_alive = connection is None or "close" not in connection.lower()
    else:
        keep_alive = connection is not None and "keep-alive" in connection.lower()
    return status, keep_alive, headers, parser, callbacks


def _callback_failure(exc: BaseException) -> _Failure:
    inner = exc.__context__
    if isinstance(inner, _Failure):
        return inner
    return _Failure(ProtocolError, f"malformed response ({exc})")


class _Connection(asyncio.BufferedProtocol):
    """One connection, one request at a time. See the module docstring."""

    def __init__(self, pool: LeanTransport) -> None:
        self._pool: LeanTransport | None = pool
        self._loop = pool.loop
        self._time = pool.loop.time
        self._window = pool.config.stream_timeout
        self.transport: asyncio.Transport | None = None
        self.fd = -1
        self._spares = pool.spare_scratch
        self._scratch = self._spares.pop() if self._spares else bytearray(MAX_RESPONSE_HEAD)
        self._scratch_view = memoryview(self._scratch)
        self._state = _IDLE
        self._filled = 0
        self._scan = 0
        self._interim = 0
        self._waiter: asyncio.Future[Response] | None = None
        self._plan: BodyPlan | None = None
        self._sink: Sink | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._callbacks: _HeadParser | None = None
        self._status = 0
        self._headers: dict[str, str] = {}
        self._keep_alive = False
        self._received = 0  # bytes of the response received
        self._mark = 0
        self._handed = 0  # bytes of a large request body handed to the socket
        self._acked_mark = 0
        self._deadline = 0.0
        self._sent_at = 0.0
        self._scale_deadline = pool.config.attempt_timeout is None
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False
        self._drained: asyncio.Future[Any] | None = None
        self.lost: asyncio.Future[None] = pool.loop.create_future()
        self.idle_since = 0.0
        self.served = 0

    # --- asyncio callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        self.fd = sock.fileno() if sock is not None else -1

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._state == _BODY:
            assert self._sink is not None
            return self._sink.buffer()
        if self._state == _HEAD:
            return self._scratch_view[self._filled :]
        return self._scratch_view  # chunked, until close, idle, closed: consumed at once

    def buffer_updated(self, nbytes: int) -> None:
        self._received += nbytes
        state = self._state
        try:
            if state == _BODY:
                sink = self._sink
                assert sink is not None
                sink.advance(nbytes)
                if sink.done:
                    self._complete()
            elif state == _HEAD:
                self._filled += nbytes
                self._parse_heads()
            elif state == _CHUNKED:
                self._feed_chunked(self._scratch_view[:nbytes])
            elif state == _UNTIL_CLOSE:
                sink = self._sink
                assert sink is not None
                sink.feed(self._scratch_view[:nbytes])
                if sink.overflowed:
                    self._complete()  # an error body at its cap, or too long: decided there
            elif state == _IDLE:
                self._fail(_Failure(ProtocolError, "the server sent data on an idle connection"))
        except _Failure as failure:
            self._fail(failure)
        except StorageError as exc:  # an integrity rule, raised by the plan
            self._fail(exc)

    def eof_received(self) -> bool:
        state = self._state
        if state == _UNTIL_CLOSE:
            self._keep_alive = False
            try:
                self._complete()
            except StorageError as exc:
                self._fail(exc)
        elif state == _HEAD and self._filled == 0 and self._interim == 0:
            self._fail(
                _ClosedBeforeResponse(
                    ConnectionLostError, "the server closed the connection before responding"
                )
            )
        elif state == _HEAD:
            self._fail(
                _Failure(
                    ConnectionLostError, "the connection closed in the middle of the response head"
                )
            )
        elif state in (_BODY, _CHUNKED):
            self._fail(_Failure(ConnectionLostError, self._cut_short("the connection closed")))
        else:
            self._close_state()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._state == _UNTIL_CLOSE and exc is None:
            self.eof_received()
        elif self._state == _HEAD and self._filled == 0 and self._interim == 0:
            self._fail(
                _ClosedBeforeResponse(
                    ConnectionLostError, f"the connection was lost before a response ({exc})"
                )
            )
        elif self._state in (_BODY, _CHUNKED):
            self._fail(
                _Failure(ConnectionLostError, self._cut_short(f"the connection was lost ({exc})"))
            )
        elif self._state not in (_IDLE, _CLOSED):
            self._fail(_Failure(ConnectionLostError, f"the connection was lost ({exc})"))
        self._close_state()
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)
        if not self.lost.done():
            self.lost.set_result(None)
        # asyncio calls nothing of ours after this: the scratch buffer can serve the next
        # connection (nothing we handed out points into it: heads and bodies were copied).
        if len(self._spares) < _SPARE_SCRATCH_BUFFERS:
            self._spares.append(self._scratch)
        self._scratch = bytearray()  # a stray use fails loudly instead of sharing a buffer
        self._scratch_view = memoryview(self._scratch)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    # --- requests ----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._state == _CLOSED

    @property
    def reusable(self) -> bool:
        return self._state == _IDLE and self._keep_alive

    async def exchange(
        self,
        head: bytes,
        body: bytes | bytearray | memoryview | None,
        plan: BodyPlan,
        deadline: float,
    ) -> Response:
        """Send one request and read its whole response."""
        assert self._state == _IDLE
        transport = self.transport
        assert transport is not None
        waiter: asyncio.Future[Response] = self._loop.create_future()
        self._waiter = waiter
        self._plan = plan
        self._state = _HEAD
        self._filled = self._scan = self._interim = 0
        self._received = self._mark = 0
        now = self._time()
        self._sent_at = now
        self._deadline = now + deadline
        self._arm_timer(now)
        self._handed = self._acked_mark = 0
        if body is None or len(body) <= 64 * 1024:
            transport.write(head + body if body else head)
        else:
            transport.write(head)
            view = memoryview(body).cast("B")
            for offset in range(0, len(view), WRITE_SLICE):
                if waiter.done() or self._state == _CLOSED:
                    break
                piece = view[offset : offset + WRITE_SLICE]
                transport.write(piece)
                self._handed += len(piece)
                if self._paused:
                    drained: asyncio.Future[Any] = self._loop.create_future()
                    self._drained = drained
                    waits: tuple[asyncio.Future[Any], ...] = (drained, waiter)
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        return await waiter

    def abort(self) -> None:
        """Drop the connection now (a failed or cancelled request)."""
        self._close_state()
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self._close_state()
        if self.transport is not None:
            self.transport.close()

    # --- time --------------------------------------------------------------------------

    def _arm_timer(self, now: float) -> None:
        window = self._window
        at = self._deadline if window is None else min(self._deadline, now + window)
        self._timer = self._loop.call_at(at, self._check_time)

    def _check_time(self) -> None:
        self._timer = None
        if self._waiter is None:
            return
        now = self._time()
        if now >= self._deadline:
            self._fail(
                _Failure(
                    StorageTimeoutError,
                    "the response did not complete before the attempt's deadline",
                )
            )
            return
        window = self._window
        if window is not None:
            got = self._received - self._mark
            needed = max(1, int(STALL_FLOOR_BYTES_PER_SECOND * window))
            sink = self._sink
            if self._state == _HEAD:
                # Waiting for the first byte of the answer (any byte shows life; the deadline
                # bounds the rest), or still sending a large body: then the bytes the peer
                # acknowledged in this window are the progress.
                needed = 1
                sent = self._sent_so_far()
                if sent is not None and sent > self._acked_mark:
                    got += sent - self._acked_mark
                    self._acked_mark = sent
            elif sink is not None and sink.stop_after is not None:
                needed = min(needed, max(1, sink.stop_after - (sink.pos - got)))
            if got < needed:
                self._fail(
                    _Failure(
                        StorageTimeoutError,
                        f"the response stalled: {got} bytes in {window:g} s, below the floor of "
                        f"{STALL_FLOOR_BYTES_PER_SECOND} bytes/s (network_stream_timeout_seconds)",
                    )
                )
                return
            self._mark = self._received
        self._arm_timer(now)

    def _sent_so_far(self) -> int | None:
        """Body bytes the peer has taken: handed to the socket, minus what still waits in
        asyncio's buffer and in the kernel's send queue (None: nothing large being sent)."""
        transport = self.transport
        if not self._handed or transport is None:
            return None
        unsent = transport.get_write_buffer_size() + _kernel_unsent(self.fd)
        return max(0, self._handed - unsent)

    # --- parsing -----------------------------------------------------------------------

    def _parse_heads(self) -> None:
        scratch = self._scratch
        while True:
            end = scratch.find(b"\r\n\r\n", self._scan, self._filled)
            if end < 0:
                if self._filled >= MAX_RESPONSE_HEAD:
                    raise _Failure(
                        ProtocolError, f"the response head exceeds {MAX_RESPONSE_HEAD} bytes"
                    )
                self._scan = max(0, self._filled - 3)
                return
            head_end = end + 4
            status, keep_alive, headers, parser, callbacks = _parse_head(
                bytes(self._scratch_view[:head_end])
            )
            if 100 <= status < 200:
                if status == 101:
                    raise _Failure(ProtocolError, "the server switched protocols (101)")
                self._interim += 1
                if self._interim > MAX_INTERIM_RESPONSES:
                    raise _Failure(
                        ProtocolError, f"more than {MAX_INTERIM_RESPONSES} interim (1xx) responses"
                    )
                rest = self._filled - head_end
                scratch[:rest] = self._scratch_view[head_end : self._filled]
                self._filled = rest
                self._scan = 0
                continue
            self._status, self._keep_alive, self._headers = status, keep_alive, headers
            self._start_body(head_end, parser, callbacks)
            return

    def _start_body(
        self, head_end: int, parser: httptools.HttpResponseParser, callbacks: _HeadParser
    ) -> None:
        headers = self._headers
        plan = self._plan
        assert plan is not None
        already = self._scratch_view[head_end : self._filled]
        encoding = headers.get("transfer-encoding")
        if plan.method == "HEAD" or self._status in (204, 304):
            if already:
                self._keep_alive = False
            self._sink = plan.on_head(self._status, headers, 0)
            self._complete()
            return
        if encoding is not None:
            if encoding.strip().lower() != "chunked":
                raise _Failure(ProtocolError, f"unsupported transfer-encoding {encoding[:40]!r}")
            self._sink = callbacks.sink = plan.on_head(self._status, headers, None)
            self._parser, self._callbacks = parser, callbacks
            self._state = _CHUNKED
            self._feed_chunked(already)
            return
        length_text = headers.get("content-length")
        if length_text is None:
            self._keep_alive = False
            self._sink = sink = plan.on_head(self._status, headers, None)
            self._state = _UNTIL_CLOSE
            sink.feed(already)
            if sink.overflowed:
                self._complete()
            return
        length = int(length_text)  # llhttp checked it: digits, no duplicates
        if self._scale_deadline:  # the size is known now: the deadline scales with it
            self._deadline = max(self._deadline, self._sent_at + attempt_deadline(length))
        self._sink = sink = plan.on_head(self._status, headers, length)
        if len(already) > length:  # bytes past the body: the connection cannot be trusted
            self._keep_alive = False
        if already:
            sink.feed(already[:length])
        if sink.done:
            self._complete()
        else:
            self._state = _BODY

    def _feed_chunked(self, data: memoryview) -> None:
        parser, callbacks = self._parser, self._callbacks
        assert parser is not None
        assert callbacks is not None
        try:
            parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            raise _callback_failure(exc) from None
        except httptools.HttpParserError as exc:
            if not callbacks.complete:
                raise _Failure(ProtocolError, f"malformed chunked body ({exc})") from None
            callbacks.extra = True  # garbage after a complete response
        if callbacks.complete:
            if callbacks.extra:
                self._keep_alive = False
            self._complete()

    def _cut_short(self, what: str) -> str:
        sink = self._sink
        if sink is not None and sink.stop_after is not None:
            return f"{what} after {sink.pos} of {sink.length} body bytes: the body was cut short"
        return f"{what} before the body ended: the body was cut short"

    # --- outcomes ----------------------------------------------------------------------

    def _complete(self) -> None:
        plan, sink, waiter = self._plan, self._sink, self._waiter
        assert plan is not None
        assert sink is not None
        if sink.close_after or (self._state == _BODY and sink.pos != sink.length):
            self._keep_alive = False
        response = plan.finish(self._status, self._headers, sink)
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
        self._plan = self._sink = None
        self._parser = self._callbacks = None
        self._filled = self._scan = 0
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
            waiter.set_exception(
                _Failure(ConnectionLostError, "the connection was closed by the client")
            )


try:  # FIONREAD is one cheap ioctl; select() is the portable fallback
    import fcntl as _fcntl
    import termios as _termios

    _FIONREAD: int | None = _termios.FIONREAD
except ImportError:  # pragma: no cover - platforms without fcntl (Windows)
    _FIONREAD = None
_PENDING = bytearray(4)
_TIOCOUTQ: int | None = getattr(_termios, "TIOCOUTQ", None) if _FIONREAD is not None else None


def _kernel_unsent(fd: int) -> int:
    """Bytes still in the socket's send queue (0 where the platform cannot tell)."""
    if _TIOCOUTQ is None or fd < 0:
        return 0
    try:
        _fcntl.ioctl(fd, _TIOCOUTQ, _PENDING)
    except OSError:
        return 0
    return int.from_bytes(_PENDING, "little")


def _has_pending_input(connection: _Connection) -> bool:
    """Bytes already waiting on an idle connection's socket: it must not be reused (they
    would be read as the next request's response). A server that closed the connection is
    caught by the transparent resend of a stale keep-alive instead."""
    fd = connection.fd
    if fd < 0:
        return False
    try:
        if _FIONREAD is not None:
            _fcntl.ioctl(fd, _FIONREAD, _PENDING)
            return int.from_bytes(_PENDING, "little") > 0
        readable, _, _ = select.select([fd], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class LeanTransport(PlannedTransport):
    """Keep-alive connections to one origin, for one event loop. See the module docstring."""

    def __init__(self, config: TransportConfig) -> None:
        self.loop = asyncio.get_running_loop()
        self.config = config
        self._scheme = config.scheme
        self._host = config.host
        self._port = config.port
        self._ssl = ssl_context(config.ca_bundle) if self._scheme == "https" else None
        self._plain_sockets = self._ssl is None and supports_plain_sockets(self.loop)
        self._idle: collections.deque[_Connection] = collections.deque()
        self._all: set[_Connection] = set()
        self.spare_scratch: list[bytearray] = []  # of closed connections, for new ones
        self._addresses: list[tuple[Any, ...]] = []
        self._resolved_at = -DNS_TTL
        self._turn = 0  # which address of the preferred family the next connection tries first
        self._closed = False
        self.connections_made = 0

    def __repr__(self) -> str:
        return f"LeanTransport({self.config.origin}, open={len(self._all)}, idle={len(self._idle)})"

    @property
    def closed(self) -> bool:
        return self._closed

    async def _send(self, request: Request, plan: BodyPlan, what: str, size: int) -> Response:
        try:
            head = request_head(request)
        except ValueError as exc:
            raise StorageError(f"{what}: refused to send a malformed request ({exc}).") from None
        deadline = self.config.deadline(size)  # the connection's own timer enforces it
        try:
            for attempt in (0, 1):
                connection = self._take_idle()
                if connection is None:
                    connection = await self._connect(what)
                try:
                    response = await connection.exchange(head, request.body, plan, deadline)
                except _ClosedBeforeResponse:
                    if connection.served and attempt == 0 and request.resend_if_stale:
                        continue  # a stale keep-alive connection: once more, on a new one
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
        except _Failure as failure:
            raise failure.kind(f"{what} failed: {failure}.") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _take_idle(self) -> _Connection | None:
        idle = self._idle
        if not idle:
            return None
        cutoff = self.loop.time() - KEEPALIVE_SECONDS
        while idle and idle[0].idle_since < cutoff:  # the oldest first: too old to trust
            idle.popleft().close()
        while idle:
            connection = idle.pop()  # the most recent: warmest, least likely dropped
            transport = connection.transport
            if (
                not connection.closed
                and transport is not None
                and not transport.is_closing()
                and not _has_pending_input(connection)
            ):
                return connection
            connection.abort()
        return None

    def _known_addresses(self) -> list[tuple[Any, ...]] | None:
        """The addresses to connect to, if known without a lookup (cached, or an IP)."""
        now = self.loop.time()
        if self._addresses and now - self._resolved_at < DNS_TTL:
            return self._addresses
        try:  # an IP address needs no lookup (and no thread hop)
            ip = ipaddress.ip_address(self._host)
        except ValueError:
            return None
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        self._addresses = [(family, (self._host, self._port))]
        self._resolved_at = now
        return self._addresses

    async def _look_up(self) -> list[tuple[Any, ...]]:
        infos = await self.loop.getaddrinfo(
            self._host, self._port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        if not infos:
            raise OSError(f"could not resolve {self._host!r}")
        self._addresses = [(family, address) for family, _, _, _, address in infos]
        self._resolved_at = self.loop.time()
        return self._addresses

    def _in_turn(self, addresses: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The order in which a new connection tries ``addresses``: those of the preferred
        (first) family in rotation, then the others as fallbacks.

        A name such as S3's answers with several addresses so that clients spread their
        connections over them; the lookup is cached, so without the rotation every
        connection of the next five minutes would go to the first one."""
        if len(addresses) < 2:
            return addresses
        family = addresses[0][0]
        preferred = [entry for entry in addresses if entry[0] == family]
        fallbacks = [entry for entry in addresses if entry[0] != family]
        turn = self._turn % len(preferred)
        self._turn += 1
        return preferred[turn:] + preferred[:turn] + fallbacks

    async def _connect(self, what: str) -> _Connection:
        """A new connection; the connect timeout covers the lookup and every address tried.

        Plain connections time out on their own timer; only a lookup and a TLS connect go
        through ``asyncio.timeout``, which costs a few futures more per connection."""
        if self._closed:
            raise ConnectionLostError(f"{what} failed: the transport is closed.")
        endpoint = f"{self._host}:{self._port}"
        timeout = self.config.connect_timeout
        deadline = None if timeout is None else self.loop.time() + timeout
        try:
            addresses = self._known_addresses()
            if addresses is None:
                async with asyncio.timeout_at(deadline):
                    addresses = await self._look_up()
            last: OSError | None = None
            for family, address in self._in_turn(addresses):
                try:
                    protocol: asyncio.BaseProtocol
                    if self._plain_sockets:
                        protocol = await open_plain_connection(
                            self.loop, family, address, lambda: _Connection(self), deadline
                        )
                    else:
                        async with asyncio.timeout_at(deadline):
                            _, protocol = await self.loop.create_connection(
                                lambda: _Connection(self),
                                host=address[0],
                                port=address[1],
                                family=family,
                                ssl=self._ssl,
                                server_hostname=self._host if self._ssl is not None else None,
                            )
                except (ssl.SSLError, TimeoutError):
                    raise  # a TLS failure is the server's; a timeout is the whole budget's
                except OSError as exc:
                    last = exc
                    continue
                assert isinstance(protocol, _Connection)
                if self._closed:  # closed while we connected
                    protocol.abort()
                    raise ConnectionLostError(f"{what} failed: the transport is closed.")
                self._all.add(protocol)
                self.connections_made += 1
                return protocol
            assert last is not None
            self._addresses = []  # resolve again next time
            raise last
        except ssl.SSLCertVerificationError as exc:
            raise TLSVerificationError(
                f"{what} failed: the TLS certificate of {endpoint} did not verify "
                f"({exc.verify_message or exc.reason}). This is not retried: fix the endpoint, "
                "or trust its CA with AWS_CA_BUNDLE or SSL_CERT_FILE."
            ) from None
        except ssl.SSLError as exc:
            if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
                raise ConnectionLostError(
                    f"{what} failed: the connection to {endpoint} closed during the TLS "
                    f"handshake ({exc.reason})."
                ) from None
            raise TLSVerificationError(
                f"{what} failed: the TLS handshake with {endpoint} failed ({exc.reason}); "
                "is it an https endpoint? This is not retried."
            ) from None
        except TimeoutError:
            raise StorageTimeoutError(
                f"{what} failed: could not connect to {endpoint} within "
                f"{self.config.connect_timeout:g} s."
            ) from None
        except OSError as exc:
            # Refused: nothing listens there; retried briefly only (issue 15).
            kind = (
                EndpointUnreachableError
                if isinstance(exc, ConnectionRefusedError)
                else ConnectionLostError
            )
            raise kind(
                f"{what} failed: could not connect to {endpoint} ({exc.strerror or exc})."
            ) from None

    def _forget(self, connection: _Connection) -> None:
        self._all.discard(connection)
        idle = self._idle
        if idle and connection in idle:
            idle.remove(connection)

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
