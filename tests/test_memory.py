"""The memory backend against the conformance suite."""

from __future__ import annotations

import asyncio

import pytest

from icechunk_storage import MemoryStorage, Storage, StorageError, in_memory_storage
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
