"""Picklable callbacks, a fake clock and child-process entry points for the credential tests.

Callbacks must pickle (they travel inside Refreshable values), so they are module-level
classes holding only a name; what a call does lives in ``SCRIPTS`` in this process. Counting
across processes uses a file (``FileCounted``): one line appended per call.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from typing import Any

import attrs

from icechunk_storage._credentials import (
    AzureRefreshableCredential,
    GcsBearerCredential,
    RefreshableCredentials,
    S3StaticCredentials,
)
from icechunk_storage._refresher import CredentialHandle, credential_handle

START = datetime(2026, 1, 1, tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class FakeClock:
    """A clock that only moves when told to; the refresher reads it from several threads."""

    def __init__(self, start: datetime = START) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)


@attrs.define
class Script:
    """What a ``Scripted``/``AsyncScripted`` callback does, and what it saw."""

    clock: Callable[[], datetime]
    lifetime: float | None = 3600.0
    kind: str = "s3"
    fail: BaseException | None = None
    result: object = None
    gate: threading.Event | None = None
    calls: int = 0
    threads: list[str] = attrs.field(factory=list)
    cancelled: int = 0

    def _begin(self) -> int:
        self.calls += 1
        self.threads.append(threading.current_thread().name)
        return self.calls

    def _finish(self, n: int) -> Any:
        if self.fail is not None:
            raise self.fail
        if self.result is not None:
            return self.result
        expires = None if self.lifetime is None else self.clock() + timedelta(seconds=self.lifetime)
        if self.kind == "gcs":
            return GcsBearerCredential(f"BEARER{n}", expires_after=expires)
        if self.kind == "azure":
            return AzureRefreshableCredential.SasToken(f"SAS{n}", expires_after=expires)
        return S3StaticCredentials(f"AKID{n}", f"SECRET{n}", expires_after=expires)

    def run_sync(self) -> Any:
        n = self._begin()
        if self.gate is not None:
            self.gate.wait(timeout=10)
        return self._finish(n)

    async def run_async(self) -> Any:
        n = self._begin()
        try:
            # Polls a threading.Event: the gate is set from other threads and loops.
            while self.gate is not None and not self.gate.is_set():  # noqa: ASYNC110
                await asyncio.sleep(0.002)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return self._finish(n)


SCRIPTS: dict[str, Script] = {}


@attrs.frozen
class Scripted:
    """Sync callback running ``SCRIPTS[name]``."""

    name: str

    def __call__(self) -> Any:
        return SCRIPTS[self.name].run_sync()


@attrs.frozen
class AsyncScripted:
    """``async def`` callback running ``SCRIPTS[name]``."""

    name: str

    async def __call__(self) -> Any:
        return await SCRIPTS[self.name].run_async()


def static_s3_credential() -> S3StaticCredentials:
    """A module-level function callback (never expires)."""
    return S3StaticCredentials("AKIDFUNC", "SECRETFUNC")


def failing_callback() -> S3StaticCredentials:
    raise RuntimeError("bad creds")


def static_gcs_credential() -> GcsBearerCredential:
    return GcsBearerCredential("BEARERFUNC")


def static_azure_credential() -> AzureRefreshableCredential.SasToken:
    return AzureRefreshableCredential.SasToken("SASFUNC")


async def async_s3_credential() -> S3StaticCredentials:
    await asyncio.sleep(0)
    return S3StaticCredentials("AKIDASYNC", "SECRETASYNC")


def with_suffix(suffix: str) -> S3StaticCredentials:
    """For functools.partial callbacks."""
    return S3StaticCredentials(f"AKID{suffix}", f"SECRET{suffix}")


@attrs.frozen
class FileCounted:
    """Appends a line to ``path`` per call: a call counter that works across processes."""

    path: str
    lifetime: float = 3600.0

    def __call__(self) -> S3StaticCredentials:
        with open(self.path, "a") as f:
            f.write(f"{os.getpid()}\n")
        expires = utcnow() + timedelta(seconds=self.lifetime)
        return S3StaticCredentials("AKIDFILE", "SECRETFILE", expires_after=expires)


def count_calls(path: str) -> int:
    try:
        with open(path) as f:
            return len(f.read().splitlines())
    except FileNotFoundError:
        return 0


@attrs.frozen
class BlockInPid:
    """Blocks on ``GATES[gate]`` in process ``pid`` only; returns at once in any other."""

    pid: int
    gate: str

    def __call__(self) -> S3StaticCredentials:
        if os.getpid() == self.pid:
            GATES[self.gate].wait(timeout=10)
        expires = utcnow() + timedelta(hours=1)
        return S3StaticCredentials(f"AKID{os.getpid()}", "SECRETPID", expires_after=expires)


GATES: dict[str, threading.Event] = {}


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll briefly for something another thread does; fail loudly instead of hanging."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.002)


async def async_wait_until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.002)


# --- child-process entry points ------------------------------------------------------------


def child_get_many(
    refreshable: RefreshableCredentials[S3StaticCredentials], handles: int, gets: int
) -> tuple[int, list[str], int]:
    """In a fresh process: many handles, many concurrent gets. Returns (pid, key ids, calls)."""

    async def main() -> tuple[list[str], int]:
        hs = [credential_handle(refreshable) for _ in range(handles)]
        creds = await asyncio.gather(*(h.get() for h in hs for _ in range(gets)))
        calls = hs[0].stats.calls
        for h in hs:
            await h.aclose()
        return [c.access_key_id for c in creds], calls

    ids, calls = asyncio.run(main())
    return os.getpid(), ids, calls


def child_after_fork(handle: CredentialHandle[S3StaticCredentials], conn: Connection) -> None:
    """In a forked child: get a credential through a handle inherited from the parent."""
    try:
        cred = asyncio.run(asyncio.wait_for(handle.get(), 5))
        conn.send(("ok", cred.access_key_id, os.getpid()))
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}", os.getpid()))
    finally:
        conn.close()
