"""A recording, fault-injecting HTTP proxy in front of moto, for the S3 tests.

It runs an aiohttp server on 127.0.0.1 in its own thread and event loop and forwards every
request to moto, recording what the client actually sent (method, Host, raw path and query,
headers). It works two ways at once:

* as the endpoint (``endpoint_url=proxy.url``): path-style requests are forwarded as is;
* as an HTTP forward proxy (``HTTP_PROXY=proxy.url``): requests for
  ``<bucket>.<virtual_suffix>`` hosts (virtual-hosted addressing) are rewritten to
  path-style for moto, so addressing can be tested without DNS.

Faults are injected per matching request: a status with an S3 error document (or a body
of the test's choosing: S3 reports some failed copies in a 200 response's body), a reset
connection (nothing forwarded), a dropped response (forwarded, so the write happens, then the
connection is cut), or a truncated body. It also enforces ``x-amz-copy-source-if-match``,
which moto 5.2 ignores, so conditional copies can be tested. For refreshable-credential
tests it checks each signed request's access key id against the expiry the test registered:
a request signed (``x-amz-date``) at or after its key's expiry is a violation.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

import aiohttp
import attrs
from aiohttp import web

__all__ = ["Fault", "RecordedRequest", "RecordingProxy"]

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
    }
)


@attrs.define
class RecordedRequest:
    method: str
    host: str
    path: str  # raw (still percent-encoded) path, as sent
    query: str  # raw query string
    headers: dict[str, str]  # lower-case names
    received_at: float
    body_size: int = 0
    status: int | None = None
    fault: str | None = None

    @property
    def access_key_id(self) -> str | None:
        auth = self.headers.get("authorization", "")
        marker = "Credential="
        if marker not in auth:
            return None
        return auth.split(marker, 1)[1].split("/", 1)[0]

    @property
    def signed_at(self) -> float | None:
        stamp = self.headers.get("x-amz-date")
        if stamp is None:
            return None
        parsed = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        return parsed.timestamp()

    @property
    def query_params(self) -> set[str]:
        return {part.split("=", 1)[0] for part in self.query.split("&") if part}


@attrs.define
class Fault:
    kind: str  # "status", "reset", "drop_response", "truncate", "delay"
    match: Callable[[RecordedRequest], bool]
    times: int = 1
    status: int = 503
    code: str = "SlowDown"
    delay: float = 0.0
    body: bytes | None = None  # a "status" fault's body instead of an S3 error document


def _error_body(code: str, message: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{message}</Message><RequestId>proxy</RequestId></Error>"
    ).encode()


class RecordingProxy:
    """See the module docstring. ``start()`` returns the URL; ``stop()`` always cleans up."""

    def __init__(self, upstream: str, virtual_suffix: str = "s3.test.invalid") -> None:
        self.upstream = upstream.rstrip("/")
        self.virtual_suffix = virtual_suffix
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self.key_expiry: dict[str, float] = {}
        self.violations: list[str] = []
        self.emulate_copy_conditions = True
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.ServerRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        self.url = ""

    # --- control (from the test's thread) -------------------------------------------------

    def start(self) -> str:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="s3-proxy", daemon=True)
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self._start(), loop).result(timeout=30)
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), loop).result(timeout=30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
            loop.close()
            self._loop = self._thread = None

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self.faults.clear()
            self.key_expiry.clear()
            self.violations.clear()

    def inject(
        self,
        kind: str,
        match: Callable[[RecordedRequest], bool] | None = None,
        *,
        times: int = 1,
        status: int = 503,
        code: str = "SlowDown",
        delay: float = 0.0,
        body: bytes | None = None,
    ) -> Fault:
        fault = Fault(kind, match or (lambda _: True), times, status, code, delay, body)
        with self._lock:
            self.faults.append(fault)
        return fault

    def recorded(self, method: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if method is None or r.method == method]

    # --- the server (in the proxy's thread) ------------------------------------------------

    async def _start(self) -> int:
        self._client = aiohttp.ClientSession(
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=120),
            skip_auto_headers={"User-Agent", "Content-Type", "Accept-Encoding", "Accept"},
        )
        server = web.Server(self._handle)
        self._runner = web.ServerRunner(server, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return int(self._runner.addresses[0][1])

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def _take_fault(self, request: RecordedRequest) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times > 0 and fault.match(request):
                    fault.times -= 1
                    return fault
        return None

    def _check_credentials(self, request: RecordedRequest) -> None:
        key = request.access_key_id
        if key is None or not self.key_expiry:
            return
        signed_at = request.signed_at
        with self._lock:
            expiry = self.key_expiry.get(key)
            if expiry is None:
                self.violations.append(f"{request.method} {request.path}: unknown key {key}")
            elif signed_at is None or signed_at >= expiry:
                self.violations.append(
                    f"{request.method} {request.path}: key {key} expired at {expiry}, "
                    f"signed at {signed_at}, received at {request.received_at}"
                )

    def _upstream_target(self, request: web.BaseRequest) -> tuple[str, str]:
        """``(host, path)`` of the request; virtual-hosted bucket hosts become path-style."""
        raw = request.raw_path
        host = request.headers.get("Host", "")
        if raw.startswith(("http://", "https://")):  # absolute form: we are a forward proxy
            parts = urlsplit(raw)
            host = parts.netloc
            raw = parts.path + (f"?{parts.query}" if parts.query else "")
        hostname = host.split(":")[0]
        suffix = "." + self.virtual_suffix
        if hostname.endswith(suffix):
            bucket = hostname[: -len(suffix)]
            raw = f"/{bucket}{raw}"
        return host, raw

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0
        body = await request.content.read()  # no size limit, unlike request.read()
        host, target = self._upstream_target(request)
        path, _, query = target.partition("?")
        recorded = RecordedRequest(
            method=request.method,
            host=host,
            path=path,
            query=query,
            headers={k.lower(): v for k, v in request.headers.items()},
            received_at=time.time(),
            body_size=len(body),
        )
        with self._lock:
            self.requests.append(recorded)
        self._check_credentials(recorded)
        fault = self._take_fault(recorded)
        if fault is not None:
            recorded.fault = fault.kind
            if fault.kind == "status":
                recorded.status = fault.status
                answer = fault.body
                if answer is None:
                    answer = _error_body(fault.code, "injected by the test proxy")
                return web.Response(
                    status=fault.status, body=answer, content_type="application/xml"
                )
            if fault.kind == "reset":
                return self._cut(request)
            if fault.kind == "delay":
                await asyncio.sleep(fault.delay)
        assert self._client is not None
        if self.emulate_copy_conditions and await self._copy_condition_fails(recorded):
            recorded.status = 412
            return web.Response(
                status=412,
                body=_error_body("PreconditionFailed", "x-amz-copy-source-If-Match (proxy)"),
                content_type="application/xml",
            )
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self._client.request(
            request.method,
            self.upstream + target,
            headers=headers,
            data=body if body else None,
            allow_redirects=False,
        ) as upstream:
            data = await upstream.read()
            recorded.status = upstream.status
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
        if fault is not None and fault.kind == "drop_response":
            return self._cut(request)
        if request.method == "HEAD":  # keep the object's Content-Length on a body-less answer
            response = web.StreamResponse(status=upstream.status, headers=out_headers)
            length = upstream.headers.get("Content-Length")
            if length is not None:
                response.content_length = int(length)
            await response.prepare(request)
            await response.write_eof()
            return response
        if fault is not None and fault.kind == "truncate" and len(data) > 1:
            response = web.StreamResponse(status=recorded.status, headers=out_headers)
            response.content_length = len(data)
            await response.prepare(request)
            await response.write(data[: len(data) // 2])
            return self._cut(request)
        return web.Response(status=upstream.status, headers=out_headers, body=data)

    async def _copy_condition_fails(self, request: RecordedRequest) -> bool:
        """moto 5.2 ignores ``x-amz-copy-source-if-match``; check it here (HEAD the source).

        Not atomic with the copy, which is fine for tests that change the source beforehand.
        """
        expected = request.headers.get("x-amz-copy-source-if-match")
        source = request.headers.get("x-amz-copy-source")
        if request.method != "PUT" or expected is None or source is None:
            return False
        assert self._client is not None
        source_path = "/" + source.lstrip("/").split("?", 1)[0]
        # moto checks no signature, but treats unsigned requests as anonymous (ACLs).
        auth = "AWS4-HMAC-SHA256 Credential=proxy/20200101/us-east-1/s3/aws4_request, "
        auth += "SignedHeaders=host, Signature=0"
        async with self._client.head(
            self.upstream + source_path, headers={"Authorization": auth}
        ) as response:
            if response.status != 200:
                return False  # let moto answer (404 for a missing source)
            current = response.headers.get("ETag", "")
        return current.strip('"') != expected.strip('"')

    @staticmethod
    def _cut(request: web.BaseRequest) -> web.StreamResponse:
        """Close the connection without (finishing) a response."""
        transport = request.transport
        if transport is not None:
            transport.abort()
        raise asyncio.CancelledError
