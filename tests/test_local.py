"""The local filesystem backend against the conformance suite, plus what only it promises."""

from __future__ import annotations

import asyncio
import errno
import multiprocessing
import os
from pathlib import Path

import pytest

from icechunk_storage import (
    AlreadyExistsError,
    ConfigurationError,
    InvalidKeyError,
    ObjectNotFoundError,
    PreconditionFailedError,
    Storage,
    StorageSettings,
    VersionInfo,
    local_filesystem_storage,
)
from icechunk_storage._local import RESERVED, LocalFileSystemStorage
from tests.conformance import StorageConformance


class TestLocalFileSystemStorage(StorageConformance):
    @pytest.fixture
    def storage(self, tmp_path: Path) -> Storage:
        return local_filesystem_storage(tmp_path / "root")

    async def raw_put(self, storage: Storage, key: str, data: bytes) -> None:
        assert isinstance(storage, LocalFileSystemStorage)
        file = Path(storage.root, key)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(data)

    async def raw_get(self, storage: Storage, key: str) -> bytes | None:
        assert isinstance(storage, LocalFileSystemStorage)
        file = Path(storage.root, key)
        return file.read_bytes() if file.is_file() else None


async def test_construction_does_no_io(tmp_path: Path) -> None:
    storage = local_filesystem_storage(tmp_path / "not" / "yet")
    assert not (tmp_path / "not").exists()
    assert not await storage.exists("x")
    await storage.put("a/b", b"x")
    assert (tmp_path / "not" / "yet" / "a" / "b").read_bytes() == b"x"


def test_bad_path_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="directory path"):
        local_filesystem_storage("")
    with pytest.raises(ValueError, match="directory path"):
        local_filesystem_storage(42)  # type: ignore[arg-type]


async def test_reserved_directory_is_neither_key_nor_listed(tmp_path: Path) -> None:
    storage = local_filesystem_storage(tmp_path)
    version = await storage.put("k", b"1")
    await storage.put("k", b"2", mode=version)  # creates a lock file under the reserved dir
    assert (tmp_path / RESERVED).is_dir()
    assert [i.key async for i in storage.list()] == ["k"]
    assert (await storage.list_dir("")).prefixes == []
    with pytest.raises(InvalidKeyError, match="reserved"):
        await storage.put(f"{RESERVED}/tmp/x", b"x")


async def test_deletes_remove_empty_directories(tmp_path: Path) -> None:
    storage = local_filesystem_storage(tmp_path)
    await storage.put("a/b/c/1", b"x")
    await storage.put("a/2", b"x")
    await storage.delete("a/b/c/1")
    assert not (tmp_path / "a" / "b").exists()
    assert (tmp_path / "a" / "2").exists()
    await storage.delete_many(["a/2"])
    assert not (tmp_path / "a").exists()


async def test_no_temporary_file_is_left_behind(tmp_path: Path) -> None:
    storage = local_filesystem_storage(tmp_path)
    version = await storage.put("k", b"1", mode="create")
    with pytest.raises(AlreadyExistsError):
        await storage.put("k", b"2", mode="create")
    await storage.put("k", b"3")
    with pytest.raises(PreconditionFailedError):
        await storage.put("k", b"2", mode=version)  # stale: the create's version
    await storage.put("k", b"4", mode=(await storage.head("k")).version)
    assert version != (await storage.head("k")).version
    assert os.listdir(tmp_path / RESERVED / "tmp") == []


def _increment_many(root: str, times: int) -> None:
    async def run() -> None:
        storage = local_filesystem_storage(root)
        for _ in range(times):
            while True:
                current = await storage.get("counter")
                value = int(bytes(current.data)) + 1
                try:
                    await storage.put("counter", str(value).encode(), mode=current.version)
                    break
                except PreconditionFailedError:
                    continue

    asyncio.run(run())


async def test_compare_and_swap_is_safe_across_processes(tmp_path: Path) -> None:
    storage = local_filesystem_storage(tmp_path)
    await storage.put("counter", b"0")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_increment_many, args=(str(tmp_path), 25)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        await asyncio.to_thread(worker.join, 120)
        assert worker.exitcode == 0
    assert bytes((await storage.get("counter")).data) == b"100"


async def test_metadata_lives_with_the_file_and_travels_with_copies(tmp_path: Path) -> None:
    storage = local_filesystem_storage(tmp_path)
    await storage.put("m", b"x", content_type="text/plain", metadata={"kind": "snapshot"})
    assert os.getxattr(tmp_path / "m", "user.icechunk.content_type") == b"text/plain"
    await storage.copy("m", "n")
    info = await storage.head("n")
    assert (info.content_type, info.metadata) == ("text/plain", {"kind": "snapshot"})
    await storage.put("m", b"y")  # a plain overwrite replaces them, as on S3
    info = await storage.head("m")
    assert (info.content_type, info.metadata) == (None, {})


async def test_unsafe_use_metadata_false_drops_metadata(tmp_path: Path) -> None:
    storage = local_filesystem_storage(tmp_path).with_settings(
        StorageSettings(unsafe_use_metadata=False)
    )
    await storage.put("m", b"x", content_type="text/plain", metadata={"kind": "a"})
    info = await storage.head("m")
    assert (info.content_type, info.metadata) == (None, {})


async def test_filesystem_without_xattrs_refuses_metadata_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(*args: object) -> None:
        raise OSError(errno.ENOTSUP, "Operation not supported")

    monkeypatch.setattr(os, "setxattr", unsupported)
    storage = local_filesystem_storage(tmp_path)
    with pytest.raises(ConfigurationError, match=r"unsafe_use_metadata=False"):
        await storage.put("m", b"x", metadata={"kind": "a"})
    assert not await storage.exists("m")  # nothing half-written
    # Conditional writes stamp only our own write id: those still work there.
    version = await storage.put("c", b"1", mode="create")
    await storage.put("c", b"2", mode=version)
    assert bytes((await storage.get("c")).data) == b"2"


# --- hops to the thread pool ---------------------------------------------------------------


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every batch of calls that crossed to the pool."""
    from icechunk_storage import _local

    sizes: list[int] = []
    real = _local._run_batch

    def counted(loop: asyncio.AbstractEventLoop, batch: list[object]) -> None:
        sizes.append(len(batch))
        real(loop, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(_local, "_run_batch", counted)
    return sizes


async def test_calls_made_together_cross_to_the_pool_together(
    tmp_path: Path, batches: list[int]
) -> None:
    """One hop per batch, not per call: small puts issued in one turn of the loop run on one
    pool thread, up to 32 per hop; large ones go on their own (they gain from threads)."""
    storage = local_filesystem_storage(str(tmp_path))
    await asyncio.gather(*(storage.put(f"small/{i}", b"x") for i in range(40)))
    assert batches == [32, 8]
    batches.clear()
    big = b"y" * (600 * 1024)
    await asyncio.gather(*(storage.put(f"big/{i}", big) for i in range(3)))
    assert batches == [2, 1]  # a batch closes at 1 MiB of data
    listed = [info.key async for info in storage.list("")]
    assert len(listed) == 43
    batches.clear()
    await storage.put("alone", b"z")
    assert batches == [1]


async def test_each_call_of_a_batch_gets_its_own_outcome(
    tmp_path: Path, batches: list[int]
) -> None:
    storage = local_filesystem_storage(str(tmp_path))
    await storage.put("taken", b"first")
    batches.clear()
    outcomes = await asyncio.gather(
        storage.put("a", b"1"),
        storage.put("taken", b"second", mode="create"),
        storage.get("missing"),
        storage.put("b", b"2"),
        return_exceptions=True,
    )
    assert batches == [4]
    assert isinstance(outcomes[0], VersionInfo)
    assert isinstance(outcomes[1], AlreadyExistsError)
    assert isinstance(outcomes[2], ObjectNotFoundError)
    assert isinstance(outcomes[3], VersionInfo)
    assert bytes((await storage.get("taken")).data) == b"first"
    assert bytes((await storage.get("b")).data) == b"2"


async def test_a_cancelled_call_does_not_disturb_its_batch(tmp_path: Path) -> None:
    storage = local_filesystem_storage(str(tmp_path))
    tasks = [asyncio.create_task(storage.put(f"k{i}", b"v")) for i in range(5)]
    await asyncio.sleep(0)  # all five submitted in one turn
    tasks[2].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[2], asyncio.CancelledError)
    assert all(isinstance(r, VersionInfo) for i, r in enumerate(results) if i != 2)
    # The cancelled put may still have landed (a thread cannot be stopped), never partly.
    for i in range(5):
        if i != 2:
            assert bytes((await storage.get(f"k{i}")).data) == b"v"
