"""A plain-TCP asyncio transport for the lean transport's connections, lighter than asyncio's.

Why: a server that closes every connection (moto, some proxies and S3-alikes) makes every
request pay for a connection's setup and teardown. On a standard selector event loop,
``loop.create_connection`` and its ``_SelectorSocketTransport`` spend ~120 us of CPU per
connection there (three futures, six ``call_soon`` handles, ``getsockname`` and
``getpeername`` for extra info nobody reads), against ~75 us for the same system calls driven
directly. :func:`open_plain_connection` connects a non-blocking socket itself and hands it to
:class:`PlainSocketTransport`, which drives the lean transport's ``BufferedProtocol`` with the
same semantics as asyncio's transport (one ``recv_into`` per readiness, ``eof_received``,
``connection_lost`` once and soon, write flow control), with one difference: the unsent tail
of a write is held as a view of the caller's bytes, not copied (the lean transport keeps
those bytes alive and unchanged until its response, and drops the view on abort).

Used only for plain ``http`` on a loop derived from ``asyncio.BaseSelectorEventLoop`` (the
default on Linux and macOS); TLS, and other loops such as uvloop, whose own transports are
already in C, go through ``loop.create_connection``.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import socket
from collections.abc import Callable
from typing import Any, Final

__all__ = ["PlainSocketTransport", "open_plain_connection", "supports_plain_sockets"]

HIGH_WATER: Final = 64 * 1024
"""Unsent bytes above which the protocol is asked to pause writing (asyncio's default)."""
LOW_WATER: Final = HIGH_WATER // 4

_SOCK_NONBLOCK: Final = getattr(socket, "SOCK_NONBLOCK", 0)
_NONBLOCKING_STREAM: Final = socket.SOCK_STREAM | _SOCK_NONBLOCK
"""Linux creates the socket non-blocking, one system call fewer than ``setblocking``."""
_WOULD_BLOCK: Final = frozenset({errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN, errno.EINTR})


def supports_plain_sockets(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` polls file descriptors itself (``add_reader``/``add_writer``)."""
    return isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop)


async def open_plain_connection(
    loop: asyncio.AbstractEventLoop,
    family: int,
    address: tuple[Any, ...],
    protocol_factory: Callable[[], asyncio.BufferedProtocol],
    deadline: float | None,
) -> asyncio.BufferedProtocol:
    """Connect a TCP socket to ``address`` by ``deadline`` (loop time; None: no limit) and
    return the protocol, already connected.

    Failures are the ``OSError`` subclasses ``socket.connect`` raises (refused, unreachable),
    and ``TimeoutError`` at the deadline. A failed or cancelled connect closes its socket.
    """
    sock = socket.socket(family, _NONBLOCKING_STREAM)
    try:
        if not _NONBLOCKING_STREAM & _SOCK_NONBLOCK:
            sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(address)
        if code in _WOULD_BLOCK and _established(sock):
            code = 0
        if code in _WOULD_BLOCK:
            fd = sock.fileno()
            connected: asyncio.Future[None] = loop.create_future()
            loop.add_writer(fd, _set_done, connected)
            timer = None if deadline is None else loop.call_at(deadline, _time_out, connected)
            try:
                await connected
            finally:
                loop.remove_writer(fd)
                if timer is not None:
                    timer.cancel()
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, f"connect to {address!r} failed: {errno.errorcode.get(code, code)}")
        protocol = protocol_factory()
        PlainSocketTransport(loop, sock, protocol)
        return protocol
    except BaseException:
        sock.close()
        raise


def _established(sock: socket.socket) -> bool:
    """Whether a connect in progress has already completed, asked without waiting.

    To a nearby server (loopback, the same host or rack) the handshake often completes
    inside the ``connect`` call itself; then waiting for writability costs a future, two
    ``epoll_ctl`` and a loop iteration for nothing. An empty ``send`` answers: it succeeds
    on an established connection, would block on one still connecting, and raises the
    connect's own error (refused, unreachable) on one that failed.
    """
    try:
        sock.send(b"")
    except (BlockingIOError, InterruptedError):
        return False
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:  # how some systems say "still connecting"
            return False
        raise
    return True


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _time_out(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class PlainSocketTransport(asyncio.Transport):
    """A connected non-blocking TCP socket driving one ``BufferedProtocol``.

    ``connection_made`` is called before the constructor returns; ``connection_lost`` is
    called once, from the loop, after :meth:`close` (once the unsent bytes are out),
    :meth:`abort`, an end of stream the protocol does not keep open, or a socket error.
    """

    __slots__ = (
        "_closing",
        "_fd",
        "_loop",
        "_lost",
        "_pending",
        "_pending_size",
        "_protocol",
        "_reading",
        "_sock",
        "_writing",
        "_writing_paused",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol: asyncio.BufferedProtocol,
    ) -> None:
        super().__init__({"socket": sock})
        self._loop = loop
        self._sock: socket.socket | None = sock
        self._fd = sock.fileno()
        self._protocol: asyncio.BufferedProtocol | None = protocol
        self._pending: collections.deque[memoryview] = collections.deque()
        self._pending_size = 0
        self._closing = False
        self._lost = False  # connection_lost is scheduled or done
        self._reading = True
        self._writing = False  # the write-ready callback is registered
        self._writing_paused = False
        protocol.connection_made(self)
        if not self._closing:
            loop.add_reader(self._fd, self._read_ready)

    def __repr__(self) -> str:
        state = "closed" if self._sock is None else "closing" if self._closing else "open"
        return f"<PlainSocketTransport fd={self._fd} {state} unsent={self._pending_size}>"

    # --- reading -------------------------------------------------------------------

    def _read_ready(self) -> None:
        protocol, sock = self._protocol, self._sock
        if self._lost or protocol is None or sock is None:
            return
        try:
            buffer = memoryview(protocol.get_buffer(-1))
            if not buffer.nbytes:
                raise RuntimeError("get_buffer() returned an empty buffer")
            nbytes = sock.recv_into(buffer)
        except (BlockingIOError, InterruptedError):
            return
        except Exception as exc:
            self._fatal_error(exc, "reading from the socket failed")
            return
        if not nbytes:
            self._end_of_stream(protocol)
            return
        try:
            protocol.buffer_updated(nbytes)
        except Exception as exc:
            self._fatal_error(exc, "protocol.buffer_updated() failed")

    def _end_of_stream(self, protocol: asyncio.BufferedProtocol) -> None:
        try:
            keep_open = protocol.eof_received()
        except Exception as exc:
            self._fatal_error(exc, "protocol.eof_received() failed")
            return
        if keep_open:
            self._stop_reading()
        else:
            self.close()

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def pause_reading(self) -> None:
        if self.is_reading():
            self._stop_reading()

    def resume_reading(self) -> None:
        if not self._closing and not self._reading:
            self._reading = True
            self._loop.add_reader(self._fd, self._read_ready)

    # --- writing -------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data must be a bytes-like object, not {type(data).__name__}")
        sock = self._sock
        if not data or self._lost or sock is None:
            return
        view = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
        if not self._pending:
            try:
                sent = sock.send(view)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except Exception as exc:
                self._fatal_error(exc, "writing to the socket failed")
                return
            if sent == len(view):
                return
            view = view[sent:]
            self._start_writing()
        self._pending.append(view)
        self._pending_size += len(view)
        if not self._writing_paused and self._pending_size > HIGH_WATER:
            self._writing_paused = True
            self._call_protocol("pause_writing")

    def _write_ready(self) -> None:
        sock, pending = self._sock, self._pending
        if self._lost or sock is None:
            return
        try:
            while pending:
                view = pending[0]
                sent = sock.send(view)
                self._pending_size -= sent
                if sent < len(view):
                    pending[0] = view[sent:]
                    break
                pending.popleft()
        except (BlockingIOError, InterruptedError):
            pass
        except Exception as exc:
            self._fatal_error(exc, "writing to the socket failed")
            return
        if self._writing_paused and self._pending_size <= LOW_WATER:
            self._writing_paused = False
            self._call_protocol("resume_writing")  # may write more
        if not pending and not self._lost:
            self._stop_writing()
            if self._closing:
                self._lose(None)

    def _start_writing(self) -> None:
        if not self._writing:
            self._writing = True
            self._loop.add_writer(self._fd, self._write_ready)

    def _stop_writing(self) -> None:
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)

    def get_write_buffer_size(self) -> int:
        return self._pending_size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (LOW_WATER, HIGH_WATER)

    def can_write_eof(self) -> bool:
        return False

    # --- closing -------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Stop reading; ``connection_lost`` follows once the unsent bytes are out."""
        if self._closing:
            return
        self._closing = True
        self._stop_reading()
        if not self._pending:
            self._lose(None)

    def abort(self) -> None:
        """Drop the connection now, unsent bytes included."""
        self._force_close(None)

    def _fatal_error(self, exc: Exception, message: str) -> None:
        if not isinstance(exc, OSError):  # a bug in a protocol callback: say so, as asyncio does
            self._loop.call_exception_handler(
                {
                    "message": message,
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )
        self._force_close(exc)

    def _force_close(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._pending.clear()
        self._pending_size = 0
        self._stop_writing()  # also when a callback aborted just as the tail went out
        self._closing = True
        self._stop_reading()
        self._lose(exc)

    def _lose(self, exc: Exception | None) -> None:
        self._lost = True
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: Exception | None) -> None:
        protocol, sock = self._protocol, self._sock
        self._protocol = self._sock = None
        try:
            if protocol is not None:
                protocol.connection_lost(exc)
        finally:
            if sock is not None:
                sock.close()

    def _call_protocol(self, name: str) -> None:
        try:
            getattr(self._protocol, name)()
        except Exception as exc:
            self._fatal_error(exc, f"protocol.{name}() failed")

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.BufferedProtocol)
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol
