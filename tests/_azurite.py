"""Session fixtures for the Azure tests: Azurite (npm), installed and started by the tests.

Azurite 3.35.0 is the last release that runs on Node 20 (3.36+ needs Node 22). On first use
it is ``npm install``-ed into ``.cache/azurite`` under the repository root (gitignored; set
``ICECHUNK_STORAGE_AZURITE_DIR`` to use another directory), under a file lock so that
parallel sessions install it once. It runs on 127.0.0.1 and a free port with in-memory
persistence, and is stopped at the end of the session whatever happens (terminate, then kill
after a timeout, in a ``finally``; ``atexit`` as a backstop if pytest itself dies).

The flags are required (``../shared/reference/emulators.md`` §4): ``--skipApiVersionCheck``
because the SDK sends an API version newer than Azurite knows, ``--inMemoryPersistence`` so
nothing is written to disk, ``--disableTelemetry`` because Azurite phones home by default,
``--loose`` so that headers Azurite does not implement are ignored rather than refused.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "AZURITE_ACCOUNT",
    "AZURITE_KEY",
    "AZURITE_VERSION",
    "AzuriteServer",
]

AZURITE_VERSION = "3.35.0"
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
"""Azurite's documented, public development key (not a secret)."""
INSTALL_TIMEOUT = 600.0
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
REPO_ROOT = Path(__file__).resolve().parent.parent


def install_dir() -> Path:
    configured = os.environ.get("ICECHUNK_STORAGE_AZURITE_DIR")
    return Path(configured) if configured else REPO_ROOT / ".cache" / "azurite"


def azurite_binary() -> Path:
    """``azurite-blob`` from the cache, installing Azurite there first if needed."""
    directory = install_dir()
    binary = directory / "node_modules" / ".bin" / "azurite-blob"
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            "The Azure tests need npm (Node 20+) to install Azurite; install Node.js."
        )
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.exists():  # another session installed it while we waited
            return binary
        result = subprocess.run(
            [
                npm,
                "install",
                "--no-audit",
                "--no-fund",
                "--no-save",
                "--prefix",
                str(directory),
                f"azurite@{AZURITE_VERSION}",
            ],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=INSTALL_TIMEOUT,
            check=False,
        )
        if result.returncode != 0 or not binary.exists():
            output = (result.stdout + result.stderr).decode(errors="replace")[-4000:]
            raise RuntimeError(f"npm install azurite@{AZURITE_VERSION} failed:\n{output}")
    return binary


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)


class AzuriteServer:
    """A running Azurite blob service: ``url``, ``blob_endpoint``, ``connection_string``."""

    def __init__(self) -> None:
        binary = azurite_binary()
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.blob_endpoint = f"{self.url}/{AZURITE_ACCOUNT}"
        self.connection_string = (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={self.blob_endpoint};"
        )
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        self.process = subprocess.Popen(
            [
                str(binary),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(self.port),
                "--loose",
                "--skipApiVersionCheck",
                "--inMemoryPersistence",
                "--disableTelemetry",
                "--silent",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=install_dir(),
        )
        atexit.register(_stop, self.process)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        """Any HTTP answer (403 included) to a list request means it listens."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Azurite exited at startup:\n{self.log()}")
            try:
                with opener.open(f"{self.blob_endpoint}?comp=list", timeout=2):
                    return
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"Azurite did not answer within {STARTUP_TIMEOUT} s:\n{self.log()}")

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        try:
            _stop(self.process)
        finally:
            self._log.close()


@pytest.fixture(scope="session")
def azurite() -> Iterator[AzuriteServer]:
    server = AzuriteServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def azure_admin(azurite: AzuriteServer) -> Iterator[Any]:
    """A synchronous BlobServiceClient on Azurite, for bypass reads and writes."""
    from azure.storage.blob import BlobServiceClient

    client = BlobServiceClient.from_connection_string(azurite.connection_string)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def container(azure_admin: Any) -> str:
    """A fresh, empty container for one test."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    azure_admin.create_container(name)
    return name


@pytest.fixture
def azure_isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Azure configuration or proxy from the machine leaks into a test."""
    for name in list(os.environ):
        if name.startswith(("AZURE_", "AZURITE_")) or name.lower() in (
            "http_proxy",
            "https_proxy",
            "no_proxy",
        ):
            monkeypatch.delenv(name, raising=False)
