"""Stand-in for the shared transport (``icechunk_storage._transport``) until it lands on main.

It has the interface of SPEC-interfaces.md §1 (``TransportConfig``, ``Request``,
``Response``, ``get_transport``) over one aiohttp session per (config, loop, process), so
the Azure adapter is written against that interface and switches to the real transport by
changing one import. Only what the Azure adapter needs is here: ``request`` and ``read``
with the integrity rules (Content-Range checked, a 200 to a ranged GET sliced, short bodies
refused, non-2xx bodies capped).
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from .._errors import ConnectionLostError, StorageTimeoutError, TransientError
from .._loops import LoopLocal
from .._ranges import ByteRequest, resolve_range

__all__ = ["Request", "Response", "Transport", "TransportConfig", "get_transport"]

_ERROR_BODY_CAP = 64 * 1024
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class ResponseIntegrityError(TransientError):
    """The response does not match the request (wrong range, short body)."""


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
        body: bytes | bytearray | memoryview = b"",
        written: int = -1,
        total: int | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.written = written
        self.total = total


class Transport:
    def __init__(self, config: TransportConfig) -> None:
        import aiohttp

        self._config = config
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(
                connect=config.connect_timeout, sock_read=config.stream_timeout
            ),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Content-Type", "Accept-Encoding"),
        )

    async def _send(self, request: Request, what: str, cap: int) -> Response:
        import aiohttp
        import yarl

        url = yarl.URL(self._config.origin + request.target, encoded=True)
        headers = {k: v for k, v in request.headers.items() if k != "host"}
        body: Any = bytes(request.body) if isinstance(request.body, memoryview) else request.body
        if body is None and request.method in ("PUT", "POST"):
            body = b""
        try:
            async with self._session.request(
                request.method, url, headers=headers, data=body, allow_redirects=False
            ) as response:
                limit = cap if 200 <= response.status < 300 else _ERROR_BODY_CAP
                data = await response.content.read(limit + 1) if request.method != "HEAD" else b""
                if len(data) > limit:
                    raise ConnectionLostError(f"{what}: the response body exceeds {limit} bytes.")
                return Response(
                    response.status, {k.lower(): v for k, v in response.headers.items()}, data
                )
        except TimeoutError as exc:
            raise StorageTimeoutError(f"{what}: timed out.") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ConnectionLostError(f"{what}: {type(exc).__name__}: {exc}") from exc

    async def request(self, request: Request, *, what: str, max_body: int = 64 * 2**20) -> Response:
        return await self._send(request, what, max_body)

    async def read(
        self,
        request: Request,
        byte_range: ByteRequest | None,
        *,
        what: str,
        into: memoryview | None = None,
    ) -> Response:
        response = await self._send(request, what, 1 << 40)
        if response.status not in (200, 206):
            return response
        body = response.body
        if response.status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", ""))
            if match is None:
                raise ResponseIntegrityError(f"{what}: a 206 without a valid Content-Range.")
            first, last = int(match[1]), int(match[2])
            total = None if match[3] == "*" else int(match[3])
            if total is None:
                raise ResponseIntegrityError(f"{what}: a 206 without the object size.")
            start, end = resolve_range(byte_range, total)
            if first != start or last + 1 != end or len(body) != end - start:
                raise ResponseIntegrityError(
                    f"{what}: asked for bytes {start}-{end - 1}, got {first}-{last} "
                    f"with {len(body)} bytes."
                )
        else:
            total = len(body)
            expected = response.headers.get("content-length")
            if expected is not None and int(expected) != total:
                raise ResponseIntegrityError(f"{what}: the body was cut short.")
            start, end = resolve_range(byte_range, total)
            if (start, end) != (0, total):
                body = body[start:end]
        response.total = total
        if into is not None:
            written = min(len(body), len(into))
            into[:written] = memoryview(body)[:written]
            response.body, response.written = b"", written
        else:
            response.body = body
        return response

    async def aclose(self) -> None:
        await self._session.close()


_transports: dict[TransportConfig, LoopLocal[Transport]] = {}


def get_transport(config: TransportConfig) -> Transport:
    local = _transports.get(config)
    if local is None:
        local = _transports.setdefault(config, LoopLocal(lambda: Transport(config)))
    return local.get()


async def close_transports() -> None:
    """Close this loop's sessions (the real transport does this at loop shutdown)."""
    for local in _transports.values():
        transport = local.pop()
        if transport is not None:
            await transport.aclose()
