"""The memory backend against the conformance suite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from icechunk_storage import (
    MemoryStorage,
    PreconditionFailedError,
    Storage,
    StorageError,
    in_memory_storage,
)
from icechunk_storage._ranges import ByteRequest
from icechunk_storage._storage import GetResult
from tests.conformance import StorageConformance


class TestMemoryStorage(StorageConformance):
    @pytest.fixture
    def storage(self) -> Storage:
        return in_memory_storage()

    async def raw_put(self, storage: Storage, key: str, data: bytes) -> None:
        assert isinstance(storage, MemoryStorage)
        backend = in_memory_storage()
        await backend.put(key, data)
        storage._objects[key] = backend._objects[key]

    async def raw_get(self, storage: Storage, key: str) -> bytes | None:
        assert isinstance(storage, MemoryStorage)
        entry = storage._objects.get(key)
        return None if entry is None else entry.data


async def test_instances_do_not_share_data() -> None:
    first, second = in_memory_storage(), in_memory_storage()
    await first.put("k", b"x")
    assert not await second.exists("k")
    assert first != second


class _SlowMemory(MemoryStorage):
    """Every read waits, so a fetch can be cancelled while its workers are mid-read."""

    started = 0
    three_started = asyncio.Event()

    async def _get_objects(
        self, requests: list[tuple[str, ByteRequest | None]]
    ) -> list[GetResult | StorageError]:
        type(self).started += 1
        if type(self).started == 3:
            type(self).three_started.set()
        await asyncio.sleep(10)
        return await super()._get_objects(requests)


async def test_cancelling_a_fetch_mid_read_leaves_no_task() -> None:
    storage = _SlowMemory()
    for i in range(600):
        await storage.put(f"k/{i}", b"x")
    before = asyncio.all_tasks()
    task = asyncio.ensure_future(storage.get_many([(f"k/{i}", None) for i in range(600)]))
    await _SlowMemory.three_started.wait()  # 600 reads in batches of 256: 3 workers mid-read
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert asyncio.all_tasks() == before


def _write_in_child(pickled: bytes) -> str:
    """In a fresh process: unpickle the storage, overwrite 'k', return the new etag."""
    import asyncio
    import pickle

    storage = pickle.loads(pickled)

    async def write() -> str:
        version = await storage.put("other", b"new")
        return str(version.etag)

    return asyncio.run(write())


async def test_etags_stay_unique_in_a_process_that_unpickled_the_storage() -> None:
    """A version counter restarted in a new process would hand out an old object's version
    again, and a stale compare-and-swap would succeed there."""
    import multiprocessing
    import pickle
    from concurrent.futures import ProcessPoolExecutor

    storage = in_memory_storage()
    old = await storage.put("k", b"v1")
    await storage.put("k", b"v2")
    context = multiprocessing.get_context("spawn")
    pickled = pickle.dumps(storage)
    etags = []
    for _ in range(2):  # two fresh processes: a per-process counter gives both the same
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            loop = asyncio.get_running_loop()
            etags.append(await loop.run_in_executor(pool, _write_in_child, pickled))
    assert etags[0] != etags[1]
    assert old.etag not in etags
    copy = pickle.loads(pickle.dumps(storage))
    with pytest.raises(PreconditionFailedError):
        await copy.put("k", b"stale", mode=old)


async def test_delete_many_holds_a_bounded_number_of_batches() -> None:
    """However many keys stream in, only the workers' batches and a queue of at most
    ``_delete_batch_concurrency`` batches are held while deletions are slow."""

    class Slow(MemoryStorage):
        _delete_batch_size = 10
        _delete_batch_concurrency = 3

        async def _delete_objects(
            self, paths: list[str]
        ) -> tuple[dict[str, int | None], dict[str, str]]:
            await gate.wait()
            return await super()._delete_objects(paths)

    gate = asyncio.Event()
    storage = Slow()
    produced = 0

    async def keys() -> AsyncIterator[str]:
        nonlocal produced
        for index in range(1000):
            produced += 1
            yield f"k{index}"

    task = asyncio.create_task(storage.delete_many(keys()))
    for _ in range(50):
        await asyncio.sleep(0)
    # 3 batches in the workers, 3 queued, one being filled: never all 1,000 keys.
    assert produced <= (3 + 3 + 1) * 10 + 1
    gate.set()
    result = await task
    assert produced == 1000
    assert result.deleted_objects == 0  # nothing was there; nothing failed
    assert result.errors == {}
