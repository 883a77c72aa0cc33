"""Property-based tests: range splitting, and "local behaves like memory" over random ops."""

from __future__ import annotations

import asyncio
import itertools
import math
import tempfile
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from icechunk_storage import (
    OffsetByteRequest,
    RangeByteRequest,
    RangeNotSatisfiableError,
    Storage,
    StorageError,
    SuffixByteRequest,
    VersionInfo,
    in_memory_storage,
    local_filesystem_storage,
)
from icechunk_storage._ranges import ByteRequest, resolve_range, split_for_multipart, split_range


@given(
    start=st.integers(0, 10**9),
    size=st.integers(0, 10**7),
    ideal=st.integers(1, 10**7),
    max_parts=st.integers(1, 64),
)
def test_split_range_covers_the_range_in_near_equal_parts(
    start: int, size: int, ideal: int, max_parts: int
) -> None:
    parts = split_range(start, start + size, ideal, max_parts)
    if size == 0:
        assert parts == []
        return
    assert len(parts) == min(max(math.ceil(size / ideal), 1), max_parts)
    assert parts[0][0] == start
    assert parts[-1][1] == start + size
    for (_, end), (next_start, _) in itertools.pairwise(parts):
        assert end == next_start  # no gap, no overlap
    lengths = [end - begin for begin, end in parts]
    assert min(lengths) >= 1
    assert max(lengths) - min(lengths) <= 1
    assert lengths == sorted(lengths, reverse=True)  # the extra bytes go to the first parts


@given(
    size=st.integers(0, 10**9), ideal=st.integers(5 * 2**20, 2**30), max_parts=st.integers(1, 64)
)
def test_multipart_parts_are_equal_but_the_last_and_never_empty(
    size: int, ideal: int, max_parts: int
) -> None:
    parts = split_for_multipart(size, ideal, max_parts)
    assert parts[0][0] == 0
    assert parts[-1][1] == size
    lengths = [end - begin for begin, end in parts]
    if size:
        assert min(lengths) >= 1
        assert len(set(lengths[:-1])) <= 1
        assert lengths[-1] <= lengths[0]
    assert len(parts) <= max_parts


byte_requests = st.one_of(
    st.none(),
    st.tuples(st.integers(0, 300), st.integers(0, 300)).map(
        lambda pair: RangeByteRequest(min(pair), max(pair))
    ),
    st.integers(0, 300).map(OffsetByteRequest),
    st.integers(0, 300).map(SuffixByteRequest),
)


@given(size=st.integers(0, 200), byte_range=byte_requests)
def test_resolve_range_matches_http_semantics(size: int, byte_range: ByteRequest | None) -> None:
    data = bytes(range(size))
    if isinstance(byte_range, RangeByteRequest):
        expected_start, expected = byte_range.start, data[byte_range.start : byte_range.end]
    elif isinstance(byte_range, OffsetByteRequest):
        expected_start, expected = byte_range.offset, data[byte_range.offset :]
    elif isinstance(byte_range, SuffixByteRequest):
        expected_start, expected = 0, data[size - min(byte_range.suffix, size) :]
    else:
        expected_start, expected = 0, data
    if expected_start > size:
        try:
            resolve_range(byte_range, size)
        except RangeNotSatisfiableError:
            return
        raise AssertionError("a range starting past the end must be refused")
    start, end = resolve_range(byte_range, size)
    assert data[start:end] == expected


# --- the local filesystem behaves like memory ----------------------------------------------

keys = st.sampled_from(["a", "b", "dir/c", "dir/sub/d", "e/f"])
payloads = st.binary(max_size=64)
writes = st.tuples(st.just("put"), keys, payloads, st.sampled_from(["overwrite", "create"]))
operations = st.lists(
    st.one_of(
        writes,
        writes,  # twice: most interesting sequences need several objects
        writes,
        st.tuples(st.just("update"), keys, payloads, st.booleans()),
        st.tuples(st.just("get"), keys, byte_requests),
        st.tuples(st.just("head"), keys),
        st.tuples(st.just("delete"), keys),
        st.tuples(st.just("copy"), keys, keys, st.booleans()),
        st.tuples(st.just("list"), st.sampled_from(["", "dir", "dir/sub", "e", "zzz"])),
        st.tuples(st.just("list_dir"), st.sampled_from(["", "dir", "e"])),
        st.tuples(st.just("get_many"), st.lists(st.tuples(keys, byte_requests), max_size=6)),
    ),
    min_size=4,
    max_size=40,
)


async def _apply(storage: Storage, ops: list[tuple[Any, ...]]) -> list[object]:
    """Run ops and describe each outcome independently of how versions are spelled."""
    seen: dict[str, VersionInfo] = {}  # the version this client last saw, per key
    outcomes: list[object] = []
    for op in ops:
        try:
            outcomes.append(await _one(storage, op, seen))
        except StorageError as exc:
            outcomes.append(type(exc).__name__)
    return outcomes


async def _one(storage: Storage, op: tuple[Any, ...], seen: dict[str, VersionInfo]) -> object:
    name = op[0]
    if name == "put":
        seen[op[1]] = await storage.put(op[1], op[2], mode=op[3])
        return "ok"
    if name == "update":
        _, key, data, fresh = op
        version = seen.get(key, VersionInfo(etag='"never"')) if fresh else VersionInfo(etag='"x"')
        seen[key] = await storage.put(key, data, mode=version)
        return "ok"
    if name == "get":
        result = await storage.get(op[1], op[2])
        seen[op[1]] = result.version
        return bytes(result.data)
    if name == "head":
        info = await storage.head(op[1])
        return (info.key, info.size)
    if name == "delete":
        await storage.delete(op[1])
        return "ok"
    if name == "copy":
        _, source, destination, conditional = op
        await storage.copy(
            source, destination, if_version=seen.get(source) if conditional else None
        )
        return "ok"
    if name == "list":
        return sorted([(i.key, i.size) async for i in storage.list(op[1])])
    if name == "list_dir":
        listed = await storage.list_dir(op[1])
        return (sorted(i.key for i in listed.objects), sorted(listed.prefixes))
    results = await storage.get_many(op[1], missing_ok=True)
    return [None if r is None else bytes(r) for r in results]


@settings(max_examples=150, deadline=None)
@given(ops=operations)
def test_local_filesystem_behaves_like_memory(ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        memory = asyncio.run(_apply(in_memory_storage(), ops))
        local = asyncio.run(_apply(local_filesystem_storage(directory), ops))
    assert local == memory
