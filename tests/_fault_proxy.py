"""A provider-neutral, fault-injecting reverse proxy for the reliability figures (issue 15).

It forwards every request to one upstream (moto, fake-gcs-server, Azurite) from its own
thread and event loop, and faults a chosen fraction of requests at random (seeded), each
with one of:

* ``reset_before``: the connection is cut before anything is forwarded (nothing happened);
* ``reset_after_headers``: forwarded; the status line and headers are sent, then the
  connection is cut (a write landed, its response body did not arrive);
* ``truncate``: forwarded; the body is cut half-way (Content-Length announces it whole);
* ``drop_response``: forwarded, then the connection is cut with no response at all (a
  write landed, its response was lost);
* ``stall``: forwarded; headers and half the body, then nothing for ``stall_seconds``;
* ``status``: answered 500, 503 ``SlowDown``, 429 or 408 without forwarding;
* ``latency``: forwarded after ``latency_seconds`` (not a failure: it just reorders).

Counts per kind are kept, so a test can report what it survived.
"""

from __future__ import annotations

import asyncio
import collections
import random
import threading
from collections.abc import Callable

import aiohttp
from aiohttp import web

__all__ = ["FAULT_KINDS", "FaultProxy"]

FAULT_KINDS = (
    "reset_before",
    "reset_after_headers",
    "truncate",
    "drop_response",
    "stall",
    "status",
    "latency",
)
_STATUSES = ((500, "InternalError"), (503, "SlowDown"), (429, "TooManyRequests"), (408, "Timeout"))
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "host", "expect"}
)


class FaultProxy:
    """``start()`` returns the URL; ``stop()`` always cleans up (call it in a finally)."""

    def __init__(
        self,
        upstream: str,
        *,
        rate: float = 0.0,
        seed: int = 15,
        kinds: tuple[str, ...] = FAULT_KINDS,
        stall_seconds: float = 2.0,
        latency_seconds: float = 0.05,
        replay_unsafe: Callable[[str, str, str], bool] | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.rate = rate
        self.kinds = kinds
        self.stall_seconds = stall_seconds
        self.latency_seconds = latency_seconds
        self.replay_unsafe = replay_unsafe
        """(method, path, content-range) -> True for a request the upstream cannot receive
        twice correctly (an emulator weakness): its faults then strike before forwarding."""
        self.requests = 0
        self.faults: collections.Counter[str] = collections.Counter()
        self.scripted: list[tuple[str, Callable[[str, str], bool]]] = []
        """One-shot faults, checked first: (kind, match(method, path_and_query))."""
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.ServerRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        self.url = ""

    def start(self) -> str:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="fault-proxy", daemon=True)
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

    def script(self, kind: str, match: Callable[[str, str], bool]) -> None:
        """Fault the next request that ``match`` accepts with ``kind``, once."""
        with self._lock:
            self.scripted.append((kind, match))

    def _choose(self, method: str, path: str) -> str | None:
        with self._lock:
            self.requests += 1
            for index, (kind, match) in enumerate(self.scripted):
                if match(method, path):
                    del self.scripted[index]
                    self.faults[kind] += 1
                    return kind
            if self._random.random() >= self.rate:
                return None
            kind = self._random.choice(self.kinds)
            self.faults[kind] += 1
            return kind

    async def _start(self) -> int:
        self._client = aiohttp.ClientSession(
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=120),
            skip_auto_headers={"User-Agent", "Content-Type", "Accept-Encoding", "Accept"},
        )
        self._runner = web.ServerRunner(web.Server(self._handle), handle_signals=False)
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

    @staticmethod
    def _cut(request: web.BaseRequest) -> None:
        transport = request.transport
        if transport is not None:
            transport.abort()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await request.read()
        kind = self._choose(request.method, request.raw_path)
        after_forward = ("drop_response", "reset_after_headers", "truncate", "stall")
        if (
            kind in after_forward
            and self.replay_unsafe is not None
            and self.replay_unsafe(
                request.method, request.raw_path, request.headers.get("Content-Range", "")
            )
        ):
            kind = "reset_before"
        if kind == "reset_before":
            self._cut(request)
            return web.Response(status=499)  # never sent: the connection is gone
        if kind == "status":
            status, code = self._random.choice(_STATUSES)
            text = (
                f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>fault</Message></Error>"
            )
            return web.Response(status=status, body=text.encode(), content_type="application/xml")
        if kind == "latency":
            await asyncio.sleep(self.latency_seconds)
        assert self._client is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._client.request(
            request.method,
            self.upstream + request.raw_path,
            headers=headers,
            data=body if body else None,
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            reply_headers = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in _HOP_BY_HOP
                and (k.lower() != "content-length" or request.method == "HEAD")
            }
            status = upstream.status
        for name, value in list(reply_headers.items()):
            if name.lower() == "location" and value.startswith(self.upstream):
                reply_headers[name] = self.url + value[len(self.upstream) :]  # GCS sessions
        if kind == "drop_response":
            self._cut(request)
            return web.Response(status=499)
        response = web.StreamResponse(status=status, headers=reply_headers)
        if request.method != "HEAD":
            response.content_length = len(payload)
        await response.prepare(request)
        if kind == "reset_after_headers":
            self._cut(request)
            return response
        if kind in ("truncate", "stall") and len(payload) > 1:
            await response.write(payload[: len(payload) // 2])
            if kind == "stall":
                await asyncio.sleep(self.stall_seconds)
            self._cut(request)
            return response
        if request.method != "HEAD" and payload:
            await response.write(payload)
        await response.write_eof()
        return response
