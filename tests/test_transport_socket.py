"""The plain-TCP transport under the lean transport (``_transport/_socket.py``).

Each rule against a real socket on 127.0.0.1 in the test's loop: flow control and the
order of bytes on a peer that reads slowly, ``close`` flushing and ``abort`` dropping
unsent bytes, end of stream, a reset, a protocol callback that fails, and the connect's
failures (refused, the deadline, cancellation) closing their socket. The lean transport's
own suites (``test_transport_lean.py``, ``test_transport_hostile.py``, the moto suites) run
every plain ``http`` request through it; the last tests here run the lean transport over
asyncio's own transport instead, as it does on loops without ``add_reader`` (uvloop).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from icechunk_storage import (
    EndpointUnreachableError,
    RetriesExhaustedError,
    S3Storage,
    StorageRetriesSettings,
    StorageSettings,
    s3_storage,
)
from icechunk_storage._transport import _lean
from icechunk_storage._transport._socket import (
    HIGH_WATER,
    PlainSocketTransport,
    open_plain_connection,
    supports_plain_sockets,
)


class Recorder(asyncio.BufferedProtocol):
    """Keeps what arrives and every callback, in order."""

    def __init__(self, *, keep_open_at_eof: bool = False) -> None:
        self.buffer = bytearray(4096)
        self.received = bytearray()
        self.events: list[str] = []
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.BaseTransport | None = None
        self.keep_open_at_eof = keep_open_at_eof
        self.fail_in: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.events.append("made")

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.buffer)

    def buffer_updated(self, nbytes: int) -> None:
        if self.fail_in == "buffer_updated":
            raise RuntimeError("a bug in the protocol")
        self.received += self.buffer[:nbytes]

    def eof_received(self) -> bool:
        self.events.append("eof")
        return self.keep_open_at_eof

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        assert not self.lost.done(), "connection_lost called twice"
        self.lost.set_result(exc)


class Peer:
    """A listening socket in the loop; ``accept`` gives the server side of one connection."""

    def __init__(self) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.setblocking(False)
        self.address = self.listener.getsockname()

    async def accept(self) -> socket.socket:
        loop = asyncio.get_running_loop()
        conn, _ = await loop.sock_accept(self.listener)
        conn.setblocking(False)
        return conn

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    listening = Peer()
    try:
        yield listening
    finally:
        listening.close()


async def connect(peer: Peer, protocol: Recorder) -> tuple[PlainSocketTransport, socket.socket]:
    loop = asyncio.get_running_loop()
    opened = await open_plain_connection(
        loop, socket.AF_INET, peer.address, lambda: protocol, loop.time() + 5
    )
    assert opened is protocol
    server_side = await peer.accept()
    assert isinstance(protocol.transport, PlainSocketTransport)
    return protocol.transport, server_side


async def read_all(sock: socket.socket, count: int, *, pause: float = 0.0) -> bytes:
    loop = asyncio.get_running_loop()
    data = bytearray()
    while len(data) < count:
        chunk = await loop.sock_recv(sock, 65536)
        if not chunk:
            break
        data += chunk
        if pause:
            await asyncio.sleep(pause)
    return bytes(data)


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Poll ``condition`` in the loop (callbacks run between polls), failing after
    ``seconds``."""
    for _ in range(int(seconds / 0.001)):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the condition never held")


def test_the_default_loop_polls_its_own_descriptors() -> None:
    loop = asyncio.new_event_loop()
    try:
        assert supports_plain_sockets(loop)
    finally:
        loop.close()


async def test_bytes_arrive_in_order_and_connection_made_comes_first(peer: Peer) -> None:
    protocol = Recorder()
    transport, server_side = await connect(peer, protocol)
    assert protocol.events == ["made"]
    assert transport.get_extra_info("socket").fileno() >= 0
    transport.write(b"hello ")
    transport.write(memoryview(b"world"))
    assert await read_all(server_side, 11) == b"hello world"
    server_side.sendall(b"answer")
    await until(lambda: len(protocol.received) >= 6)
    assert bytes(protocol.received) == b"answer"
    transport.close()
    assert await protocol.lost is None
    assert transport.is_closing()
    server_side.close()


async def test_a_slow_reader_pauses_writing_and_gets_every_byte_in_order(peer: Peer) -> None:
    """More than the kernel buffers hold: the tail waits as a view of the caller's bytes,
    the protocol is told to pause above the high-water mark and to resume below the low."""
    protocol = Recorder()
    transport, server_side = await connect(peer, protocol)
    body = bytes(i % 253 for i in range(8 * 1024 * 1024))
    transport.write(body)
    assert transport.get_write_buffer_size() > HIGH_WATER
    assert protocol.events == ["made", "pause"]
    assert transport._pending[0].obj is body  # the caller's bytes, not a copy
    received = await read_all(server_side, len(body))
    assert received == body
    await until(lambda: transport.get_write_buffer_size() == 0)
    assert protocol.events == ["made", "pause", "resume"]
    transport.close()
    assert await protocol.lost is None
    server_side.close()


async def test_aborting_as_the_tail_goes_out_leaves_nothing_registered_in_the_loop() -> None:
    """``resume_writing`` may abort (its request just failed) in the very call that sent the
    last pending bytes; the write callback must not outlive the socket, or a new socket
    with the same descriptor number would inherit it."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)

    class AbortOnResume(Recorder):
        def resume_writing(self) -> None:
            super().resume_writing()
            assert isinstance(self.transport, PlainSocketTransport)
            self.transport.abort()

    protocol = AbortOnResume()
    transport = PlainSocketTransport(loop, ours, protocol)
    fd = ours.fileno()
    tail = b"t" * (HIGH_WATER + 1)  # as if the kernel had refused it: pending, paused
    transport._pending.append(memoryview(tail))
    transport._pending_size = len(tail)
    transport._writing_paused = True
    transport._start_writing()
    transport._write_ready()  # the socket pair takes it all, then resume_writing aborts
    assert protocol.events[-1] == "resume"
    assert await protocol.lost is None
    assert not loop.remove_writer(fd)
    assert not loop.remove_reader(fd)
    assert theirs.recv(len(tail) + 1) == tail
    theirs.close()


async def test_close_sends_what_is_pending_first_then_loses_the_connection(peer: Peer) -> None:
    protocol = Recorder()
    transport, server_side = await connect(peer, protocol)
    body = b"x" * (6 * 1024 * 1024)
    transport.write(body)
    assert transport.get_write_buffer_size() > 0
    transport.close()
    await asyncio.sleep(0.01)
    assert not protocol.lost.done()  # bytes still to send
    assert await read_all(server_side, len(body) + 1) == body  # all, then end of stream
    assert await protocol.lost is None
    server_side.close()


async def test_abort_drops_pending_bytes_and_closes_the_socket(peer: Peer) -> None:
    protocol = Recorder()
    transport, server_side = await connect(peer, protocol)
    sock = transport.get_extra_info("socket")
    transport.write(b"y" * (6 * 1024 * 1024))
    transport.abort()
    assert transport.get_write_buffer_size() == 0
    assert not transport._pending  # the view of the caller's bytes is let go at once
    assert await protocol.lost is None
    assert sock.fileno() == -1
    received = await read_all(server_side, 7 * 1024 * 1024)
    assert len(received) < 6 * 1024 * 1024
    transport.abort()  # again: nothing more happens
    transport.close()
    await asyncio.sleep(0)
    assert protocol.events.count("lost") == 1
    server_side.close()


async def test_end_of_stream_is_reported_then_the_connection_closes(peer: Peer) -> None:
    protocol = Recorder()
    _, server_side = await connect(peer, protocol)
    server_side.sendall(b"last words")
    server_side.shutdown(socket.SHUT_WR)
    assert await protocol.lost is None
    assert protocol.events == ["made", "eof", "lost"]
    assert bytes(protocol.received) == b"last words"
    server_side.close()


async def test_a_protocol_that_keeps_the_connection_open_at_eof_can_still_write(
    peer: Peer,
) -> None:
    protocol = Recorder(keep_open_at_eof=True)
    transport, server_side = await connect(peer, protocol)
    server_side.shutdown(socket.SHUT_WR)
    await until(lambda: "eof" in protocol.events)
    assert not transport.is_reading()
    transport.write(b"still here")
    assert await read_all(server_side, 10) == b"still here"
    transport.close()
    assert await protocol.lost is None
    server_side.close()


async def test_a_reset_is_reported_as_the_connection_lost_with_its_error(peer: Peer) -> None:
    protocol = Recorder()
    transport, server_side = await connect(peer, protocol)
    server_side.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    server_side.close()  # linger 0: a reset, not an end of stream
    error = await protocol.lost
    assert isinstance(error, ConnectionResetError)
    assert "eof" not in protocol.events
    assert transport.is_closing()


async def test_a_failing_protocol_callback_is_reported_and_drops_the_connection(
    peer: Peer,
) -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        protocol = Recorder()
        protocol.fail_in = "buffer_updated"
        _, server_side = await connect(peer, protocol)
        server_side.sendall(b"boom")
        error = await protocol.lost
    finally:
        loop.set_exception_handler(None)
    assert isinstance(error, RuntimeError)
    assert reported[0]["exception"] is error
    assert "buffer_updated" in reported[0]["message"]
    server_side.close()


def _open_descriptors() -> int:
    gc.collect()
    return len(list(Path("/proc/self/fd").iterdir()))


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="counts descriptors in /proc")
async def test_a_refused_connect_raises_its_error_and_leaves_no_socket() -> None:
    loop = asyncio.get_running_loop()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    address = closed.getsockname()
    closed.close()  # nothing listens there now
    before = _open_descriptors()
    for _ in range(20):
        with pytest.raises(ConnectionRefusedError):
            await open_plain_connection(loop, socket.AF_INET, address, Recorder, None)
    assert _open_descriptors() == before


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="counts descriptors in /proc")
async def test_a_connect_that_never_completes_times_out_or_cancels_without_a_leak() -> None:
    """A full accept queue: the kernel drops our SYNs, so the connect waits for writability
    (the path the empty-send probe cannot shortcut) until the deadline, or a cancellation."""
    loop = asyncio.get_running_loop()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(address)
        fillers.append(filler)
    try:
        before = _open_descriptors()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await open_plain_connection(loop, socket.AF_INET, address, Recorder, loop.time() + 0.2)
        assert 0.15 < time.monotonic() - started < 2
        task = asyncio.ensure_future(
            open_plain_connection(loop, socket.AF_INET, address, Recorder, None)
        )
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert _open_descriptors() == before
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


# --- the lean transport over asyncio's transport (loops without add_reader) ------------------


@pytest.fixture
def asyncio_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_lean, "supports_plain_sockets", lambda loop: False)


async def _echo_s3(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers PUTs with 200 and an ETag, GETs with the last PUT's body; closes after each
    answer when the request asked to, like moto."""
    stored = b""
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if lines[0].startswith("PUT"):
                stored = body
                answer = b'HTTP/1.1 200 OK\r\nETag: "e"\r\nContent-Length: 0\r\n\r\n'
            else:
                answer = b'HTTP/1.1 200 OK\r\nETag: "e"\r\nContent-Length: %d\r\n\r\n' % len(stored)
                answer += stored
            writer.write(answer)
            await writer.drain()
    writer.close()


def _storage(url: str, settings: StorageSettings | None = None) -> S3Storage:
    return s3_storage(
        bucket="b",
        prefix=None,
        endpoint_url=url,
        allow_http=True,
        force_path_style=True,
        region="us-east-1",
        access_key_id="AKIDEXAMPLE",
        secret_access_key="secret",
        settings=settings,
    )


@pytest.mark.usefixtures("asyncio_sockets")
async def test_the_lean_transport_also_runs_over_asyncios_transport(aws_isolated: Path) -> None:
    server = await asyncio.start_server(_echo_s3, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    storage = _storage(f"http://127.0.0.1:{port}")
    try:
        body = bytes(range(256)) * 4096  # 1 MiB: more than one write slice's worth of flow
        await storage.put("k", body)
        assert bytes((await storage.get("k")).data) == body
        clients = storage._loops.peek()
        assert clients is not None
        pool = clients.http_transport()
        assert isinstance(pool, _lean.LeanTransport)
        assert not pool._plain_sockets
        connection = next(iter(pool._idle))
        assert not isinstance(connection.transport, PlainSocketTransport)
    finally:
        await storage.aclose()
        server.close()
        await server.wait_closed()


@pytest.mark.usefixtures("asyncio_sockets")
async def test_a_refused_connect_over_asyncios_transport_is_still_unreachable(
    aws_isolated: Path,
) -> None:
    storage = _storage(
        "http://127.0.0.1:1", StorageSettings(retries=StorageRetriesSettings(max_tries=1))
    )
    with pytest.raises(RetriesExhaustedError) as raised:
        await storage.put("k", b"v")
    assert isinstance(raised.value.__cause__, EndpointUnreachableError)
    await storage.aclose()
