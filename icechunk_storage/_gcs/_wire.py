"""Stand-in for the shared transport (``icechunk_storage._transport``, issue #10).

The GCS adapter is written against the transport's interface (``TransportConfig``,
``Request``, ``Response``, ``get_transport(config).request/read``); until that lands on main,
this module provides the same names over one aiohttp session per (config, loop, process).
When the transport merges, ``_storage.py`` imports from ``.._transport`` instead and this
module is deleted: nothing else depends on it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import attrs

from .._errors import ConnectionLostError, StorageTimeoutError, TransientError
from .._loops import LoopLocal
from .._ranges import ByteRequest, resolve_range

if TYPE_CHECKING:
    import aiohttp

__all__ = ["Request", "Response", "TransportConfig", "get_transport"]

_ERROR_BODY_CAP = 64 * 1024
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@attrs.frozen
class TransportConfig:
    origin: str
    connect_timeout: float = 10.0
    stream_timeout: float = 60.0
    ca_bundle: str | None = None
    proxy: str | None = None


class Request:
    __slots__ = ("body", "headers", "method", "target")

    def __init__(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes | bytearray | memoryview | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body


class Response:
    __slots__ = ("body", "headers", "status", "total", "written")

    def __init__(
        self,
        status: int,
        headers: dict[str, str],
        body: bytes | bytearray | memoryview,
        written: int = -1,
        total: int | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.written = written
        self.total = total


class _AiohttpTransport:
    def __init__(self, config: TransportConfig) -> None:
        self._config = config
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    sock_connect=self._config.connect_timeout,
                    sock_read=self._config.stream_timeout,
                ),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Content-Type"),
            )
        return self._session

    async def _send(
        self, request: Request, what: str, max_body: int
    ) -> tuple[int, dict[str, str], bytes]:
        import aiohttp

        headers = {k: v for k, v in request.headers.items() if k != "host"}
        headers.setdefault("accept-encoding", "identity")
        body: Any = bytes(request.body) if isinstance(request.body, memoryview) else request.body
        try:
            async with self._get_session().request(
                request.method,
                self._config.origin + request.target,
                headers=headers,
                data=body if body is not None else b"",
                proxy=self._config.proxy,
                allow_redirects=False,
            ) as response:
                cap = max_body if response.status < 300 else _ERROR_BODY_CAP
                chunks: list[bytes] = []
                received = 0
                while chunk := await response.content.read(1 << 20):
                    received += len(chunk)
                    if received > cap:
                        raise ConnectionLostError(f"{what}: the response body exceeds {cap} bytes.")
                    chunks.append(chunk)
                data = b"".join(chunks)
                length = response.headers.get("Content-Length")
                if length is not None and length.isdigit() and int(length) != len(data):
                    raise ConnectionLostError(f"{what}: the response body was cut short.")
                merged: dict[str, str] = {}
                for raw_name, value in response.headers.items():
                    name = raw_name.lower()
                    merged[name] = f"{merged[name]}, {value}" if name in merged else value
                return response.status, merged, data
        except TimeoutError as exc:
            raise StorageTimeoutError(f"{what} timed out.") from exc
        except aiohttp.ClientError as exc:
            raise ConnectionLostError(f"{what} failed: {type(exc).__name__}: {exc}") from exc

    async def request(self, request: Request, *, what: str, max_body: int = 64 * 2**20) -> Response:
        status, headers, body = await self._send(request, what, max_body)
        return Response(status, headers, body)

    async def read(
        self,
        request: Request,
        byte_range: ByteRequest | None,
        *,
        what: str,
        into: memoryview | None = None,
    ) -> Response:
        status, headers, body = await self._send(request, what, 2**62)
        if status not in (200, 206):
            return Response(status, headers, body)
        data: bytes | memoryview = body
        total: int | None
        if status == 206:
            content_range = headers.get("content-range", "")
            match = _CONTENT_RANGE.fullmatch(content_range)
            if match is None and not body:  # an empty object: "bytes */0" or the like
                size_text = content_range.rpartition("/")[2]
                empty_total = int(size_text) if size_text.isdigit() else 0
                return Response(status, headers, b"", 0 if into is not None else -1, empty_total)
            if match is None:
                raise TransientError(f"{what}: 206 without a valid Content-Range.")
            first, last, size_text = match.groups()
            total = None if size_text == "*" else int(size_text)
            if int(last) - int(first) + 1 != len(body):
                raise TransientError(f"{what}: the body does not match its Content-Range.")
            if total is not None and byte_range is not None:
                start, end = resolve_range(byte_range, total)
                if (start, end) != (int(first), int(last) + 1):
                    raise TransientError(f"{what}: the server sent another range than asked.")
        else:
            total = len(body)
            if byte_range is not None:
                start, end = resolve_range(byte_range, total)
                data = memoryview(body)[start:end]
        if into is not None:
            written = min(len(data), len(into))
            into[:written] = memoryview(data)[:written]
            return Response(status, headers, b"", written, total)
        return Response(status, headers, bytes(data), -1, total)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


_pools: dict[TransportConfig, LoopLocal[_AiohttpTransport]] = {}


def get_transport(config: TransportConfig) -> _AiohttpTransport:
    local = _pools.get(config)
    if local is None:
        local = _pools.setdefault(config, LoopLocal(lambda: _AiohttpTransport(config)))
    return local.get()
