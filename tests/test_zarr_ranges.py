"""ZarrStore.get_ranges (zarr >= 3.3 reads a shard's inner chunks with it): zarr's coalescing
policy, one call of the fetch path, zarr's error contract, and fewer requests than zarr's own
fallback for a sharded array's partial read."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import zarr
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, Store, SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype

from icechunk_storage import InstrumentedStorage, Storage, in_memory_storage
from icechunk_storage._ranges import coalesce_ranges
from icechunk_storage.zarr import ZarrStore

PROTOTYPE = default_buffer_prototype()
DATA = bytes(range(256)) * 64  # 16 KiB


def test_coalescing_follows_zarrs_policy() -> None:
    ranges = [(100, 110), (0, 10), (20, 30), (1000, 1010), (25, 40)]
    assert coalesce_ranges(ranges, max_gap=10, max_size=100) == [
        (0, 40, [1, 2, 4]),  # gaps of 10 and overlap merge, in order of start
        (100, 110, [0]),  # a gap of 60 > 10 does not
        (1000, 1010, [3]),
    ]
    assert coalesce_ranges(ranges, max_gap=10, max_size=35) == [
        (0, 30, [1, 2]),  # (0, 40) would exceed 35 bytes
        (25, 40, [4]),
        (100, 110, [0]),
        (1000, 1010, [3]),
    ]
    assert coalesce_ranges([(0, 500)], max_gap=0, max_size=10) == [(0, 500, [0])]
    assert coalesce_ranges([], max_gap=0, max_size=10) == []


async def _ranges(store: ZarrStore, key: str, requests: list[Any], **options: int) -> list[Any]:
    got: list[Any] = [None] * len(requests)
    batches = 0
    async for batch in store.get_ranges(key, requests, prototype=PROTOTYPE, **options):
        batches += 1
        for index, buffer in batch:
            assert buffer is not None
            got[index] = buffer.to_bytes()
    return [batches, got]


async def test_get_ranges_returns_every_range_by_index_in_one_fetch() -> None:
    counted = InstrumentedStorage[Storage](in_memory_storage())
    await counted.put("shard", DATA)
    store = ZarrStore(counted)
    requests: list[Any] = [
        RangeByteRequest(10, 20),
        None,
        RangeByteRequest(0, 5),
        SuffixByteRequest(3),
        RangeByteRequest(15, 40),  # overlaps the first
        OffsetByteRequest(16380),
        RangeByteRequest(9000, 9001),
    ]
    counted.reset()
    batches, got = await _ranges(store, "shard", requests, max_gap_bytes=100)
    assert got == [
        DATA[10:20],
        DATA,
        DATA[0:5],
        DATA[-3:],
        DATA[15:40],
        DATA[16380:],
        DATA[9000:9001],
    ]
    assert batches == 2 + 3  # (0, 40) and (9000, 9001) merged reads, then three others
    assert counted.stats["get_many"].calls == 1


async def test_get_ranges_missing_object_and_errors_come_as_a_group() -> None:
    store = ZarrStore(in_memory_storage())
    with pytest.raises(ExceptionGroup) as caught:
        await _ranges(store, "absent", [RangeByteRequest(0, 1)])
    assert caught.group_contains(FileNotFoundError)
    await store.storage.put("k", b"abc")
    with pytest.raises(ExceptionGroup) as caught:
        await _ranges(store, "k", [RangeByteRequest(10, 20)])  # starts past the end
    assert caught.group_contains(ValueError)


class _ZarrFallback(ZarrStore):
    """zarr's own Store.get_ranges: its coalescer over one ``get`` per merged range."""

    get_ranges = Store.get_ranges if hasattr(Store, "get_ranges") else None  # type: ignore[assignment]


def _column_read_requests(store_type: type[ZarrStore]) -> int:
    counted = InstrumentedStorage[Storage](in_memory_storage())
    array = zarr.create_array(
        store_type(counted),
        name="a",
        shape=(2000, 2000),
        shards=(2000, 2000),
        chunks=(100, 100),
        dtype="f4",
        compressors=None,
    )
    array[:] = np.arange(4_000_000, dtype="f4").reshape(2000, 2000)
    counted.reset()
    column = np.asarray(array[:, 0:100])  # 20 inner chunks, scattered through the shard
    assert np.array_equal(column[:, 7], np.arange(7, 4_000_000, 2000, dtype="f4"))
    return counted.totals().requests


@pytest.mark.skipif(not hasattr(Store, "get_ranges"), reason="zarr < 3.3 has no get_ranges")
def test_sharded_partial_read_makes_fewer_requests_than_zarrs_fallback() -> None:
    ours, fallback = _column_read_requests(ZarrStore), _column_read_requests(_ZarrFallback)
    # zarr's fallback: the shard index, then one get per merged range; ours: the index, then
    # one fetch-path call that the memory (and local) backend serves in one batched request.
    assert ours == 2
    assert fallback > ours
