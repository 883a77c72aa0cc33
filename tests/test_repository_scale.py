"""The repository at scale (issue #18): split manifests, lazy loading, what a commit writes,
the local storage's durability, and a writer killed with SIGKILL.

Manifests are made small here (``MAX_MANIFEST_ENTRIES`` = 8) so a few hundred keys span many
of them; the sizes at 10^6 keys are the benchmark's (``python -m benchmarks.repo_scale``).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import pytest

from icechunk_storage import (
    ConfigurationError,
    GCSummary,
    ObjectNotFoundError,
    Repository,
    RepositoryFormatError,
    Storage,
    WrappedStorage,
    _local,
    in_memory_storage,
    local_filesystem_storage,
)
from icechunk_storage._repository import _manifests
from icechunk_storage._repository._format import INITIAL_SNAPSHOT_ID, node_of
from icechunk_storage._storage import Data, GetResult, PutMode, VersionInfo
from tests import _repo_helpers as helpers


@pytest.fixture(autouse=True)
def small_manifests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_manifests, "MAX_MANIFEST_ENTRIES", 8)


class Recording(WrappedStorage[Storage]):
    """Records the keys read and written (and bytes written) through it."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.reads: list[str] = []
        self.writes: dict[str, int] = {}

    def _with_inner(self, inner: Storage) -> Self:
        return type(self)(inner)

    async def get(self, key: str, byte_range: Any = None) -> GetResult:
        self.reads.append(key)
        return await super().get(key, byte_range)

    async def put(
        self,
        key: str,
        data: Data,
        *,
        mode: PutMode = "overwrite",
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> VersionInfo:
        self.writes[key] = len(data)
        return await super().put(key, data, mode=mode, content_type=content_type, metadata=metadata)

    def reset(self) -> None:
        self.reads.clear()
        self.writes.clear()

    def read(self, prefix: str) -> list[str]:
        return [key for key in self.reads if key.startswith(prefix)]

    def written(self, prefix: str) -> list[str]:
        return [key for key in self.writes if key.startswith(prefix)]


async def _values(repo: Repository, values: Mapping[str, bytes | None]) -> str:
    session = await repo.writable_session_async("main")
    for key, value in values.items():
        if value is None:
            await session.storage.delete(key)
        else:
            await session.storage.put(key, value)
    return await session.commit_async("values")


def _array(name: str, n: int, tag: str = "v") -> dict[str, bytes | None]:
    values: dict[str, bytes | None] = {f"{name}/zarr.json": b"{}"}
    values.update({f"{name}/c/{i // 10}/{i % 10}": f"{tag}{i}".encode() for i in range(n)})
    return values


def test_node_of_follows_zarr_layouts() -> None:
    assert node_of("zarr.json") == ""
    assert node_of("a/b/zarr.json") == "a/b"
    assert node_of("a/b/c/0/12") == "a/b"
    assert node_of("c/0") == ""  # a root array's chunk
    assert node_of("a/c") == "a"  # a 0-d array's only chunk
    assert node_of("a/0.1.2") == "a"  # Zarr v2 chunk keys
    assert node_of("a/.zarray") == "a"
    assert node_of("a/b/notes.txt") == "a/b"
    assert node_of("c/d/c/1") == "c/d"  # a group named c


async def test_a_commit_writes_only_the_manifests_holding_changed_keys() -> None:
    recording = Recording(in_memory_storage())
    repo = await Repository.create_async(recording)
    await _values(repo, {**_array("a", 200), **_array("b", 40)})
    manifests = [info.key async for info in recording.list("manifests/")]
    assert len(manifests) == 26 + 6  # at most 8 keys each, per node: 201 and 41 keys

    recording.reset()
    await _values(repo, {"a/c/5/5": b"changed"})
    # a plain overwrite reads no manifest; the commit reads and rewrites the one holding it
    assert len(recording.read("manifests/")) == 1
    assert len(recording.written("manifests/")) == 1
    assert len(recording.written("snapshots/")) == 1


async def test_reads_and_listings_load_only_the_manifests_they_need() -> None:
    recording = Recording(in_memory_storage())
    repo = await Repository.create_async(recording)
    tip = await _values(repo, {**_array("a", 200), **_array("b", 40), "zarr.json": b"{}"})
    snapshot = await repo._read_snapshot(tip)
    b_manifests = {f"manifests/{ref.id}" for ref in snapshot.nodes["b"]}
    recording.reset()
    session = await repo.readonly_session_async(snapshot_id=tip)
    assert bytes((await session.storage.get("a/c/12/3")).data) == b"v123"
    assert len(recording.read("manifests/")) == 1
    assert not await session.storage.exists("a/c/99/9")
    assert len(recording.read("manifests/")) <= 2  # none if it falls between two ranges

    recording.reset()
    listing = await session.storage.list_dir("")
    assert [o.key for o in listing.objects] == ["zarr.json"]
    assert listing.prefixes == ["a/", "b/"]
    assert len(recording.read("manifests/")) == 1  # the root node's; none of a's or b's

    recording.reset()
    keys = [info.key async for info in session.storage.list("b/")]
    assert len(keys) == 41
    assert set(recording.read("manifests/")) == b_manifests

    recording.reset()
    listing = await session.storage.list_dir("a/")
    assert listing.prefixes == ["a/c/"]
    assert [o.key for o in listing.objects] == ["a/zarr.json"]
    assert len(recording.read("manifests/")) <= 1  # the one holding a/zarr.json (if not kept)


async def test_random_changes_read_back_like_a_dict(tmp_path: Path) -> None:
    """Puts, overwrites, deletes and copies over many commits (manifests split, shrink and
    vanish), checked against a dict after every commit, through a fork too; then garbage
    collection keeps everything reachable."""
    rng = random.Random(18)
    repo = await Repository.create_async(local_filesystem_storage(tmp_path / "repo"))
    model: dict[str, bytes] = {}
    names = [f"n{i % 3}/c/{i // 7}/{i % 7}" for i in range(150)] + ["n0/zarr.json", "top"]
    for round_ in range(12):
        session = await repo.writable_session_async("main")
        target = session
        if round_ % 4 == 3:  # a fork of a session with changes: an anonymous snapshot
            await session.storage.put("top", b"before forking")
            model["top"] = b"before forking"
            target = await session.fork_async()
        for _ in range(rng.randrange(1, 60)):
            key = rng.choice(names)
            action = rng.random()
            if action < 0.6:
                value = f"{key} {round_} {rng.random()}".encode() * rng.choice([1, 40])
                await target.storage.put(key, value)
                model[key] = value
            elif action < 0.85:
                await target.storage.delete(key)
                model.pop(key, None)
            elif key in model:
                other = rng.choice(names)
                await target.storage.copy(key, other)
                model[other] = model[key]
        if target is not session:
            await session.merge_async(target)
        await session.commit_async(f"round {round_}", allow_empty=True)
        await _check_matches(repo, model)
    await asyncio.sleep(1.05)
    summary = await repo.garbage_collect_async(datetime.now(UTC))
    assert summary.snapshots_deleted == 3  # the forks' anonymous snapshots, nothing else
    await _check_matches(repo, model)
    for info in await repo.ancestry_async(branch="main"):  # every manifest still reachable
        reader = await repo.readonly_session_async(snapshot_id=info.id)
        keys = [item.key async for item in reader.storage.list("")]
        await reader.storage.get_many([(key, None) for key in keys])


async def _check_matches(repo: Repository, model: Mapping[str, bytes]) -> None:
    reader = await repo.readonly_session_async("main")
    listed = {info.key: info.size async for info in reader.storage.list("")}
    assert listed == {key: len(value) for key, value in model.items()}
    got = await reader.storage.get_many([(key, None) for key in sorted(model)])
    assert dict(zip(sorted(model), map(bytes, got), strict=True)) == model  # type: ignore[arg-type]
    for prefix in ("n1/", "n2/c/3/", "n0/c/1/"):
        keys = [info.key async for info in reader.storage.list(prefix)]
        assert keys == sorted(k for k in model if k.startswith(prefix))
    snapshot = await repo._read_snapshot(reader.snapshot_id)
    for node, refs in snapshot.nodes.items():
        assert all(ref.count <= 8 for ref in refs)
        assert [ref.first for ref in refs] == sorted(ref.first for ref in refs)
        assert all(a.last < b.first for a, b in itertools.pairwise(refs))
        assert all(node_of(ref.first) == node == node_of(ref.last) for ref in refs)


async def test_expired_history_releases_its_manifests() -> None:
    repo = await Repository.create_async(in_memory_storage())
    await _values(repo, _array("a", 80, "old"))
    await _values(repo, _array("a", 80, "new"))  # every manifest of "a" rewritten
    await asyncio.sleep(1.05)
    now = datetime.now(UTC)
    await repo.expire_snapshots_async(now)
    summary = await repo.garbage_collect_async(now)
    assert summary.snapshots_deleted == 1
    assert summary.manifests_deleted == 11  # 80 chunks + zarr.json in 11 manifests of <= 8
    reader = await repo.readonly_session_async("main")
    assert bytes((await reader.storage.get("a/c/7/9")).data) == b"new79"


async def test_a_format_version_1_repository_opens_and_is_written_in_version_2() -> None:
    """Read old, write new: a version-1 snapshot (whole manifest inside) reads, and the first
    commit on it writes split manifests."""
    storage = in_memory_storage()

    def v1(file_type: str, body: dict[str, Any]) -> bytes:
        header = f"icechunk_storage {file_type} 1 zlib\n".encode()
        return header + zlib.compress(json.dumps(body).encode())

    entry = {"version": "5J1Q0000000000000000", "size": 2, "modified_ms": 1787000000000}
    manifest = {
        f"a/c/{i}": {**entry, "inline": base64.b64encode(b"v1").decode()} for i in range(20)
    }
    tip = "TTY3XWJVN7E10GRGMETG"
    for snapshot_id, parent, entries in ((INITIAL_SNAPSHOT_ID, None, {}), (tip, None, manifest)):
        info = {"parent_id": parent, "written_at": "2026-01-01T00:00:00+00:00", "message": "m"}
        body = {"id": snapshot_id, **info, "metadata": {}, "manifest": entries}
        await storage.put(f"snapshots/{snapshot_id}", v1("snapshot", body))
    index = {
        INITIAL_SNAPSHOT_ID: {"parent_id": None, "written_at": "2026-01-01T00:00:00+00:00",
                              "message": "init", "metadata": {}},
        tip: {"parent_id": INITIAL_SNAPSHOT_ID, "written_at": "2026-01-01T00:00:01+00:00",
              "message": "old", "metadata": {}},
    }  # fmt: skip
    info_body = {"branches": {"main": tip}, "tags": {}, "deleted_tags": [], "snapshots": index}
    await storage.put("repo", v1("repo-info", info_body))

    repo = await Repository.open_async(storage)
    old = await repo.readonly_session_async("main")
    assert bytes((await old.storage.get("a/c/7")).data) == b"v1"
    assert len([i async for i in old.storage.list("a/")]) == 20
    new = await _values(repo, {"a/c/7": b"v2"})
    head = bytes((await storage.get(f"snapshots/{new}")).data).split(b"\n", 1)[0]
    assert head == b"icechunk_storage snapshot 2 zlib"
    assert bytes((await storage.get("repo")).data).startswith(b"icechunk_storage repo-info 2 ")
    reader = await repo.readonly_session_async("main")
    assert bytes((await reader.storage.get("a/c/7")).data) == b"v2"
    assert bytes((await reader.storage.get("a/c/8")).data) == b"v1"

    await storage.put(f"snapshots/{tip}", b"icechunk_storage snapshot 3 zlib\n")
    with pytest.raises(RepositoryFormatError, match=r"format version 3.*reads versions 1 to 2"):
        await (await repo.readonly_session_async(snapshot_id=tip)).storage.get("a/c/1")


# --- local storage durability ------------------------------------------------------------------


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths fsynced (files and directories), and "syncfs" for each syncfs."""
    calls: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    def syncfs(fd: int) -> int:
        calls.append("syncfs")
        return 0

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(_local, "_syncfs", syncfs)
    return calls


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
async def test_local_plain_writes_are_not_fsynced_conditional_ones_and_flush_are(
    tmp_path: Path, fsyncs: list[str]
) -> None:
    storage = local_filesystem_storage(tmp_path)
    await storage.put("plain/a", b"a")
    await storage.copy("plain/a", "plain/b")
    assert fsyncs == []
    version = await storage.put("cond/a", b"a", mode="create")
    assert fsyncs[1:] == [str(tmp_path / "cond"), str(tmp_path)]  # the file, its directories
    fsyncs.clear()
    await storage.put("cond/a", b"b", mode=version)
    await storage.copy("cond/a", "cond/backup", if_version=await storage.put("cond/a", b"c"))
    assert str(tmp_path / "cond") in fsyncs
    assert len([p for p in fsyncs if p.startswith(str(tmp_path / ".icechunk-storage/tmp"))]) == 2
    fsyncs.clear()
    await storage.flush(["plain/a", "plain/b"])
    plain = [str(tmp_path / "plain/a"), str(tmp_path / "plain/b")]
    assert sorted(fsyncs[:2]) == plain  # the files first, then their directories
    assert sorted(fsyncs[2:]) == [str(tmp_path), str(tmp_path / "plain")]
    fsyncs.clear()
    await storage.flush([f"plain/{c}" for c in "ab" * 40])
    assert fsyncs == ["syncfs"]
    with pytest.raises(ObjectNotFoundError):
        await storage.flush(["plain/missing"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
async def test_a_commit_flushes_what_it_refers_to_before_the_info_object(
    tmp_path: Path, fsyncs: list[str]
) -> None:
    repo = await Repository.create_async(local_filesystem_storage(tmp_path))
    fsyncs.clear()
    session = await repo.writable_session_async("main")
    await session.storage.put("a/c/0", b"x" * 1000)
    await session.storage.put("a/zarr.json", b"{}")
    assert fsyncs == []  # writing chunks fsyncs nothing
    await session.commit_async("one")
    files = [p.removeprefix(str(tmp_path) + "/") for p in fsyncs]
    chunk = next(i for i, p in enumerate(files) if p.startswith("chunks/"))
    snapshot = next(i for i, p in enumerate(files) if p.startswith("snapshots/"))
    manifest = next(i for i, p in enumerate(files) if p.startswith("manifests/"))
    info = next(i for i, p in enumerate(files) if p.startswith(".icechunk-storage/tmp"))
    assert max(chunk, snapshot, manifest) < info  # durable before the info object is written


def test_local_storage_without_fcntl_is_refused_at_construction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "fcntl", None)
    with pytest.raises(ConfigurationError, match=r"POSIX file locks \(fcntl.flock\)"):
        local_filesystem_storage("/tmp/anywhere")
    code = "import sys; sys.modules['fcntl'] = None; import icechunk_storage, icechunk_storage.zarr"
    subprocess.run([sys.executable, "-c", code], check=True)  # importing never needs it


# --- a writer killed with SIGKILL --------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("where", ["before-commit", "in-commit"])
async def test_a_writer_killed_mid_work_leaves_a_consistent_repository(
    tmp_path: Path, where: str
) -> None:
    root = str(tmp_path / "repo")
    await Repository.create_async(local_filesystem_storage(root))
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    writer = context.Process(target=helpers.crash_writer, args=(root, where, ready))
    writer.start()
    try:
        assert await asyncio.to_thread(ready.wait, 120), "the writer never got there"
        assert writer.pid is not None
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.join(30)
        if writer.is_alive():
            writer.kill()
    assert writer.exitcode == -signal.SIGKILL

    repo = await Repository.open_async(local_filesystem_storage(root))
    history = await repo.ancestry_async(branch="main")
    assert [h.message for h in history] == ["the last complete commit", "Repository initialized"]
    reader = await repo.readonly_session_async("main")
    keys = [info.key async for info in reader.storage.list("")]
    assert keys == sorted(f"committed/c/{i}" for i in range(20))
    for i in range(20):
        got = await reader.storage.get(f"committed/c/{i}")
        assert bytes(got.data) == helpers.crash_value("committed", i)
    storage = repo.storage
    chunks = [info.key async for info in storage.list("chunks/")]
    assert len(chunks) == 40  # the uncommitted ones are there, referenced by nothing

    await asyncio.sleep(1.05)
    summary = await repo.garbage_collect_async(datetime.now(UTC))
    in_commit = where == "in-commit"
    assert summary == GCSummary(
        chunks_deleted=20,
        manifests_deleted=1 if in_commit else 0,  # 20 keys of one node (the writer's limit)
        snapshots_deleted=1 if in_commit else 0,
        bytes_deleted=summary.bytes_deleted,
    )
    assert len([info.key async for info in storage.list("chunks/")]) == 20
    for i in range(20):
        got = await reader.storage.get(f"committed/c/{i}")
        assert bytes(got.data) == helpers.crash_value("committed", i)


def test_the_scale_benchmark_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import repo_scale

    flags = ["--keys", "300", "--repeats", "1", "--put-count", "20", "--rounds", "1"]
    repo_scale.main([*flags, "--path", str(tmp_path)])
    out = capsys.readouterr().out
    assert "| 300 |" in out
    assert "| session put |" in out
    assert "| session put cost / storage.put cost, per round | median " in out
    assert os.listdir(tmp_path) == []  # everything it wrote is gone
    repo_scale.main(["--keys", "0", *flags[2:], "--path", str(tmp_path)])  # small writes only
    out = capsys.readouterr().out
    assert "| keys |" not in out
    assert "| session put |" in out
    assert os.listdir(tmp_path) == []
