"""The transport against a scripted hostile server: every case ends, within a deadline, in
either the exact bytes asked for or a typed ``StorageError``, never other bytes.

The server (``Hostile``) is a raw TCP server on 127.0.0.1 in the test's loop; each case
scripts what it sends, byte for byte. Every case runs on both transports: the lean client,
and aiohttp, reached as a forward proxy (the scripted server plays the proxy, which is
where a misbehaving intermediary sits). ``MockTransport`` runs the integrity rules on
scripted responses without sockets, for the property test.
"""

from __future__ import annotations

import asyncio
import ssl
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icechunk_storage import (
    ConnectionLostError,
    OffsetByteRequest,
    RangeByteRequest,
    StorageError,
    StorageTimeoutError,
    SuffixByteRequest,
)
from icechunk_storage._errors import (
    ProtocolError,
    ResponseIntegrityError,
    TLSVerificationError,
    TransientError,
)
from icechunk_storage._ranges import ByteRequest, resolve_range
from icechunk_storage._transport import (
    ERROR_BODY_CAP,
    MockResponse,
    MockTransport,
    Request,
    Transport,
    TransportConfig,
    aclose_transports,
    attempt_deadline,
    bypasses_proxy,
    get_transport,
    proxy_for,
)
from icechunk_storage._transport._aiohttp import AiohttpTransport
from icechunk_storage._transport._lean import LeanTransport

OBJECT = bytes((i * 31 + 7) % 256 for i in range(5000))
DEADLINE = 10.0  # no case may take longer than this (most take milliseconds)

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class Hostile:
    """Accepts connections and runs ``script(reader, writer, request_number)`` for each
    request; counts connections and requests."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.url = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[object]] = set()

    async def start(self, context: ssl.SSLContext | None = None) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=context)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"{'https' if context else 'http'}://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                self.requests.append(head)
                await self.script(reader, writer, len(self.requests))
                if writer.is_closing():
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.transport.abort()
            self._tasks.discard(task)


def response(
    status: int,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    length: bool = True,
) -> bytes:
    lines = [f"HTTP/1.1 {status} X"]
    all_headers = dict(headers or {})
    if length:
        all_headers.setdefault("Content-Length", str(len(body)))
    lines += [f"{name}: {value}" for name, value in all_headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def honest(request: bytes) -> bytes:
    """What a correct server answers to ``request`` for OBJECT."""
    text = request.decode("latin-1").lower()
    if "\r\nrange: bytes=" not in text:
        return response(200, OBJECT, {"ETag": '"v1"'})
    value = text.split("\r\nrange: bytes=", 1)[1].split("\r\n", 1)[0]
    first, _, last = value.partition("-")
    if first == "":
        byte_range: ByteRequest = SuffixByteRequest(int(last))
    elif last == "":
        byte_range = OffsetByteRequest(int(first))
    else:
        byte_range = RangeByteRequest(int(first), int(last) + 1)
    start, end = resolve_range(byte_range, len(OBJECT))
    headers = {"ETag": '"v1"', "Content-Range": f"bytes {start}-{end - 1}/{len(OBJECT)}"}
    return response(206, OBJECT[start:end], headers)


def range_header(byte_range: ByteRequest | None) -> dict[str, str]:
    from icechunk_storage._transport import describe_range

    if byte_range is None:
        return {}
    return {"range": describe_range(byte_range)}


@pytest.fixture(params=["lean", "aiohttp"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Client:
    """A transport to a Hostile server, lean or through it as a proxy."""

    def __init__(self, server: Hostile, kind: str, **config: object) -> None:
        if kind == "lean":
            self.config = TransportConfig(origin=server.url, **config)  # type: ignore[arg-type]
            self.host = server.url.split("://", 1)[1]
        else:  # the hostile server plays the proxy in front of a made-up origin
            self.config = TransportConfig(
                origin="http://origin.invalid:9000",
                proxy=server.url,
                **config,  # type: ignore[arg-type]
            )
            self.host = "origin.invalid:9000"

    @property
    def transport(self) -> Transport:
        return get_transport(self.config)

    async def read(
        self, byte_range: ByteRequest | None = None, into: memoryview | None = None
    ) -> bytes:
        headers = {"host": self.host, **range_header(byte_range)}
        async with asyncio.timeout(DEADLINE):
            answer = await self.transport.read(
                Request("GET", "/obj", headers), byte_range, what="get of 'obj'", into=into
            )
        assert answer.status in (200, 206), answer
        if into is not None:
            return bytes(into[: answer.written])
        return bytes(answer.body)


async def serve(script: Script) -> AsyncIterator[Hostile]:
    server = Hostile(script)
    await server.start()
    try:
        yield server
    finally:
        await aclose_transports()
        await server.stop()


def scripted(*answers: bytes | Script) -> Script:
    """Answer the n-th request with the n-th answer (raw bytes or a script); honestly after."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if n <= len(answers):
            answer = answers[n - 1]
            if isinstance(answer, bytes):
                writer.write(answer)
                await writer.drain()
            else:
                await answer(reader, writer, n)
            return
        server_head = b""  # the request head is not passed on: answer for the whole object
        writer.write(honest(server_head))
        await writer.drain()

    return script


async def run_case(kind: str, script: Script, **config: object) -> tuple[Client, Hostile]:
    server = Hostile(script)
    await server.start()
    return Client(server, kind, **config), server


# --- ranges -------------------------------------------------------------------------------


WRONG_206 = [
    pytest.param(
        RangeByteRequest(10, 20),
        response(206, OBJECT[30:40], {"Content-Range": "bytes 30-39/5000"}),
        id="another-range",
    ),
    pytest.param(
        RangeByteRequest(10, 20),
        response(206, OBJECT[10:30], {"Content-Range": "bytes 10-29/5000"}),
        id="longer-206",
    ),
    pytest.param(
        RangeByteRequest(10, 20),
        response(206, OBJECT[10:15], {"Content-Range": "bytes 10-14/5000"}),
        id="shorter-206-object-goes-on",
    ),
    pytest.param(
        RangeByteRequest(10, 20),
        response(206, OBJECT[10:30], {"Content-Range": "bytes 10-19/5000"}),
        id="length-disagrees-with-content-range",
    ),
    pytest.param(
        None, response(206, OBJECT[:10], {"Content-Range": "bytes 0-9/5000"}), id="206-to-unranged"
    ),
    pytest.param(
        RangeByteRequest(10, 20), response(206, OBJECT[10:20]), id="206-without-content-range"
    ),
    pytest.param(
        RangeByteRequest(10, 20),
        response(206, OBJECT[10:20], {"Content-Range": "bytes 10-19/15"}),
        id="impossible-total",
    ),
    pytest.param(
        SuffixByteRequest(10),
        response(206, OBJECT[:10], {"Content-Range": "bytes 0-9/5000"}),
        id="suffix-answered-with-the-start",
    ),
    pytest.param(
        OffsetByteRequest(4990),
        response(206, OBJECT[4990:], {"Content-Range": "bytes 4990-4999/*"}),
        id="open-range-without-total",
    ),
]


@pytest.mark.parametrize(("byte_range", "answer"), WRONG_206)
async def test_a_wrong_partial_response_is_an_integrity_error(
    kind: str, byte_range: ByteRequest | None, answer: bytes
) -> None:
    client, server = await run_case(kind, scripted(answer))
    try:
        with pytest.raises(ResponseIntegrityError) as raised:
            await client.read(byte_range)
        assert isinstance(raised.value, TransientError)  # retried within the budget
        message = str(raised.value)
        assert "get of 'obj'" in message
        assert "asked for" in message or "whole object" in message
    finally:
        await aclose_transports()
        await server.stop()


@pytest.mark.parametrize(
    "byte_range",
    [
        RangeByteRequest(10, 20),
        RangeByteRequest(4990, 6000),
        OffsetByteRequest(4000),
        SuffixByteRequest(7),
        SuffixByteRequest(9000),
        None,
    ],
)
async def test_honest_and_whole_object_answers_give_the_exact_bytes(
    kind: str, byte_range: ByteRequest | None
) -> None:
    whole = response(200, OBJECT, {"ETag": '"v1"'})  # a server that ignores Range

    async def honest_script(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
    ) -> None:
        writer.write(whole if n == 1 else honest(server.requests[-1]))
        await writer.drain()

    client, server = await run_case(kind, honest_script)
    try:
        start, end = resolve_range(byte_range, len(OBJECT))
        assert await client.read(byte_range) == OBJECT[start:end]  # 200: sliced
        assert await client.read(byte_range) == OBJECT[start:end]  # 206
        buffer = bytearray(end - start + 3)
        assert await client.read(byte_range, memoryview(buffer)) == OBJECT[start:end]
    finally:
        await aclose_transports()
        await server.stop()


async def test_a_huge_whole_object_for_a_small_range_is_not_drained(kind: str) -> None:
    size = 8 * 1024 * 1024
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode()

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(head)
        try:
            for _ in range(size // 65536):
                writer.write(bytes(range(256)) * 256)
                await writer.drain()
        except ConnectionError:
            return

    client, server = await run_case(kind, endless)
    try:
        assert await client.read(RangeByteRequest(300, 310)) == (bytes(range(256)) * 2)[300:310]
    finally:
        await aclose_transports()
        await server.stop()


# --- framing and connections -----------------------------------------------------------------


async def test_bytes_past_the_response_never_answer_the_next_request(kind: str) -> None:
    garbage = response(200, b"X" * len(OBJECT), {"ETag": '"evil"'})

    async def trailing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if n == 1:
            writer.write(response(200, OBJECT, {"ETag": '"v1"'}))
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(garbage)  # a second, unasked-for response on the same connection
            await writer.drain()
        else:
            writer.write(honest(b""))
            await writer.drain()

    client, server = await run_case(kind, trailing)
    try:
        assert await client.read() == OBJECT
        await asyncio.sleep(0.05)  # the garbage has arrived by now
        assert await client.read() == OBJECT
        assert await client.read() == OBJECT
    finally:
        await aclose_transports()
        await server.stop()


async def test_trailing_bytes_in_the_same_packet_close_the_connection() -> None:
    packet = response(200, OBJECT) + b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbad"
    client, server = await run_case("lean", scripted(packet))
    try:
        assert await client.read() == OBJECT
        assert await client.read() == OBJECT
        assert server.connections == 2  # the first connection was not pooled
    finally:
        await aclose_transports()
        await server.stop()


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: 1\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    ],
    ids=[
        "status",
        "not-http",
        "space-in-name",
        "chunk-size",
        "negative-chunk",
        "length-and-chunked",
        "two-lengths",
        "huge-head",
        "switching-protocols",
    ],
)
async def test_malformed_responses_are_protocol_errors(raw: bytes) -> None:
    client, server = await run_case("lean", scripted(raw))
    try:
        with pytest.raises(ProtocolError):
            await client.read()
        assert await client.read() == OBJECT  # the broken connection was dropped
        assert server.connections == 2
    finally:
        await aclose_transports()
        await server.stop()


async def test_malformed_responses_through_the_proxy_are_typed_errors() -> None:
    for raw in (
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    ):
        client, server = await run_case("aiohttp", scripted(raw))
        try:
            with pytest.raises(ConnectionLostError):
                await client.read()
        finally:
            await aclose_transports()
            await server.stop()


async def test_a_bodiless_response_with_connection_close_is_not_reused(kind: str) -> None:
    answers = [
        response(304, b"", {"Connection": "close", "ETag": '"v1"'}, length=False),
        response(200, OBJECT),
    ]

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(answers[min(n, 2) - 1])
        await writer.drain()
        if n == 1:
            writer.close()

    client, server = await run_case(kind, script)
    try:
        headers = {"host": client.host, "if-none-match": '"v1"'}
        answer = await client.transport.read(Request("GET", "/obj", headers), None, what="get")
        assert answer.status == 304
        assert await client.read() == OBJECT  # on a new connection, not the closed one
    finally:
        await aclose_transports()
        await server.stop()


async def test_chunked_bodies_with_trailers_are_exact(kind: str) -> None:
    pieces = [OBJECT[i : i + 700] for i in range(0, len(OBJECT), 700)]
    body = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\nX-T: 1\r\n\r\n"
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    client, server = await run_case(kind, scripted(raw, raw))
    try:
        assert await client.read() == OBJECT
        assert await client.read(RangeByteRequest(100, 200)) == OBJECT[100:200]
    finally:
        await aclose_transports()
        await server.stop()


# --- time ------------------------------------------------------------------------------------


async def test_a_drip_of_a_few_bytes_a_second_is_a_stall(kind: str) -> None:
    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(OBJECT)}\r\n\r\n".encode())
        for byte in OBJECT:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.3)  # ~3 bytes a second: "alive", but a stall

    client, server = await run_case(kind, drip, stream_timeout=1.0)
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(StorageTimeoutError, match="stall"):
            await client.read()
        assert asyncio.get_running_loop().time() - started < 3.5
    finally:
        await aclose_transports()
        await server.stop()


async def test_the_deadline_holds_with_the_stall_check_off(kind: str) -> None:
    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(OBJECT)}\r\n\r\n".encode())
        for byte in OBJECT:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.05)

    client, server = await run_case(kind, drip, stream_timeout=None, attempt_timeout=0.5)
    try:
        with pytest.raises(StorageTimeoutError):
            await client.read()
    finally:
        await aclose_transports()
        await server.stop()


def test_every_attempt_has_a_deadline_that_scales_with_its_size() -> None:
    assert attempt_deadline(0) == 60.0
    assert attempt_deadline(256 * 1024 * 60) == 120.0
    config = TransportConfig(origin="http://127.0.0.1:1", stream_timeout=None)
    assert config.deadline(0) == 60.0  # no stall check, still a deadline
    assert TransportConfig(origin="http://h", attempt_timeout=2.0).deadline(10**9) == 2.0


async def test_endless_interim_responses_are_refused() -> None:
    async def continues(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        for _ in range(1000):
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.001)

    client, server = await run_case("lean", continues)
    try:
        with pytest.raises(ProtocolError, match="interim"):
            await client.read()
    finally:
        await aclose_transports()
        await server.stop()


async def test_endless_trailers_are_refused(kind: str) -> None:
    async def trailers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n")
        for index in range(100_000):
            writer.write(f"X-Trailer-{index}: {'v' * 50}\r\n".encode())
            await writer.drain()

    client, server = await run_case(kind, trailers, stream_timeout=2.0)
    try:
        with pytest.raises(StorageError):
            await client.read()
    finally:
        await aclose_transports()
        await server.stop()


# --- allocations -----------------------------------------------------------------------------


async def test_an_error_claiming_a_huge_body_allocates_little(kind: str) -> None:
    head = b"HTTP/1.1 503 Slow Down\r\nContent-Length: 536870912\r\n\r\n"

    async def huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(head + b"<Error><Code>SlowDown</Code></Error>" + b" " * 200_000)
        await writer.drain()
        await asyncio.sleep(5)

    client, server = await run_case(kind, huge)
    try:
        tracemalloc.start()
        headers = {"host": client.host}
        async with asyncio.timeout(DEADLINE):
            answer = await client.transport.read(Request("GET", "/obj", headers), None, what="get")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert answer.status == 503
        assert bytes(answer.body).startswith(b"<Error><Code>SlowDown")
        assert len(answer.body) == ERROR_BODY_CAP
        assert peak < 8 * 1024 * 1024  # not 512 MiB
    finally:
        await aclose_transports()
        await server.stop()


async def test_a_whole_object_response_is_sized_lazily() -> None:
    """A 200 announcing 512 MiB costs no memory until bytes come (mmap, lazily zeroed)."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 536870912\r\n\r\n"
    client, server = await run_case("lean", scripted(head + b"abc"), attempt_timeout=0.5)
    try:
        tracemalloc.start()
        with pytest.raises((StorageTimeoutError, ConnectionLostError)):
            await client.read()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < 8 * 1024 * 1024
    finally:
        await aclose_transports()
        await server.stop()


# --- TLS ---------------------------------------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    import trustme

    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    certificate.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    certificate.private_key_pem.write_to_path(str(key_path))
    ca_path = directory / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_path))
    return cert_path, ca_path


async def test_an_untrusted_certificate_is_permanent_and_says_so(tmp_path: Path) -> None:
    cert_path, ca_path = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path)
    server = Hostile(scripted())
    url = await server.start(context)
    try:
        transport = get_transport(TransportConfig(origin=url))
        with pytest.raises(TLSVerificationError, match="did not verify") as raised:
            await transport.read(Request("GET", "/obj", {"host": "x"}), None, what="get")
        assert not isinstance(raised.value, TransientError)
        trusted = get_transport(TransportConfig(origin=url, ca_bundle=str(ca_path)))
        answer = await trusted.read(Request("GET", "/obj", {"host": "x"}), None, what="get")
        assert bytes(answer.body) == OBJECT
    finally:
        await aclose_transports()
        await server.stop()


async def test_a_reset_during_the_handshake_is_transient() -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(10)  # the ClientHello has started
        writer.transport.abort()

    server = await asyncio.start_server(reset, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        transport = get_transport(TransportConfig(origin=f"https://127.0.0.1:{port}"))
        with pytest.raises(ConnectionLostError):
            await transport.read(Request("GET", "/obj", {"host": "x"}), None, what="get")
    finally:
        await aclose_transports()
        server.close()


# --- proxies -----------------------------------------------------------------------------------


def test_no_proxy_matches_ipv6_literals_domains_and_cidr(monkeypatch: pytest.MonkeyPatch) -> None:
    assert bypasses_proxy("::1", 9000, "[::1]")
    assert bypasses_proxy("[::1]", 9000, "localhost,[::1]:9000")
    assert not bypasses_proxy("::1", 9001, "[::1]:9000")
    assert bypasses_proxy("fd00::5", None, "fd00::/8")
    assert bypasses_proxy("10.1.2.3", None, "10.0.0.0/8")
    assert bypasses_proxy("s3.example.com", None, ".example.com")
    assert bypasses_proxy("example.com", None, "example.com")
    assert not bypasses_proxy("badexample.com", None, "example.com")
    assert bypasses_proxy("anything", None, "*")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy:3128")
    monkeypatch.setenv("NO_PROXY", "[::1]")
    assert proxy_for("http://[::1]:9000") is None
    assert proxy_for("http://127.0.0.1:9000") == "http://proxy:3128"
    monkeypatch.delenv("HTTP_PROXY")
    assert proxy_for("http://127.0.0.1:9000") is None


async def test_the_transport_kind_follows_the_config(kind: str) -> None:
    client, server = await run_case(kind, scripted())
    try:
        expected = LeanTransport if kind == "lean" else AiohttpTransport
        assert isinstance(client.transport, expected)
        assert client.transport is client.transport  # one per config and loop
    finally:
        await aclose_transports()
        await server.stop()


# --- the property: exact bytes or a StorageError -----------------------------------------------


def _valid(byte_range: ByteRequest | None) -> MockResponse:
    start, end = resolve_range(byte_range, len(OBJECT))
    if byte_range is None:
        return MockResponse(200, {"ETag": '"v1"'}, OBJECT)
    return MockResponse(
        206,
        {"ETag": '"v1"', "Content-Range": f"bytes {start}-{end - 1}/{len(OBJECT)}"},
        OBJECT[start:end],
    )


RANGES = st.one_of(
    st.none(),
    st.builds(
        lambda a, n: RangeByteRequest(a, a + n),
        st.integers(0, len(OBJECT) - 1),
        st.integers(1, 3000),
    ),
    st.builds(OffsetByteRequest, st.integers(0, len(OBJECT) - 1)),
    st.builds(SuffixByteRequest, st.integers(1, 6000)),
)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[ByteRequest | None, MockResponse]:
    byte_range = draw(RANGES)
    answer = _valid(byte_range)
    mutation = draw(
        st.sampled_from(
            [
                "none",
                "status",
                "content-range",
                "drop-range",
                "body-cut",
                "body-extra",
                "length",
                "chunked",
                "total",
                "whole",
            ]
        )
    )
    delta = draw(st.integers(-50, 50).filter(lambda d: d != 0))
    if mutation == "status":
        answer.status = 206 if answer.status == 200 else 200
    elif mutation == "content-range" and "content-range" in answer.headers:
        first, rest = answer.headers["content-range"][6:].split("-")
        last, total = rest.split("/")
        which = draw(st.sampled_from(["first", "last"]))
        if which == "first":
            first = str(max(0, int(first) + delta))
        else:
            last = str(max(0, int(last) + delta))
        answer.headers["content-range"] = f"bytes {first}-{last}/{total}"
    elif mutation == "drop-range":
        answer.headers.pop("content-range", None)
    elif mutation == "body-cut" and answer.body:
        answer.body = answer.body[: max(0, len(answer.body) - abs(delta))]
        answer.length = len(answer.body)
    elif mutation == "body-extra":
        answer.body = answer.body + b"Z" * abs(delta)
        answer.length = len(answer.body)
    elif mutation == "length" and answer.length is not None:
        answer.length = max(0, answer.length + delta)
    elif mutation == "chunked":
        answer.length = None
    elif mutation == "total" and "content-range" in answer.headers:
        span, _ = answer.headers["content-range"].split("/")
        answer.headers["content-range"] = f"{span}/{max(1, len(OBJECT) + delta)}"
    elif mutation == "whole":
        answer = MockResponse(200, {}, OBJECT[: len(OBJECT) + min(delta, 0)])
    return byte_range, answer


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=mutated(), use_buffer=st.booleans())
def test_any_mutated_response_gives_the_exact_bytes_or_a_storage_error(
    case: tuple[ByteRequest | None, MockResponse], use_buffer: bool
) -> None:
    byte_range, answer = case
    transport = MockTransport(lambda request: answer)
    start, end = resolve_range(byte_range, len(OBJECT))
    buffer = bytearray(end - start) if use_buffer else None

    async def read() -> bytes | None:
        try:
            result = await transport.read(
                Request("GET", "/obj", {"host": "h"}),
                byte_range,
                what="get",
                into=memoryview(buffer) if buffer is not None else None,
            )
        except StorageError:
            return None
        if result.status not in (200, 206):
            return None
        if buffer is not None:
            return bytes(buffer[: result.written])
        return bytes(result.body)

    outcome = asyncio.run(read())
    if outcome is None:
        return
    if answer.status == 200:
        # A well-framed 200 is the whole object by definition, even a shorter one: the
        # outcome must be exactly the range of what was sent, cut as the contract says.
        whole = answer.body if answer.length is None else answer.body[: answer.length]
        ws, we = resolve_range(byte_range, len(whole))
        assert outcome == whole[ws:we]
        return
    assert outcome == OBJECT[start:end]  # a 206 is only ever the exact bytes asked for


async def test_the_lean_transport_agrees_with_the_mock_on_mutated_responses() -> None:
    """The same mutations, over a real socket, for a fixed sample of cases."""
    cases: list[tuple[ByteRequest | None, bytes, bool]] = [
        (
            RangeByteRequest(10, 20),
            response(206, OBJECT[10:20], {"Content-Range": "bytes 10-19/5000"}),
            True,
        ),
        (
            RangeByteRequest(10, 20),
            response(206, OBJECT[10:21], {"Content-Range": "bytes 10-20/5000"}),
            False,
        ),
        (RangeByteRequest(10, 20), response(200, OBJECT), True),
        (
            SuffixByteRequest(5),
            response(206, OBJECT[-5:], {"Content-Range": "bytes 4995-4999/5000"}),
            True,
        ),
        (
            SuffixByteRequest(5),
            response(206, OBJECT[-6:], {"Content-Range": "bytes 4994-4999/5000"}),
            False,
        ),
        (None, response(206, OBJECT, {"Content-Range": "bytes 0-4999/5000"}), False),
    ]
    for byte_range, raw, good in cases:
        client, server = await run_case("lean", scripted(raw))
        try:
            if good:
                start, end = resolve_range(byte_range, len(OBJECT))
                assert await client.read(byte_range) == OBJECT[start:end]
            else:
                with pytest.raises(StorageError):
                    await client.read(byte_range)
        finally:
            await aclose_transports()
            await server.stop()


async def test_a_slow_steady_upload_is_not_a_stall() -> None:
    """While a large body goes out, the bytes the peer takes count as progress: an upload
    slower than the stall window is alive as long as it moves, even while the kernel's send
    buffer (megabytes on loopback) drains after the last byte was handed over."""
    size = 8 * 1024 * 1024

    async def slow_reader(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
    ) -> None:
        head = Hostile_last_head[0]
        length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
        got = 0
        while got < length:
            chunk = min(512 * 1024, length - got)
            got += len(await reader.readexactly(chunk))
            await asyncio.sleep(0.2)  # about 2.5 MiB/s: the upload takes ~3 s
        writer.write(response(200, b"", {"ETag": '"up"'}))
        await writer.drain()

    Hostile_last_head: list[bytes] = [b""]

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        Hostile_last_head[0] = server.requests[-1]
        await slow_reader(reader, writer, n)

    client, server = await run_case("lean", script, stream_timeout=1.0)
    try:
        body = memoryview(bytearray(size))
        async with asyncio.timeout(DEADLINE):
            answer = await client.transport.request(
                Request("PUT", "/obj", {"host": client.host}, body), what="put"
            )
        assert answer.status == 200
    finally:
        await aclose_transports()
        await server.stop()


async def test_an_upload_the_peer_stops_taking_is_a_stall() -> None:
    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await asyncio.sleep(30)  # reads nothing: the client's send buffer fills and stays

    client, server = await run_case("lean", deaf, stream_timeout=1.0)
    try:
        body = memoryview(bytearray(32 * 1024 * 1024))
        started = asyncio.get_running_loop().time()
        with pytest.raises(StorageTimeoutError, match="stall"):
            await client.transport.request(
                Request("PUT", "/obj", {"host": client.host}, body), what="put"
            )
        assert asyncio.get_running_loop().time() - started < 4
    finally:
        await aclose_transports()
        await server.stop()


async def test_a_dropped_conditional_write_is_sent_once(kind: str) -> None:
    """The server takes a conditional PUT and drops the connection without an answer. It may
    have written it: a second send would fail its own condition, and only our retry loop
    knows to look for its own write then. So neither transport sends it again by itself
    (aiohttp would: it resends an idempotent request once when the connection drops)."""

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readexactly(5)  # the body
        writer.transport.abort()

    client, server = await run_case(kind, drop)
    try:
        headers = {"host": client.host, "if-none-match": "*"}
        request = Request("PUT", "/obj", headers, b"12345", resend_if_stale=False)
        with pytest.raises(ConnectionLostError):
            async with asyncio.timeout(DEADLINE):
                await client.transport.request(request, what="put of 'obj'")
        assert len(server.requests) == 1
    finally:
        await aclose_transports()
        await server.stop()
