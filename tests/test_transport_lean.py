"""The lean transport (``icechunk_storage/_transport/_lean.py``) under S3 reads.

Against a scripted server in the test's event loop (127.0.0.1, stopped by the fixture):
keep-alive reuse, ``Connection: close``, stale connections, bodies cut short, too long or
too short, chunked and close-delimited bodies, stalled streams, closing and rebuilding the
pool, TLS, proxies, and that a ranged body is received straight into the caller's buffer.
The moto-based suites (``test_s3.py``, conformance) run the same path against moto.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from icechunk_storage import (
    ConfigurationError,
    ConnectionLostError,
    ObjectNotFoundError,
    OffsetByteRequest,
    RangeByteRequest,
    RetriesExhaustedError,
    S3Storage,
    StorageConcurrencySettings,
    StorageRetriesSettings,
    StorageSettings,
    StorageTimeoutError,
    StorageTimeoutSettings,
    SuffixByteRequest,
    s3_storage,
)
from icechunk_storage._errors import ResponseIntegrityError, TLSVerificationError
from icechunk_storage._transport import Request as HttpRequest
from icechunk_storage._transport import (
    TransportConfig,
    _lean,
    aclose_transport,
    get_transport,
    peek_transport,
)
from icechunk_storage._transport._aiohttp import AiohttpTransport
from icechunk_storage._transport._lean import LeanTransport, request_head

pytestmark = pytest.mark.s3

BUCKET = "bkt"
DATA = bytes(range(256)) * 64  # 16 KiB
BIG = bytes((i * 7) % 251 for i in range(300_000))  # larger than the scratch buffer
RETRIES = StorageRetriesSettings(max_tries=3, initial_backoff_ms=1, max_backoff_ms=2)
ONE_TRY = StorageRetriesSettings(max_tries=1)


def split(part_size: int, retries: StorageRetriesSettings = RETRIES) -> StorageSettings:
    return StorageSettings(
        retries=retries,
        concurrency=StorageConcurrencySettings(
            ideal_concurrent_request_size=part_size, max_concurrent_requests_for_object=8
        ),
    )


# --- the scripted server -------------------------------------------------------------------


@attrs.define
class Request:
    connection: int
    target: str
    headers: dict[str, str]

    @property
    def key(self) -> str:
        path = self.target
        if "://" in path:  # absolute form: sent to us as a proxy
            path = "/" + path.split("://", 1)[1].split("/", 1)[1]
        return path.removeprefix(f"/{BUCKET}/")

    @property
    def range(self) -> tuple[int, int] | None:
        value = self.headers.get("range")
        if value is None:
            return None
        first, _, last = value.removeprefix("bytes=").partition("-")
        return int(first), int(last) + 1


Handler = Callable[["FakeS3", asyncio.StreamWriter, Request], Awaitable[bool]]


@attrs.define
class Action:
    match: Callable[[Request], bool]
    handler: Handler
    times: int = 1


def http_response(
    status: int, body: bytes, headers: dict[str, str] | None = None, *, close: bool = False
) -> bytes:
    lines = [f"HTTP/1.1 {status} X"]
    all_headers = {"Content-Length": str(len(body)), **(headers or {})}
    if close:
        all_headers["Connection"] = "close"
    lines += [f"{name}: {value}" for name, value in all_headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def error_xml(code: str) -> bytes:
    return f"<Error><Code>{code}</Code><Message>scripted</Message></Error>".encode()


class FakeS3:
    """Serves ``objects`` like S3 (ranges, ETag, If-None-Match); ``script`` overrides."""

    def __init__(self, objects: dict[str, bytes], *, keep_alive: bool = True) -> None:
        self.objects = objects
        self.keep_alive = keep_alive
        self.requests: list[Request] = []
        self.actions: list[Action] = []
        self.connections = 0
        self.closed_connections = 0
        self.url = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def script(self, match: Callable[[Request], bool], handler: Handler, times: int = 1) -> None:
        self.actions.append(Action(match, handler, times))

    def of(self, key: str) -> list[Request]:
        return [r for r in self.requests if r.key == key]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        number = self.connections
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                _, target, _ = lines[0].split(" ")
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                request = Request(number, target, headers)
                self.requests.append(request)
                handler: Handler = FakeS3.respond
                for action in self.actions:
                    if action.times > 0 and action.match(request):
                        action.times -= 1
                        handler = action.handler
                        break
                if not await handler(self, writer, request) or not self.keep_alive:
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.closed_connections += 1
            writer.transport.abort()
            self._tasks.discard(task)

    async def respond(self, writer: asyncio.StreamWriter, request: Request) -> bool:
        """What S3 answers; True: keep the connection."""
        data = self.objects.get(request.key)
        close = not self.keep_alive
        if data is None:
            writer.write(http_response(404, error_xml("NoSuchKey"), close=close))
        else:
            etag = f'"etag-{len(data)}"'
            if request.headers.get("if-none-match") == etag:
                writer.write(http_response(304, b"", {"ETag": etag}, close=close))
            elif request.range is not None:
                start, end = request.range
                end = min(end, len(data))
                headers = {"ETag": etag, "Content-Range": f"bytes {start}-{end - 1}/{len(data)}"}
                writer.write(http_response(206, data[start:end], headers, close=close))
            else:
                writer.write(http_response(200, data, {"ETag": etag}, close=close))
        await writer.drain()
        return True


@pytest.fixture
async def server(aws_isolated: Path) -> AsyncIterator[FakeS3]:
    fake = FakeS3({"obj": DATA, "big": BIG})
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def make(url: str, **kwargs: Any) -> S3Storage:
    arguments: dict[str, Any] = {
        "bucket": BUCKET,
        "prefix": None,
        "endpoint_url": url,
        "allow_http": True,
        "force_path_style": True,
        "region": "us-east-1",
        "access_key_id": "AKIDEXAMPLE",
        "secret_access_key": "secret",
        "settings": StorageSettings(retries=RETRIES),
    }
    arguments.update(kwargs)
    return s3_storage(**arguments)


def fast_pool(storage: S3Storage) -> LeanTransport:
    clients = storage._loops.peek()
    assert clients is not None
    assert clients.transport is not None
    transport = get_transport(clients.transport)
    assert isinstance(transport, LeanTransport)
    return transport


def range_from(start: int) -> Callable[[Request], bool]:
    return lambda r: r.range is not None and r.range[0] == start


# --- connections ---------------------------------------------------------------------------


async def test_keep_alive_connections_are_reused(server: FakeS3) -> None:
    async with make(server.url) as storage:
        for _ in range(5):
            assert (await storage.get("obj")).data == DATA
        assert server.connections == 1
        for _ in range(2):
            results = await asyncio.gather(*(storage.get("obj") for _ in range(4)))
            assert all(r.data == DATA for r in results)
        assert server.connections == 4  # the second batch reused the first batch's four
        assert {r.connection for r in server.requests} == {1, 2, 3, 4}
        assert fast_pool(storage).connections_made == 4  # our client, not aiohttp
    assert server.requests[0].headers["accept-encoding"] == "identity"
    assert server.requests[0].headers["authorization"].startswith("AWS4-HMAC-SHA256 ")


async def test_connection_close_is_honoured(aws_isolated: Path) -> None:
    fake = FakeS3({"obj": DATA}, keep_alive=False)  # moto's behaviour
    await fake.start()
    try:
        async with make(fake.url) as storage:
            for _ in range(3):
                assert (await storage.get("obj")).data == DATA
            assert fake.connections == 3
            assert fast_pool(storage).connections_made == 3
            assert fake_idle(storage) == 0
    finally:
        await fake.stop()


async def test_closed_connections_hand_their_buffers_on_without_mixing_bodies(
    aws_isolated: Path,
) -> None:
    """A server that closes every connection (moto) costs a new connection per request;
    its 64 KiB head buffer is taken over from a closed one. Many at once, each body intact."""
    objects = {f"o{i}": bytes([i]) * (1_000 + 997 * i) for i in range(40)}
    fake = FakeS3(objects, keep_alive=False)
    await fake.start()
    try:
        async with make(fake.url) as storage:
            for _ in range(3):
                assert (await storage.get("o1")).data == objects["o1"]
            pool = fast_pool(storage)
            for _ in range(100):  # the last connection_lost comes a loop turn later
                if pool.spare_scratch:
                    break
                await asyncio.sleep(0.01)
            assert len(pool.spare_scratch) == 1  # three connections, one buffer
            for _ in range(3):
                results = await asyncio.gather(*(storage.get(key) for key in objects))
                assert [bytes(r.data) for r in results] == list(objects.values())
            assert 1 <= len(pool.spare_scratch) <= len(objects)
            assert len({id(buffer) for buffer in pool.spare_scratch}) == len(pool.spare_scratch)
    finally:
        await fake.stop()


def fake_idle(storage: S3Storage) -> int:
    return len(fast_pool(storage)._idle)


async def test_new_connections_take_turns_over_the_names_addresses(
    aws_isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name with several addresses (as S3's has): the cached lookup is used in rotation,
    one connection per address in turn, and an address of another family only as a
    fallback."""
    first, second = FakeS3({"obj": DATA}), FakeS3({"obj": DATA})
    ports = [int((await fake.start()).rsplit(":", 1)[1]) for fake in (first, second)]
    lookups: list[str] = []

    async def getaddrinfo(host: str, port: int, **kwargs: Any) -> list[tuple[Any, ...]]:
        lookups.append(host)
        stream, tcp = socket.SOCK_STREAM, socket.IPPROTO_TCP
        return [
            (socket.AF_INET, stream, tcp, "", ("127.0.0.1", ports[0])),
            (socket.AF_INET6, stream, tcp, "", ("::1", 1, 0, 0)),  # never reached
            (socket.AF_INET, stream, tcp, "", ("127.0.0.1", ports[1])),
        ]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    try:
        async with make("http://s3.several-addresses.test:9000") as storage:
            results = await asyncio.gather(*(storage.get("obj") for _ in range(6)))
            assert all(result.data == DATA for result in results)
            assert fast_pool(storage).connections_made == 6
        assert (first.connections, second.connections) == (3, 3)
        assert lookups == ["s3.several-addresses.test"]  # looked up once, then cached
    finally:
        await first.stop()
        await second.stop()


async def test_a_stale_keep_alive_connection_is_replaced_without_a_retry(
    server: FakeS3,
) -> None:
    async def hang_up(fake: FakeS3, writer: asyncio.StreamWriter, request: Request) -> bool:
        return False  # read the request, answer nothing, close

    async with make(server.url, settings=StorageSettings(retries=ONE_TRY)) as storage:
        assert (await storage.get("obj")).data == DATA
        server.script(lambda r: r.connection == 1, hang_up)
        assert (await storage.get("obj")).data == DATA  # resent on a new connection
        assert [r.connection for r in server.requests] == [1, 1, 2]
        # A new connection that closes without answering is a failure for the shared retry.
        server.script(lambda r: True, hang_up)
        await storage.aclose()
        with pytest.raises(RetriesExhaustedError) as raised:
            await storage.get("obj")
        assert isinstance(raised.value.__cause__, ConnectionLostError)


async def test_a_request_that_must_not_be_resent_fails_on_a_stale_connection(
    server: FakeS3,
) -> None:
    """A conditional write says ``resend_if_stale=False``: the storage layer retries it,
    knowing that a lost answer may hide its own write. Everything else is resent."""

    async def hang_up(fake: FakeS3, writer: asyncio.StreamWriter, request: Request) -> bool:
        return False

    config = TransportConfig(origin=server.url)
    transport = get_transport(config)
    host = server.url.split("//", 1)[1]

    def get(*, resend: bool) -> Awaitable[Any]:
        request = HttpRequest("GET", f"/{BUCKET}/obj", {"host": host}, resend_if_stale=resend)
        return transport.request(request, what="GET obj")

    try:
        assert (await get(resend=False)).status == 200
        server.script(lambda r: r.connection == 1, hang_up)
        with pytest.raises(ConnectionLostError, match="before responding"):
            await get(resend=False)
        assert [r.connection for r in server.requests] == [1, 1]
        assert (await get(resend=True)).status == 200  # a new connection: nothing stale
        server.script(lambda r: r.connection == 2, hang_up)
        assert (await get(resend=True)).status == 200  # stale, resent on connection 3
        assert [r.connection for r in server.requests] == [1, 1, 2, 2, 3]
    finally:
        await aclose_transport(config)


async def test_the_pool_is_closed_by_aclose_and_rebuilt_per_loop(server: FakeS3) -> None:
    storage = make(server.url)
    assert (await storage.get("obj")).data == DATA
    pool = fast_pool(storage)
    assert server.connections == 1
    await storage.aclose()
    assert pool.closed
    for _ in range(100):
        if server.closed_connections == 1:
            break
        await asyncio.sleep(0.01)
    assert server.closed_connections == 1  # the server saw the connection close
    assert (await storage.get("obj")).data == DATA
    assert fast_pool(storage) is not pool
    assert server.connections == 2

    other: list[LeanTransport] = []

    def in_another_loop() -> None:
        async def work() -> None:
            assert (await storage.get("obj")).data == DATA
            other.append(fast_pool(storage))  # not closed: asyncio.run's shutdown closes it

        asyncio.run(work())

    thread = threading.Thread(target=in_another_loop)
    thread.start()
    await asyncio.to_thread(thread.join)
    assert other[0] is not fast_pool(storage)
    assert other[0].closed  # closed when that loop shut down
    await storage.aclose()


# --- bodies ----------------------------------------------------------------------------------


async def test_a_ranged_body_lands_in_the_callers_buffer(
    server: FakeS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = bytearray(b"\xee" * 250_000)
    handed_out: list[object] = []
    original = _lean._Connection.get_buffer

    def get_buffer(self: Any, sizehint: int) -> memoryview:
        buffer = original(self, sizehint)
        handed_out.append(buffer.obj)
        return buffer

    monkeypatch.setattr(_lean._Connection, "get_buffer", get_buffer)
    async with make(server.url) as storage:
        view = memoryview(mine)
        version, written, total = await storage._read_into("big", 1_000, view[100:200_100])
        view.release()
    assert written == 200_000
    assert total == len(BIG)
    assert version.etag == f'"etag-{len(BIG)}"'
    assert mine[100:200_100] == BIG[1_000:201_000]
    assert mine[:100] == b"\xee" * 100
    assert mine[200_100:] == b"\xee" * 49_900
    assert any(obj is mine for obj in handed_out)  # recv_into wrote into our bytearray


async def test_split_reads_and_whole_objects_larger_than_the_scratch_buffer(
    server: FakeS3,
) -> None:
    async with make(server.url, settings=split(40_000)) as storage:
        assert (await storage.get("big")).data == BIG
        part = await storage.get("big", RangeByteRequest(5, 299_990))
        assert part.data == BIG[5:299_990]
        small = await storage.get("obj")
        assert isinstance(small.data, bytes)
    assert len([r for r in server.requests if r.range is not None]) == 8


async def test_a_body_cut_short_is_read_again(server: FakeS3) -> None:
    async def cut(fake: FakeS3, writer: asyncio.StreamWriter, request: Request) -> bool:
        data = fake.objects[request.key]
        start, end = request.range or (0, len(data))
        body = data[start:end]
        response = http_response(206 if request.range else 200, body)
        writer.write(response[: len(response) - len(body) // 2])
        await writer.drain()
        return False

    async with make(server.url, settings=split(100_000)) as storage:
        server.script(lambda r: r.range is None, cut)
        assert (await storage.get("big")).data == BIG
        server.script(range_from(100_000), cut)
        assert (await storage.get("big", RangeByteRequest(0, 300_000))).data == BIG
    assert len(server.of("big")) == 2 + 4  # each cut request was read again
    assert len([r for r in server.requests if r.range == (100_000, 200_000)]) == 2


async def test_a_range_answered_with_more_bytes_is_retried_then_an_error(
    server: FakeS3,
) -> None:
    async def too_long(fake: FakeS3, writer: asyncio.StreamWriter, request: Request) -> bool:
        headers = {"Content-Range": f"bytes 0-149999/{len(BIG)}"}
        writer.write(http_response(206, BIG[:150_000], headers))
        await writer.drain()
        return True

    async with make(server.url, settings=split(100_000)) as storage:
        server.script(range_from(0), too_long, times=10)
        with pytest.raises(RetriesExhaustedError) as raised:
            await storage.get("big", RangeByteRequest(0, 300_000))
        cause = raised.value.__cause__
        assert isinstance(cause, ResponseIntegrityError)
        assert "bytes=0-99999" in str(cause)  # what was asked for
        assert "bytes 0-149999/300000" in str(cause)  # and what arrived
    assert len([r for r in server.requests if r.range == (0, 100_000)]) == RETRIES.max_tries


async def test_a_short_middle_part_is_read_again_never_returned_short(server: FakeS3) -> None:
    async def short(fake: FakeS3, writer: asyncio.StreamWriter, request: Request) -> bool:
        # A cache that cut the part: a 206 for less than asked, while the object goes on.
        headers = {"ETag": f'"etag-{len(BIG)}"', "Content-Range": f"bytes 100000-149999/{len(BIG)}"}
        writer.write(http_response(206, BIG[100_000:150_000], headers))
        await writer.drain()
        return True

    async with make(server.url, settings=split(100_000)) as storage:
        server.script(range_from(100_000), short)
        result = await storage.get("big", RangeByteRequest(0, 300_000))
        assert bytes(result.data) == BIG[:300_000]  # the short part was read again
        server.script(range_from(100_000), short, times=10)
        with pytest.raises(RetriesExhaustedError) as raised:
            await storage.get("big", RangeByteRequest(0, 300_000))
        assert isinstance(raised.value.__cause__, ResponseIntegrityError)


async def test_a_server_that_ignores_range_still_gives_the_range(server: FakeS3) -> None:
    async def whole(fake: FakeS3, writer: asyncio.StreamWriter, request: Request) -> bool:
        writer.write(http_response(200, fake.objects[request.key], {"ETag": '"whole"'}))
        await writer.drain()
        return True

    async with make(server.url) as storage:
        server.script(lambda r: "range" in r.headers, whole, times=3)
        assert (await storage.get("big", RangeByteRequest(10, 20))).data == BIG[10:20]
        assert (await storage.get("big", SuffixByteRequest(7))).data == BIG[-7:]
        assert (await storage.get("big", OffsetByteRequest(len(BIG) - 3))).data == BIG[-3:]
    async with make(server.url, settings=split(100_000)) as storage:  # parts: into the buffer
        server.script(lambda r: "range" in r.headers, whole, times=3)
        assert (await storage.get("big", RangeByteRequest(0, 300_000))).data == BIG[:300_000]


async def test_chunked_and_close_delimited_bodies(server: FakeS3) -> None:
    def chunked(status: int, body: bytes, content_range: str = "") -> bytes:
        pieces = [body[i : i + 5000] for i in range(0, len(body), 5000)]
        encoded = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces)
        extra = f"Content-Range: {content_range}\r\n" if content_range else ""
        head = f'HTTP/1.1 {status} X\r\nTransfer-Encoding: chunked\r\nETag: "c"\r\n{extra}\r\n'
        return head.encode() + encoded + b"0\r\nx-trailer: 1\r\n\r\n"

    async def chunked_ok(fake: FakeS3, writer: asyncio.StreamWriter, request: Request) -> bool:
        start, end = request.range or (0, len(DATA))
        end = min(end, len(DATA))
        content_range = f"bytes {start}-{end - 1}/{len(DATA)}" if request.range else ""
        writer.write(chunked(206 if request.range else 200, DATA[start:end], content_range))
        await writer.drain()
        return True

    async def chunked_error(fake: FakeS3, writer: asyncio.StreamWriter, request: Request) -> bool:
        code = "SlowDown" if request.key == "obj" else "NoSuchKey"
        writer.write(chunked(503 if code == "SlowDown" else 404, error_xml(code)))
        await writer.drain()
        return True

    async def http10(fake: FakeS3, writer: asyncio.StreamWriter, request: Request) -> bool:
        writer.write(b'HTTP/1.0 200 OK\r\nETag: "h"\r\n\r\n' + DATA)
        await writer.drain()
        return False

    async def interim(fake: FakeS3, writer: asyncio.StreamWriter, request: Request) -> bool:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return await fake.respond(writer, request)

    async with make(server.url, settings=split(6000)) as storage:
        server.script(lambda r: True, chunked_ok, times=4)
        assert (await storage.get("obj")).data == DATA
        assert (await storage.get("obj", RangeByteRequest(10, 16_000))).data == DATA[10:16_000]
        assert len(server.requests) == 4  # 1 + 3 parts, each into its part of the buffer
        server.script(lambda r: r.key == "obj", chunked_error)
        server.script(lambda r: r.key == "missing", chunked_error)
        assert (await storage.get("obj")).data == DATA  # 503 SlowDown: retried
        with pytest.raises(ObjectNotFoundError):
            await storage.get("missing")
        assert len(server.requests) == 7
        server.script(lambda r: True, http10)
        result = await storage.get("obj")
        assert result.data == DATA
        assert result.version.etag == '"h"'
        server.script(lambda r: True, interim)
        assert (await storage.get("obj")).data == DATA
        assert fast_pool(storage).connections_made == 3
    http10_request, after = server.requests[-2:]
    assert after.connection != http10_request.connection  # HTTP/1.0 without keep-alive
    assert server.connections == 3  # every other answer left its connection usable


async def test_conditional_get_and_a_malformed_response(server: FakeS3) -> None:
    async def garbage(fake: FakeS3, writer: asyncio.StreamWriter, request: Request) -> bool:
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        return False

    async with make(server.url) as storage:
        first = await storage.get("obj")
        assert await storage.get_if_changed("obj", first.version) is None  # 304
        assert server.requests[-1].headers["if-none-match"] == first.version.etag
        assert server.connections == 1  # a 304 leaves the connection usable
        server.script(lambda r: True, garbage)
        assert (await storage.get("obj")).data == DATA  # a broken response is retried
    assert server.connections == 2


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000,
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
    ],
    ids=["status", "length", "two-lengths", "gzip", "chunk-size", "folded", "huge-head", "cut"],
)
async def test_malformed_responses_are_lost_connections(server: FakeS3, raw: bytes) -> None:
    async def send_raw(fake: FakeS3, writer: asyncio.StreamWriter, request: Request) -> bool:
        writer.write(raw)
        await writer.drain()
        return False

    server.script(lambda r: True, send_raw)
    async with make(server.url, settings=StorageSettings(retries=ONE_TRY)) as storage:
        with pytest.raises(RetriesExhaustedError) as raised:
            await storage.get("obj")
    assert isinstance(raised.value.__cause__, ConnectionLostError)


# --- timeouts ----------------------------------------------------------------------------------


async def test_a_stalled_body_times_out_and_is_read_again(server: FakeS3) -> None:
    async def stall(fake: FakeS3, writer: asyncio.StreamWriter, request: Request) -> bool:
        data = fake.objects[request.key]
        writer.write(http_response(200, data)[:5000])
        await writer.drain()
        await asyncio.sleep(30)  # cancelled when the client aborts, or by stop()
        return False

    stalled = make(server.url, network_stream_timeout_seconds=1)
    once = StorageSettings(retries=ONE_TRY, timeouts=StorageTimeoutSettings(read_timeout_ms=100))
    async with stalled, stalled.with_settings(once) as impatient:
        server.script(lambda r: True, stall)
        assert (await stalled.get("big")).data == BIG
        assert len(server.of("big")) == 2
        server.script(lambda r: True, stall)
        with pytest.raises(RetriesExhaustedError) as raised:
            await impatient.get("big")
        assert isinstance(raised.value.__cause__, StorageTimeoutError)


async def test_an_attempt_timeout_aborts_the_connection_mid_body(server: FakeS3) -> None:
    async def slow(fake: FakeS3, writer: asyncio.StreamWriter, request: Request) -> bool:
        start, end = request.range or (0, 0)
        response = http_response(206, fake.objects[request.key][start:end])
        for offset in range(0, len(response), 20_000):  # a byte every 50 ms: never stalled
            writer.write(response[offset : offset + 20_000])
            await writer.drain()
            await asyncio.sleep(0.05)
        return True

    settings = StorageSettings(
        retries=RETRIES,
        timeouts=StorageTimeoutSettings(operation_attempt_timeout_ms=150),
        concurrency=StorageConcurrencySettings(
            ideal_concurrent_request_size=150_000, max_concurrent_requests_for_object=2
        ),
    )
    async with make(server.url, settings=settings) as storage:
        server.script(range_from(0), slow)
        assert (await storage.get("big", RangeByteRequest(0, 300_000))).data == BIG
        assert len(fast_pool(storage)._all) <= 2  # the aborted connection is gone
    assert len([r for r in server.requests if r.range == (0, 150_000)]) == 2


# --- TLS and proxies ---------------------------------------------------------------------------


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_verifies_certificates_and_reads_in_place(
    aws_isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert_path, key_path = self_signed(aws_isolated)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    fake = FakeS3({"obj": DATA, "big": BIG})
    url = await fake.start(ssl_context=context)
    try:
        async with make(url) as untrusted:  # not signed by a CA we trust
            with pytest.raises(TLSVerificationError, match="did not verify"):
                await untrusted.get("obj")  # raised at once: not retried
        monkeypatch.setenv("AWS_CA_BUNDLE", str(cert_path))
        async with make(url, settings=split(100_000)) as trusted:
            assert (await trusted.get("obj")).data == DATA
            assert (await trusted.get("big", RangeByteRequest(0, 300_000))).data == BIG
            assert (await trusted.get("obj")).data == DATA
            assert fast_pool(trusted).connections_made == 3
        assert len(fake.requests) == 5
        assert fake.connections == 3  # two more for the 3 parts, then reused over TLS
    finally:
        await fake.stop()


async def test_behind_a_proxy_the_lean_path_uses_aiohttp(
    server: FakeS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", server.url)
    storage = make("http://s3.example.invalid:9000")
    async with storage:
        assert (await storage.get("obj")).data == DATA
        clients = storage._loops.peek()
        assert clients is not None
        assert clients.transport is not None
        assert isinstance(peek_transport(clients.transport), AiohttpTransport)
        assert clients.proxy == server.url
    assert server.requests[-1].target == f"http://s3.example.invalid:9000/{BUCKET}/obj"


def test_request_heads_refuse_line_breaks() -> None:
    head = request_head(HttpRequest("GET", "/b/k", {"x-amz-meta": "v", "host": "h"}))
    assert head == b"GET /b/k HTTP/1.1\r\nhost: h\r\nx-amz-meta: v\r\n\r\n"
    put = request_head(HttpRequest("PUT", "/b/k", {"host": "h"}, b"abc"))
    assert put == b"PUT /b/k HTTP/1.1\r\nhost: h\r\ncontent-length: 3\r\n\r\n"
    with pytest.raises(ValueError, match="line break"):
        request_head(HttpRequest("GET", "/b/k", {"x-amz-security-token": "a\r\nInjected: 1"}))


@pytest.mark.parametrize("status", [301, 307, 308])
async def test_a_redirect_is_never_followed_and_names_the_real_region(
    server: FakeS3, status: int
) -> None:
    async def redirect(fake: FakeS3, writer: asyncio.StreamWriter, request: Request) -> bool:
        headers = {
            "Location": "http://evil.invalid/steal",
            "x-amz-bucket-region": "eu-west-1",
        }
        writer.write(http_response(status, b"", headers))
        await writer.drain()
        return True

    server.script(lambda r: True, redirect, times=5)
    async with make(server.url) as storage:
        with pytest.raises(ConfigurationError, match=r"region='eu-west-1'"):
            await storage.get("obj")
    assert len(server.requests) == 1  # not followed, not retried


# --- the connect timeout ---------------------------------------------------------------------


async def test_a_connect_that_never_completes_fails_at_the_connect_timeout(
    aws_isolated: Path,
) -> None:
    """A server that listens but never completes the TCP handshake (its accept queue is
    full, so the kernel drops our SYNs) fails the request at the connect timeout, naming
    the endpoint and the timeout."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers = []
    for _ in range(3):  # fill the accept queue; later connects stay unanswered
        filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(address)
        fillers.append(filler)
    settings = StorageSettings(
        retries=ONE_TRY, timeouts=StorageTimeoutSettings(connect_timeout_ms=300)
    )
    try:
        async with make(f"http://127.0.0.1:{address[1]}", settings=settings) as storage:
            started = time.monotonic()
            with pytest.raises(RetriesExhaustedError) as raised:
                await storage.get("obj")
            assert 0.25 < time.monotonic() - started < 3
            assert isinstance(raised.value.__cause__, StorageTimeoutError)
            assert f"could not connect to 127.0.0.1:{address[1]} within 0.3 s" in str(raised.value)
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
