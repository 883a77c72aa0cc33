"""Helpers for tests/test_repository.py: wrappers that orchestrate races, and process targets.

Process targets are module-level functions so a spawned process can import them.
"""

from __future__ import annotations

import asyncio
import pickle
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, Self

import attrs

from icechunk_storage import (
    ConflictError,
    ConnectionLostError,
    MemoryStorage,
    Repository,
    Storage,
    StorageSettings,
    VersionInfo,
    WrappedStorage,
)
from icechunk_storage._backend import BaseStorage
from icechunk_storage._repository._format import decode_info, encode_info
from icechunk_storage._storage import Data, GetResult, PutMode
from icechunk_storage._sync import sync

REPO = "repo"


class CloudLikeMemoryStorage(MemoryStorage):
    """A memory storage that behaves like a cloud store: it has a prefix, and refuses a new
    repository at an empty one."""

    requires_prefix_for_repository = True

    def __init__(self, prefix: str = "", *, settings: StorageSettings | None = None) -> None:
        BaseStorage.__init__(self, prefix=prefix, settings=settings)
        self._objects = {}

    def _describe(self) -> str:
        return f"cloudlike://{self.prefix}"


@attrs.define
class Gate:
    """Holds writes of the info object until ``reads`` reads of it happened (once armed)."""

    reads: int = 2
    armed: bool = False
    seen: int = 0
    event: asyncio.Event | None = None

    def arm(self) -> None:
        self.armed, self.seen, self.event = True, 0, asyncio.Event()


class GatedStorage(WrappedStorage[Storage]):
    """Makes "every committer reads the info object before anyone writes it" deterministic."""

    def __init__(self, inner: Storage, gate: Gate) -> None:
        super().__init__(inner)
        self.gate = gate

    def _with_inner(self, inner: Storage) -> Self:
        return type(self)(inner, self.gate)

    async def _hold(self, key: str) -> None:
        gate = self.gate
        if gate.armed and key == REPO:
            assert gate.event is not None
            await gate.event.wait()

    async def get(self, key: str, byte_range: Any = None) -> GetResult:
        result = await super().get(key, byte_range)
        gate = self.gate
        if gate.armed and key == REPO:
            gate.seen += 1
            if gate.seen >= gate.reads:
                assert gate.event is not None
                gate.event.set()
        return result

    async def copy(
        self, source: str, destination: str, *, if_version: VersionInfo | None = None
    ) -> VersionInfo:
        await self._hold(source)
        return await super().copy(source, destination, if_version=if_version)

    async def put(
        self,
        key: str,
        data: Data,
        *,
        mode: PutMode = "overwrite",
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> VersionInfo:
        await self._hold(key)
        return await super().put(key, data, mode=mode, content_type=content_type, metadata=metadata)


@attrs.define
class Races:
    """How many conditional updates of the info object to sabotage, and how many were."""

    remaining: int
    sabotaged: int = 0


class RacingStorage(WrappedStorage[Storage]):
    """Before each of the next N conditional updates of the info object, rewrites it with the
    same content in another encoding (a new version, even where the version is a hash of the
    bytes as on S3; same branch tips): a version race that is not a conflict."""

    def __init__(self, inner: Storage, races: Races) -> None:
        super().__init__(inner)
        self.races = races

    def _with_inner(self, inner: Storage) -> Self:
        return type(self)(inner, self.races)

    async def put(
        self,
        key: str,
        data: Data,
        *,
        mode: PutMode = "overwrite",
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> VersionInfo:
        if key == REPO and isinstance(mode, VersionInfo) and self.races.remaining > 0:
            self.races.remaining -= 1
            self.races.sabotaged += 1
            current = bytes((await self.inner.get(REPO)).data)
            none = current.split(b"\n", 1)[0].endswith(b"none")
            algorithm: Literal["zlib", "none"] = "zlib" if none else "none"
            await self.inner.put(REPO, encode_info(decode_info(current), algorithm, 1))
        return await super().put(key, data, mode=mode, content_type=content_type, metadata=metadata)


class CrashingStorage(WrappedStorage[Storage]):
    """The process "dies" (the request fails) when the info object is written."""

    def _with_inner(self, inner: Storage) -> Self:
        return type(self)(inner)

    async def put(
        self,
        key: str,
        data: Data,
        *,
        mode: PutMode = "overwrite",
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> VersionInfo:
        if key == REPO:
            raise ConnectionLostError("simulated crash before the info object was written")
        return await super().put(key, data, mode=mode, content_type=content_type, metadata=metadata)


@attrs.define
class InFlight:
    current: int = 0
    maximum: int = 0


class ProbeStorage(WrappedStorage[Storage]):
    """Counts reads in flight (each takes ``latency`` seconds)."""

    def __init__(self, inner: Storage, probe: InFlight, latency: float = 0.005) -> None:
        super().__init__(inner)
        self.probe, self.latency = probe, latency

    def _with_inner(self, inner: Storage) -> Self:
        return type(self)(inner, self.probe, self.latency)

    async def get(self, key: str, byte_range: Any = None) -> GetResult:
        probe = self.probe
        probe.current += 1
        probe.maximum = max(probe.maximum, probe.current)
        try:
            await asyncio.sleep(self.latency)
            return await super().get(key, byte_range)
        finally:
            probe.current -= 1


class UnbatchedProbeMemory(MemoryStorage):
    """Memory storage that reads one object per backend request, counting those in flight."""

    _read_batch_size = 0

    def __init__(self) -> None:
        super().__init__()
        self.probe = InFlight()

    async def _get_object(self, path: str, byte_range: Any) -> GetResult:
        self.probe.current += 1
        self.probe.maximum = max(self.probe.maximum, self.probe.current)
        try:
            await asyncio.sleep(0.005)
            return await super()._get_object(path, byte_range)
        finally:
            self.probe.current -= 1


# --- workloads ---------------------------------------------------------------------------------


def payload(writer: int, attempt: int) -> bytes:
    """Alternately above and below the inline threshold, so both storage paths are used."""
    text = f"writer {writer} attempt {attempt};".encode()
    return text * (30 if attempt % 2 else 1)


@attrs.frozen
class WriterOutcome:
    commits: list[tuple[str, str]]  # (snapshot id, key written)
    conflicts: int


MAX_ATTEMPTS_PER_COMMIT = 50


async def commit_until(repo: Repository, writer: int, commits: int) -> WriterOutcome:
    """Until ``commits`` commits landed: new session on main, write one key, commit (a
    ConflictError means: start again on the new tip)."""
    done: list[tuple[str, str]] = []
    conflicts = 0
    for attempt in range(commits * MAX_ATTEMPTS_PER_COMMIT):
        if len(done) == commits:
            break
        session = await repo.writable_session_async("main")
        key = f"w{writer}/a{attempt}"
        await session.storage.put(key, payload(writer, attempt))
        try:
            snapshot_id = await session.commit_async(f"writer {writer} attempt {attempt}")
        except ConflictError as exc:
            if (
                exc.expected_parent != session.snapshot_id
                or exc.actual_parent == exc.expected_parent
            ):
                raise AssertionError(f"ConflictError with wrong parents: {exc}") from exc
            conflicts += 1
        else:
            done.append((snapshot_id, key))
    return WriterOutcome(done, conflicts)


def commit_until_sync(repo: Repository, writer: int, commits: int) -> WriterOutcome:
    """The same through the sync API (used from threads and processes)."""
    done: list[tuple[str, str]] = []
    conflicts = 0
    for attempt in range(commits * MAX_ATTEMPTS_PER_COMMIT):
        if len(done) == commits:
            break
        session = repo.writable_session("main")
        key = f"w{writer}/a{attempt}"
        sync(session.storage.put(key, payload(writer, attempt)))
        try:
            snapshot_id = session.commit(f"writer {writer} attempt {attempt}")
        except ConflictError:
            conflicts += 1
        else:
            done.append((snapshot_id, key))
    return WriterOutcome(done, conflicts)


def writer_process(
    pickled_repo: bytes, writer: int, commits: int, barrier: Any, results: Any
) -> None:
    """Process target: wait for every writer, then commit ``commits`` times."""
    try:
        repo = pickle.loads(pickled_repo)
        barrier.wait(timeout=120)
        outcome = commit_until_sync(repo, writer, commits)
        results.put((writer, outcome.commits, outcome.conflicts, None))
    except BaseException as exc:
        results.put((writer, [], 0, repr(exc)))
        raise


def use_pickled_fork(pickled: bytes) -> bytes:
    """Process target: read the fork's view, write through it, send it back pickled."""
    fork = pickle.loads(pickled)
    assert bytes(sync(fork.storage.get("from/parent")).data) == b"parent" * 200
    sync(fork.storage.put("from/child", b"child" * 200))
    return pickle.dumps(fork)


@attrs.define
class LostResponse:
    """Script for :class:`LosingStorage`: which conditional update of the info object lands
    but "loses" its response, what runs before the failure is reported, and which error."""

    error: BaseException
    meanwhile: Callable[[], Awaitable[object]]
    remaining: int = 1
    lost: int = 0
    land: bool = True  # False: the write fails before reaching the storage


class LosingStorage(WrappedStorage[Storage]):
    """The next conditional write of the info object lands on the inner storage, then another
    writer commits (``meanwhile``, on the inner storage), then the write reports ``error``.

    Faithful to what a real backend shows the repository layer: on S3, a PUT whose response
    is lost is re-sent by the retry layer; the re-send fails its If-Match against our own
    write, and the write-id readback then finds the other writer's id (it wrote after us), so
    the storage raises PreconditionFailedError; or the retries run out on timeouts and it
    raises a transient error. The repository only ever sees the Storage interface, and this
    wrapper produces exactly those outcomes after the write really landed.
    """

    def __init__(self, inner: Storage, script: LostResponse) -> None:
        super().__init__(inner)
        self.script = script

    def _with_inner(self, inner: Storage) -> Self:
        return type(self)(inner, self.script)

    async def put(
        self,
        key: str,
        data: Data,
        *,
        mode: PutMode = "overwrite",
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> VersionInfo:
        script = self.script
        if key != REPO or not isinstance(mode, VersionInfo) or script.remaining <= 0:
            return await super().put(
                key, data, mode=mode, content_type=content_type, metadata=metadata
            )
        script.remaining -= 1
        script.lost += 1
        if script.land:
            await super().put(key, data, mode=mode, content_type=content_type, metadata=metadata)
        await script.meanwhile()
        raise script.error


# --- crash (kill -9) ---------------------------------------------------------------------------


class HangingStorage(WrappedStorage[Storage]):
    """Stops the process for good when the info object is about to be written: by then the
    commit's chunks, manifests and snapshot are written (and flushed)."""

    def __init__(self, inner: Storage, ready: Any) -> None:
        super().__init__(inner)
        self.ready = ready

    def _with_inner(self, inner: Storage) -> Self:
        return type(self)(inner, self.ready)

    async def copy(
        self, source: str, destination: str, *, if_version: VersionInfo | None = None
    ) -> VersionInfo:
        if source == REPO:
            self.ready.set()
            await asyncio.sleep(3600)  # killed here
        return await super().copy(source, destination, if_version=if_version)


def crash_writer(root: str, where: str, ready: Any) -> None:
    """Process target: commit ``committed/*`` (it lands), then write ``uncommitted/*`` in a
    new session and wait to be killed, either before committing (``where="before-commit"``)
    or inside the commit, just before the info object is written (``"in-commit"``)."""
    from icechunk_storage import local_filesystem_storage

    storage = local_filesystem_storage(root)
    repo = Repository.open(storage)
    session = repo.writable_session("main")
    for i in range(20):
        sync(session.storage.put(f"committed/c/{i}", crash_value("committed", i)))
    session.commit("the last complete commit")
    if where == "in-commit":
        repo = Repository.open(HangingStorage(storage, ready))
    session = repo.writable_session("main")
    for i in range(20):
        sync(session.storage.put(f"uncommitted/c/{i}", crash_value("uncommitted", i)))
    if where == "before-commit":
        ready.set()
        while True:
            time.sleep(1)  # killed here
    session.commit("never lands")


def crash_value(what: str, i: int) -> bytes:
    return f"{what} {i};".encode() * 100  # above the inline limit: one chunk object each
