"""The conformance suite: one set of assertions every storage must pass (needs pytest and
pytest-asyncio, in ``asyncio_mode = "auto"``).

A backend, ours or a third party's, proves itself with a ~20-line subclass (see
``tests/test_memory.py``)::

    class TestMyBackend(StorageConformance):
        @pytest.fixture
        def storage(self, ...) -> Storage: ...        # a fresh storage over an empty location

        async def raw_put(self, storage, key, data): ...   # write bypassing the storage
        async def raw_get(self, storage, key): ...         # read bypassing it (None if absent)

Class attributes size the load (``many_keys``, ``concurrent_writers``) and declare what the
backend does not keep (``stores_metadata``). A missing capability is skipped with a reason,
never overridden to pass. :class:`ReadOnlyStorageConformance` is the same for a storage that
must refuse every write (``storage`` is the read-only one, ``raw_put`` seeds its data).
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import ClassVar

import pytest

from icechunk_storage import (
    AlreadyExistsError,
    ConfigurationError,
    InstrumentedStorage,
    InvalidKeyError,
    ObjectInfo,
    ObjectNotFoundError,
    OffsetByteRequest,
    PreconditionFailedError,
    RangeByteRequest,
    RangeNotSatisfiableError,
    Storage,
    StorageConcurrencySettings,
    StorageError,
    StorageSettings,
    SuffixByteRequest,
    VersionInfo,
)
from icechunk_storage._ranges import ByteRequest

DATA = bytes(range(256)) * 4  # 1 KiB, every byte value

# (object, range, expected) including the edges of the contract.
RANGE_CASES: list[tuple[bytes, ByteRequest | None, bytes]] = [
    (DATA, None, DATA),
    (b"", None, b""),
    (DATA, RangeByteRequest(0, 10), DATA[:10]),
    (DATA, RangeByteRequest(42, 44), DATA[42:44]),
    (DATA, RangeByteRequest(1000, 5000), DATA[1000:]),  # runs past the end: truncated
    (DATA, RangeByteRequest(1024, 2000), b""),  # starts exactly at the end
    (DATA, RangeByteRequest(5, 5), b""),
    (b"", RangeByteRequest(0, 0), b""),
    (b"", RangeByteRequest(0, 10), b""),
    (DATA, OffsetByteRequest(0), DATA),
    (DATA, OffsetByteRequest(1000), DATA[1000:]),
    (DATA, OffsetByteRequest(1024), b""),
    (b"", OffsetByteRequest(0), b""),
    (DATA, SuffixByteRequest(10), DATA[-10:]),
    (DATA, SuffixByteRequest(5000), DATA),  # suffix longer than the object: all of it
    (DATA, SuffixByteRequest(0), b""),
    (b"", SuffixByteRequest(3), b""),
]

PAST_END_CASES: list[tuple[bytes, ByteRequest]] = [
    (DATA, RangeByteRequest(1025, 1030)),
    (DATA, OffsetByteRequest(2000)),
    (b"", RangeByteRequest(1, 2)),
    (b"", OffsetByteRequest(1)),
]

INVALID_KEYS = ["", "/abs", "a/../b", "..", "a//b", "a/./b", "nul\x00", "tab\tkey", "back\\slash"]


def _split_settings() -> StorageSettings:
    """Force concurrent part reads of small objects: 7-byte parts, at most 5 of them."""
    return StorageSettings(
        concurrency=StorageConcurrencySettings(
            ideal_concurrent_request_size=7, max_concurrent_requests_for_object=5
        )
    )


async def _collect(storage: Storage, prefix: str = "") -> list[ObjectInfo]:
    return [info async for info in storage.list(prefix)]


__all__ = ["ReadOnlyStorageConformance", "StorageConformance"]


class StorageConformance:
    """Every backend's contract tests. See the module docstring for how to subclass."""

    many_keys: ClassVar[int] = 2000
    concurrent_writers: ClassVar[int] = 50
    stores_metadata: ClassVar[bool] = True
    identical_rewrite_changes_version: ClassVar[bool] = True
    """False where the version is a content hash (S3 ETags are the MD5 of the bytes)."""

    @pytest.fixture
    def storage(self) -> Storage:
        raise NotImplementedError("a backend's test class provides the storage fixture")

    async def raw_put(self, storage: Storage, key: str, data: bytes) -> None:
        raise NotImplementedError

    async def raw_get(self, storage: Storage, key: str) -> bytes | None:
        raise NotImplementedError

    @pytest.fixture(autouse=True)
    async def _release(self, storage: Storage) -> object:
        yield None
        await storage.aclose()

    # --- reads ---------------------------------------------------------------------------

    async def test_put_then_get_round_trips(self, storage: Storage) -> None:
        version = await storage.put("a/b/c", DATA)
        result = await storage.get("a/b/c")
        assert bytes(result.data) == DATA
        assert result.version == version
        assert await self.raw_get(storage, "a/b/c") == DATA

    async def test_reads_what_was_written_behind_its_back(self, storage: Storage) -> None:
        await self.raw_put(storage, "raw/key", b"written directly")
        assert bytes((await storage.get("raw/key")).data) == b"written directly"

    @pytest.mark.parametrize(("data", "byte_range", "expected"), RANGE_CASES)
    async def test_byte_ranges(
        self, storage: Storage, data: bytes, byte_range: ByteRequest | None, expected: bytes
    ) -> None:
        await storage.put("obj", data)
        result = await storage.get("obj", byte_range)
        assert bytes(result.data) == expected
        assert result.version == (await storage.head("obj")).version

    @pytest.mark.parametrize(("data", "byte_range", "expected"), RANGE_CASES)
    async def test_byte_ranges_read_in_parts(
        self, storage: Storage, data: bytes, byte_range: ByteRequest | None, expected: bytes
    ) -> None:
        split = storage.with_settings(_split_settings())
        await split.put("obj", data)
        assert bytes((await split.get("obj", byte_range)).data) == expected
        await split.aclose()

    async def test_parts_are_issued_as_separate_requests(self, storage: Storage) -> None:
        split = InstrumentedStorage(storage.with_settings(_split_settings()))
        await split.put("obj", DATA)
        result = await split.get("obj", RangeByteRequest(3, 33))
        assert bytes(result.data) == DATA[3:33]
        assert split.stats["get"].requests == 5  # 30 bytes / 7 per part, capped at 5 parts
        await split.aclose()

    @pytest.mark.parametrize(("data", "byte_range"), PAST_END_CASES)
    async def test_range_starting_past_the_end_is_a_clear_error(
        self, storage: Storage, data: bytes, byte_range: ByteRequest
    ) -> None:
        await storage.put("obj", data)
        with pytest.raises(RangeNotSatisfiableError, match="past the end"):
            await storage.get("obj", byte_range)
        with pytest.raises(RangeNotSatisfiableError, match="past the end"):
            await storage.with_settings(_split_settings()).get("obj", byte_range)

    async def test_wrong_range_type_is_refused(self, storage: Storage) -> None:
        await storage.put("obj", DATA)
        with pytest.raises(TypeError, match="Unexpected byte_range"):
            await storage.get("obj", (0, 2))  # type: ignore[arg-type]

    async def test_missing_object(self, storage: Storage) -> None:
        with pytest.raises(ObjectNotFoundError):
            await storage.get("missing")
        with pytest.raises(FileNotFoundError):
            await storage.get("missing", RangeByteRequest(0, 10))
        with pytest.raises(ObjectNotFoundError):
            await storage.with_settings(_split_settings()).get("missing", RangeByteRequest(0, 50))
        with pytest.raises(ObjectNotFoundError):
            await storage.head("missing")
        assert not await storage.exists("missing")

    async def test_head(self, storage: Storage) -> None:
        version = await storage.put("h", DATA)
        info = await storage.head("h")
        assert info.key == "h"
        assert info.size == len(DATA)
        assert info.version == version
        assert isinstance(info.last_modified, datetime)
        assert info.last_modified.tzinfo is not None
        assert await storage.exists("h")

    async def test_metadata_and_content_type(self, storage: Storage) -> None:
        if not self.stores_metadata:
            pytest.skip("this backend does not keep content type or user metadata")
        await storage.put("m", b"x", content_type="application/json", metadata={"ic_kind": "a"})
        info = await storage.head("m")
        assert info.content_type == "application/json"
        assert info.metadata["ic_kind"] == "a"

    async def test_version_changes_whenever_content_is_written(self, storage: Storage) -> None:
        first = await storage.put("v", b"same")
        second = await storage.put("v", b"same")
        third = await storage.put("v", b"different")
        assert third not in (first, second)
        assert (first != second) is self.identical_rewrite_changes_version
        assert (await storage.head("v")).version == third

    async def test_conditional_read(self, storage: Storage) -> None:
        version = await storage.put("c", b"one")
        assert await storage.get_if_changed("c", version) is None
        newer = await storage.put("c", b"two")
        changed = await storage.get_if_changed("c", version)
        assert changed is not None
        assert bytes(changed.data) == b"two"
        assert changed.version == newer
        assert await storage.get_if_changed("c", VersionInfo(etag='"nope"')) is not None
        with pytest.raises(ObjectNotFoundError):
            await storage.get_if_changed("gone", version)

    # --- writes ----------------------------------------------------------------------------

    async def test_create_only(self, storage: Storage) -> None:
        assert storage.capabilities.conditional_create
        version = await storage.put("k", b"first", mode="create")
        with pytest.raises(AlreadyExistsError):
            await storage.put("k", b"second", mode="create")
        with pytest.raises(FileExistsError):
            await storage.put("k", b"second", mode=VersionInfo())
        result = await storage.get("k")
        assert (bytes(result.data), result.version) == (b"first", version)

    async def test_a_refused_condition_costs_one_request(self, storage: Storage) -> None:
        """A conditional write refused on its only send failed on what was there before it:
        no read-back of the write id follows, so a refusal is one round trip."""
        counted = InstrumentedStorage(storage)
        first = await counted.put("k", b"1", mode="create")
        await counted.put("k", b"2")
        counted.reset()
        with pytest.raises(AlreadyExistsError):
            await counted.put("k", b"x", mode="create")
        with pytest.raises(PreconditionFailedError):
            await counted.put("k", b"y", mode=first)
        # At most one request each (a session decides in memory and makes none); a
        # read-back would add a HEAD to each.
        assert counted.stats["put"].requests <= 2
        assert counted.stats["head"].requests == 0
        assert bytes((await storage.get("k")).data) == b"2"

    async def test_update_only_if_still_at_version(self, storage: Storage) -> None:
        assert storage.capabilities.conditional_update
        first = await storage.put("k", b"1")
        second = await storage.put("k", b"2", mode=first)
        assert second != first
        with pytest.raises(PreconditionFailedError):
            await storage.put("k", b"3", mode=first)
        assert bytes((await storage.get("k")).data) == b"2"
        with pytest.raises(PreconditionFailedError):
            await storage.put("never-written", b"x", mode=first)
        assert not await storage.exists("never-written")

    async def test_unsafe_settings_drop_the_conditions(self, storage: Storage) -> None:
        unsafe = storage.with_settings(
            StorageSettings(
                unsafe_use_conditional_create=False, unsafe_use_conditional_update=False
            )
        )
        assert not unsafe.capabilities.conditional_create
        assert not unsafe.capabilities.conditional_update
        stale = await unsafe.put("k", b"1", mode="create")
        await unsafe.put("k", b"2")
        await unsafe.put("k", b"3", mode="create")  # would be refused with the condition
        await unsafe.put("k", b"4", mode=stale)  # likewise
        assert bytes((await storage.get("k")).data) == b"4"
        await unsafe.aclose()

    async def test_bad_mode_and_data_are_refused_before_any_write(self, storage: Storage) -> None:
        with pytest.raises(ConfigurationError, match="mode"):
            await storage.put("k", b"x", mode="sometimes")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="bytes"):
            await storage.put("k", "text")  # type: ignore[arg-type]
        assert await _collect(storage) == []

    async def test_copy(self, storage: Storage) -> None:
        version = await storage.put("src", DATA)
        await storage.copy("src", "dst")
        assert bytes((await storage.get("dst")).data) == DATA
        await storage.copy("src", "dst2", if_version=version)
        assert bytes((await storage.get("dst2")).data) == DATA
        await storage.put("src", b"changed")
        with pytest.raises(PreconditionFailedError):
            await storage.copy("src", "dst3", if_version=version)
        assert not await storage.exists("dst3")
        with pytest.raises(ObjectNotFoundError):
            await storage.copy("missing", "dst4")

    async def test_empty_and_binary_objects(self, storage: Storage) -> None:
        await storage.put("empty", b"")
        assert bytes((await storage.get("empty")).data) == b""
        assert (await storage.head("empty")).size == 0
        await storage.put("view", memoryview(DATA)[10:20])
        assert bytes((await storage.get("view")).data) == DATA[10:20]

    # --- concurrency -----------------------------------------------------------------------

    async def test_concurrent_create_only_writers_exactly_one_wins(self, storage: Storage) -> None:
        async def writer(index: int) -> int | None:
            try:
                await storage.put("race", str(index).encode(), mode="create")
            except AlreadyExistsError:
                return None
            return index

        outcomes = await asyncio.gather(*(writer(i) for i in range(self.concurrent_writers)))
        winners = [i for i in outcomes if i is not None]
        assert len(winners) == 1
        assert bytes((await storage.get("race")).data) == str(winners[0]).encode()

    async def test_concurrent_compare_and_swap_loses_no_update(self, storage: Storage) -> None:
        await storage.put("counter", b"0")

        async def increment() -> None:
            while True:
                current = await storage.get("counter")
                value = int(bytes(current.data)) + 1
                try:
                    await storage.put("counter", str(value).encode(), mode=current.version)
                    return
                except PreconditionFailedError:
                    continue

        await asyncio.gather(*(increment() for _ in range(self.concurrent_writers)))
        assert int(bytes((await storage.get("counter")).data)) == self.concurrent_writers

    # --- the chunk fetch path --------------------------------------------------------------

    async def test_get_many_returns_results_in_request_order(self, storage: Storage) -> None:
        for i in range(20):
            await storage.put(f"chunks/{i}", DATA[i : i + 50])
        requests: list[tuple[str, ByteRequest | None]] = [
            (f"chunks/{i}", None) for i in reversed(range(20))
        ]
        requests += [
            ("chunks/3", RangeByteRequest(2, 10)),
            ("chunks/3", SuffixByteRequest(4)),
            ("chunks/3", OffsetByteRequest(45)),
            ("chunks/3", None),
            ("chunks/4", SuffixByteRequest(0)),
        ]
        results = await storage.get_many(requests)
        expected = [DATA[i : i + 50] for i in reversed(range(20))]
        chunk3 = DATA[3:53]
        expected += [chunk3[2:10], chunk3[-4:], chunk3[45:], chunk3, b""]
        assert [bytes(r) if r is not None else None for r in results] == expected

    async def test_get_many_splits_large_ranges(self, storage: Storage) -> None:
        split = InstrumentedStorage(storage.with_settings(_split_settings()))
        await split.put("big", DATA)
        results = await split.get_many([("big", RangeByteRequest(0, 35)), ("big", None)])
        assert [bytes(r or b"") for r in results] == [DATA[:35], DATA]
        assert split.stats["get_many"].requests >= 6  # 5 parts for the range, 1+ for the rest
        await split.aclose()

    async def test_get_many_missing_keys(self, storage: Storage) -> None:
        await storage.put("here", b"x")
        with pytest.raises(ObjectNotFoundError):
            await storage.get_many([("here", None), ("not-here", None)])
        results = await storage.get_many(
            [("here", None), ("not-here", None), ("here", RangeByteRequest(0, 1))],
            missing_ok=True,
        )
        assert [None if r is None else bytes(r) for r in results] == [b"x", None, b"x"]
        assert await storage.get_many([]) == []

    async def test_get_many_refuses_bad_input_before_reading(self, storage: Storage) -> None:
        counted = InstrumentedStorage(storage)
        with pytest.raises(InvalidKeyError):
            await counted.get_many([("fine", None), ("../escape", None)])
        with pytest.raises(TypeError):
            await counted.get_many([("fine", slice(0, 2))])  # type: ignore[list-item]
        assert counted.stats["get_many"].requests == 0

    @pytest.mark.parametrize("bare", [["ab"], ["a/c/0"], [b"ab"], [("k", None, None)]])
    async def test_get_many_refuses_bare_keys(self, storage: Storage, bare: list[object]) -> None:
        with pytest.raises(TypeError, match=r"expects \(key, byte_range\) pairs"):
            await storage.get_many(bare)  # type: ignore[arg-type]

    async def test_errors_name_the_key_relative_to_the_prefix(self, storage: Storage) -> None:
        await storage.put("here", b"x")
        failing: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("missing", lambda: storage.get("missing")),
            ("missing", lambda: storage.get("missing", RangeByteRequest(0, 1))),
            ("missing", lambda: storage.head("missing")),
            ("missing", lambda: storage.get_many([("missing", None)])),
            ("missing", lambda: storage.copy("missing", "elsewhere")),
            ("here", lambda: storage.put("here", b"z", mode="create")),
        ]
        if storage.capabilities.conditional_update:
            stale = VersionInfo(etag='"stale"')
            failing.append(("here", lambda: storage.put("here", b"z", mode=stale)))
        for key, call in failing:
            with pytest.raises(StorageError) as caught:
                await call()
            assert getattr(caught.value, "key", key) == key
            assert repr(key) in str(caught.value)
            if storage.prefix:
                assert storage.prefix not in str(caught.value)

    async def test_get_many_error_cancels_the_rest_and_leaves_no_task(
        self, storage: Storage
    ) -> None:
        for i in range(30):
            await storage.put(f"k/{i}", b"x")
        requests: list[tuple[str, ByteRequest | None]] = [(f"k/{i}", None) for i in range(30)]
        requests.insert(5, ("k/missing", None))
        before = asyncio.all_tasks()
        with pytest.raises(ObjectNotFoundError):
            await storage.get_many(requests)
        assert asyncio.all_tasks() == before

        task = asyncio.ensure_future(storage.get_many(requests[6:] * 20))
        await asyncio.sleep(0.002)
        task.cancel()  # fast backends may already be done: either way no task may remain
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert asyncio.all_tasks() == before

    # --- listing ---------------------------------------------------------------------------

    async def test_list_normalizes_prefixes(self, storage: Storage) -> None:
        for key in ["a/1", "a/2", "a/b/3", "ab/4", "c"]:
            await storage.put(key, key.encode())
        assert sorted(i.key for i in await _collect(storage, "a")) == ["a/1", "a/2", "a/b/3"]
        assert sorted(i.key for i in await _collect(storage, "a/")) == ["a/1", "a/2", "a/b/3"]
        everything = ["a/1", "a/2", "a/b/3", "ab/4", "c"]
        assert sorted(i.key for i in await _collect(storage, "")) == everything
        assert sorted(i.key for i in await _collect(storage, "/")) == everything
        assert await _collect(storage, "nothing") == []
        sizes = {i.key: i.size for i in await _collect(storage)}
        assert sizes == {key: len(key) for key in everything}
        assert all(i.last_modified is not None for i in await _collect(storage))

    async def test_list_dir(self, storage: Storage) -> None:
        for key in ["a/1", "a/2", "a/b/3", "a/c/d/4", "ab/4", "c"]:
            await storage.put(key, b"x")
        top = await storage.list_dir("")
        assert sorted(i.key for i in top.objects) == ["c"]
        assert sorted(top.prefixes) == ["a/", "ab/"]
        under_a = await storage.list_dir("a")
        assert sorted(i.key for i in under_a.objects) == ["a/1", "a/2"]
        assert sorted(under_a.prefixes) == ["a/b/", "a/c/"]
        with_slash = await storage.list_dir("a/")
        assert sorted(i.key for i in with_slash.objects) == ["a/1", "a/2"]
        assert sorted(with_slash.prefixes) == ["a/b/", "a/c/"]

    async def test_list_thousands_of_keys(self, storage: Storage) -> None:
        keys = {f"many/{i:05d}" for i in range(self.many_keys)}
        await _put_all(storage, keys)
        assert {i.key for i in await _collect(storage, "many")} == keys

    # --- deletes ---------------------------------------------------------------------------

    async def test_delete(self, storage: Storage) -> None:
        await storage.put("d", b"x")
        await storage.delete("d")
        assert not await storage.exists("d")
        assert await self.raw_get(storage, "d") is None
        await storage.delete("d")  # missing is not an error

    async def test_delete_many_reports_objects_and_bytes(self, storage: Storage) -> None:
        keys = {f"del/{i:05d}" for i in range(self.many_keys)}
        await _put_all(storage, keys, size=3)
        await storage.put("keep/1", b"x")
        result = await storage.delete_many(storage.list("del"))
        assert result.deleted_objects == len(keys)
        assert result.deleted_bytes == 3 * len(keys)
        assert result.errors == {}
        assert await _collect(storage, "del") == []
        assert [i.key for i in await _collect(storage)] == ["keep/1"]
        again = await storage.delete_many(["keep/1", "never/existed"])
        assert again.errors == {}
        assert not await storage.exists("keep/1")

    # --- bad input -------------------------------------------------------------------------

    @pytest.mark.parametrize("key", INVALID_KEYS)
    async def test_invalid_keys_are_refused_and_change_nothing(
        self, storage: Storage, key: str
    ) -> None:
        with pytest.raises(InvalidKeyError):
            await storage.put(key, b"x")
        with pytest.raises(ValueError, match=r"[Kk]ey"):
            await storage.get(key)
        with pytest.raises(InvalidKeyError):
            await storage.delete(key)
        with pytest.raises(InvalidKeyError):
            await storage.copy("fine", key)
        assert await _collect(storage) == []

    # --- lifecycle -------------------------------------------------------------------------

    async def test_pickles_by_configuration(self, storage: Storage) -> None:
        await storage.put("p", b"pickled")
        copy = pickle.loads(pickle.dumps(storage))
        assert copy == storage
        assert bytes((await copy.get("p")).data) == b"pickled"
        await copy.aclose()

    async def test_usable_after_aclose_and_as_context_manager(self, storage: Storage) -> None:
        await storage.put("x", b"1")
        await storage.aclose()
        async with storage as same:
            assert bytes((await same.get("x")).data) == b"1"
        assert bytes((await storage.get("x")).data) == b"1"

    async def test_repr_names_backend_and_prefix(self, storage: Storage) -> None:
        text = repr(storage)
        assert type(storage).__name__ in text
        if storage.prefix:
            assert storage.prefix in text

    def test_works_from_several_event_loops_and_threads(self, storage: Storage) -> None:
        async def round_trip(tag: str) -> bytes:
            await storage.put(f"loops/{tag}", tag.encode())
            data = bytes((await storage.get(f"loops/{tag}")).data)
            await storage.aclose()
            return data

        assert asyncio.run(round_trip("first")) == b"first"
        assert asyncio.run(round_trip("second")) == b"second"
        results: dict[str, bytes] = {}

        def in_thread(tag: str) -> None:
            results[tag] = asyncio.run(round_trip(tag))

        threads = [threading.Thread(target=in_thread, args=(f"t{i}",)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == {f"t{i}": f"t{i}".encode() for i in range(3)}


async def _put_all(storage: Storage, keys: set[str], size: int = 1) -> None:
    """Write many keys with bounded concurrency (fast on memory, bearable on moto)."""
    semaphore = asyncio.Semaphore(32)

    async def put(key: str) -> None:
        async with semaphore:
            await storage.put(key, b"x" * size)

    await asyncio.gather(*(put(k) for k in keys))


class ReadOnlyStorageConformance:
    """A read-only storage reads like any other and refuses every write, changing nothing."""

    @pytest.fixture
    def storage(self) -> Storage:
        raise NotImplementedError("a test class provides the read-only storage fixture")

    async def raw_put(self, storage: Storage, key: str, data: bytes) -> None:
        raise NotImplementedError

    async def raw_get(self, storage: Storage, key: str) -> bytes | None:
        raise NotImplementedError

    @pytest.fixture(autouse=True)
    async def _release(self, storage: Storage) -> object:
        yield None
        await storage.aclose()

    async def test_reads_work(self, storage: Storage) -> None:
        await self.raw_put(storage, "dir/a", DATA)
        await self.raw_put(storage, "b", b"bee")
        assert bytes((await storage.get("dir/a")).data) == DATA
        assert bytes((await storage.get("dir/a", RangeByteRequest(3, 9))).data) == DATA[3:9]
        assert (await storage.head("b")).size == 3
        assert await storage.exists("b")
        assert await storage.get_many([("b", None), ("nope", None)], missing_ok=True) == [
            b"bee",
            None,
        ]
        assert sorted(info.key for info in await _collect(storage)) == ["b", "dir/a"]
        top = await storage.list_dir("")
        assert [o.key for o in top.objects] == ["b"]
        assert top.prefixes == ["dir/"]

    async def test_capabilities_say_read_only(self, storage: Storage) -> None:
        capabilities = storage.capabilities
        assert not capabilities.can_write
        assert not capabilities.conditional_create
        assert not capabilities.conditional_update

    async def test_every_write_is_refused_and_changes_nothing(self, storage: Storage) -> None:
        from icechunk_storage import ReadOnlyStorageError

        await self.raw_put(storage, "k", b"original")
        version = (await storage.head("k")).version
        attempts = [
            storage.put("k", b"x"),
            storage.put("new", b"x", mode="create"),
            storage.put("k", b"x", mode=version),
            storage.copy("k", "k2"),
            storage.delete("k"),
            storage.delete_many(["k"]),
        ]
        for attempt in attempts:
            with pytest.raises(ReadOnlyStorageError):
                await attempt
        assert await self.raw_get(storage, "k") == b"original"
        assert await self.raw_get(storage, "new") is None
        assert await self.raw_get(storage, "k2") is None
