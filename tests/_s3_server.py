"""Session fixtures for the S3 tests: a moto server, a bypass client, buckets, the proxy.

moto runs as ``moto_server`` in a subprocess on 127.0.0.1 and a free port. It is stopped at
the end of the session whatever happens (terminate, then kill after a timeout, in a
``finally``; ``atexit`` as a backstop if pytest itself dies). Every test gets a fresh bucket.
The bypass client is a plain synchronous botocore client, so tests can read and write
behind the storage's back without touching its event loop.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._s3_proxy import RecordingProxy

__all__ = [
    "MOTO_KEY",
    "MOTO_REGION",
    "MotoServer",
]

MOTO_KEY = "testing"
MOTO_REGION = "us-east-1"
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _moto_command(port: int) -> list[str]:
    script = Path(sys.executable).with_name("moto_server")
    if script.exists():
        command = [str(script)]
    else:
        found = shutil.which("moto_server")
        command = [found] if found else [sys.executable, "-m", "moto.server"]
    return [*command, "-H", "127.0.0.1", "-p", str(port)]


def _no_proxy_opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)


class MotoServer:
    """A running moto server: ``url``, ``reset()``; stopped by :meth:`stop`."""

    def __init__(self, extra_env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(extra_env or {})
        self.process = subprocess.Popen(
            _moto_command(self.port),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        atexit.register(_stop, self.process)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        opener = _no_proxy_opener()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto_server exited at startup:\n{self.log()}")
            with (
                contextlib.suppress(OSError),
                opener.open(f"{self.url}/moto-api/", timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"moto_server did not answer within {STARTUP_TIMEOUT} s:\n{self.log()}")

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        with _no_proxy_opener().open(request, timeout=10):
            pass

    def stop(self) -> None:
        try:
            _stop(self.process)
        finally:
            self._log.close()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_admin(moto_server: MotoServer) -> Any:
    """A synchronous botocore client on moto, for bypass reads and writes."""
    import botocore.session
    from botocore.config import Config

    session = botocore.session.Session()
    client = session.create_client(
        "s3",
        region_name=MOTO_REGION,
        endpoint_url=moto_server.url,
        aws_access_key_id=MOTO_KEY,
        aws_secret_access_key=MOTO_KEY,
        config=Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"},
            proxies={},
        ),
    )
    yield client
    client.close()


@pytest.fixture
def bucket(s3_admin: Any) -> str:
    """A fresh, empty bucket for one test."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_admin.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def _s3_proxy_session(moto_server: MotoServer) -> Iterator[RecordingProxy]:
    proxy = RecordingProxy(moto_server.url)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def s3_proxy(_s3_proxy_session: RecordingProxy) -> Iterator[RecordingProxy]:
    """The recording proxy in front of moto, with no records or faults from other tests."""
    _s3_proxy_session.clear()
    yield _s3_proxy_session
    _s3_proxy_session.clear()


@pytest.fixture
def aws_isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No AWS configuration, credentials or proxies from the machine leak into a test."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name.lower() in ("http_proxy", "https_proxy", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return tmp_path
