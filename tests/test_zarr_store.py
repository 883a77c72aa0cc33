"""ZarrStore: zarr's own conformance suite per storage, plus what the suite does not cover.

Each backend is a small subclass of ``zarr.testing.store.StoreTests``. The bypass helpers
``set``/``get`` go through the wrapped *storage* (never the store under test), which has its
own conformance suite (``tests/conformance.py``).

The suite's sync-protocol tests (``test_get_sync`` ...) skip themselves: ZarrStore does not
implement zarr's optional ``SupportsGetSync``/``SupportsSetSync``/``SupportsDeleteSync``
(every storage here is async; see ``icechunk_storage/zarr.py``).
"""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
import zarr.api.asynchronous
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import Buffer, cpu, default_buffer_prototype
from zarr.core.sync import sync
from zarr.testing.store import StoreTests

import icechunk_storage
from icechunk_storage import (
    InstrumentedStorage,
    LocalFileSystemStorage,
    ObjectNotFoundError,
    RangeNotSatisfiableError,
    Repository,
    Storage,
    StorageSettings,
    in_memory_storage,
    local_filesystem_storage,
)
from icechunk_storage.zarr import ZarrStore
from tests._s3_server import MOTO_KEY, MOTO_REGION, MotoServer

PROTOTYPE = default_buffer_prototype()


class ZarrStoreTests(StoreTests[ZarrStore, cpu.Buffer]):
    """zarr's suite for a ZarrStore; subclasses provide the ``storage`` fixture."""

    store_cls = ZarrStore
    buffer_cls = cpu.Buffer

    @pytest.fixture
    def store_kwargs(self, storage: Storage) -> dict[str, Any]:
        return {"storage": storage}

    async def set(self, store: ZarrStore, key: str, value: Buffer) -> None:
        await store.storage.put(key, value.to_bytes())

    async def get(self, store: ZarrStore, key: str) -> Buffer:
        return self.buffer_cls.from_bytes((await store.storage.get(key)).data)

    def test_store_repr(self, store: ZarrStore) -> None:
        assert repr(store) == f"ZarrStore({store.storage!r})"
        assert repr(store.with_read_only(True)) == f"ZarrStore({store.storage!r}, read_only=True)"

    def test_store_supports_writes(self, store: ZarrStore) -> None:
        assert store.supports_writes
        assert store.supports_deletes

    def test_store_supports_listing(self, store: ZarrStore) -> None:
        assert store.supports_listing


class TestZarrStoreMemory(ZarrStoreTests):
    @pytest.fixture
    def storage(self) -> Storage:
        return in_memory_storage()


class TestZarrStoreLocal(ZarrStoreTests):
    """Bypass through the files themselves."""

    @pytest.fixture
    def storage(self, tmp_path: Path) -> Storage:
        return local_filesystem_storage(tmp_path / "root")

    async def set(self, store: ZarrStore, key: str, value: Buffer) -> None:
        assert isinstance(store.storage, LocalFileSystemStorage)
        file = Path(store.storage.root, key)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(value.to_bytes())

    async def get(self, store: ZarrStore, key: str) -> Buffer:
        assert isinstance(store.storage, LocalFileSystemStorage)
        return self.buffer_cls.from_bytes(Path(store.storage.root, key).read_bytes())


S3_PREFIX = "some/zarr"


def moto_s3_storage(url: str, bucket: str, **credentials: Any) -> Storage:
    """An S3 storage on the moto server; static test keys unless other credentials are given."""
    from icechunk_storage._s3 import s3_storage

    if not credentials:
        credentials = {"access_key_id": MOTO_KEY, "secret_access_key": MOTO_KEY}
    return s3_storage(
        bucket=bucket,
        prefix=S3_PREFIX,
        endpoint_url=url,
        allow_http=True,
        force_path_style=True,
        region=MOTO_REGION,
        **credentials,
    )


@pytest.mark.s3
class TestZarrStoreS3(ZarrStoreTests):
    """On moto; the bypass is a plain botocore client."""

    @pytest.fixture
    async def storage(
        self, moto_server: MotoServer, bucket: str, aws_isolated: Path
    ) -> AsyncIterator[Storage]:
        storage = moto_s3_storage(moto_server.url, bucket)
        yield storage
        await storage.aclose()
        await asyncio.to_thread(sync, storage.aclose())  # clients built on zarr's loop

    @pytest.fixture(autouse=True)
    def _bypass(self, s3_admin: Any, bucket: str) -> None:
        self.s3_admin, self.bucket = s3_admin, bucket

    async def set(self, store: ZarrStore, key: str, value: Buffer) -> None:
        self.s3_admin.put_object(
            Bucket=self.bucket, Key=f"{S3_PREFIX}/{key}", Body=value.to_bytes()
        )

    async def get(self, store: ZarrStore, key: str) -> Buffer:
        response = self.s3_admin.get_object(Bucket=self.bucket, Key=f"{S3_PREFIX}/{key}")
        return self.buffer_cls.from_bytes(response["Body"].read())


class TestZarrStoreSession(ZarrStoreTests):
    """A writable repository session's key/value store (uncommitted changes): a fork's, the
    writable kind that pickles (zarr's suite pickles the store)."""

    @pytest.fixture
    async def storage(self) -> Storage:
        repository = await Repository.create_async(in_memory_storage())
        session = await repository.writable_session_async("main")
        return (await session.fork_async()).storage


class TestZarrStoreInstrumented(ZarrStoreTests):
    """A wrapper between store and backend changes nothing zarr can see."""

    @pytest.fixture
    def storage(self) -> Storage:
        return InstrumentedStorage(in_memory_storage())


# --- behaviour beyond zarr's suite (memory) ---------------------------------------------------


def buf(data: bytes) -> Buffer:
    return cpu.Buffer.from_bytes(data)


@pytest.fixture
def counted() -> InstrumentedStorage[Storage]:
    return InstrumentedStorage(in_memory_storage())


def test_import_icechunk_storage_does_not_import_zarr() -> None:
    code = (
        "import sys, icechunk_storage; "
        "assert 'zarr' not in sys.modules, 'zarr imported'; "
        "assert 'icechunk_storage.zarr' not in sys.modules; "
        "print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert "ZarrStore" not in icechunk_storage.__all__


def test_constructor_refuses_a_non_storage() -> None:
    with pytest.raises(TypeError, match=r"needs an icechunk_storage\.Storage"):
        ZarrStore(zarr.storage.MemoryStore())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("byte_range", "expected"),
    [
        (None, b"0123456789"),
        (RangeByteRequest(2, 5), b"234"),
        (RangeByteRequest(8, 50), b"89"),
        (RangeByteRequest(10, 12), b""),
        (OffsetByteRequest(7), b"789"),
        (OffsetByteRequest(10), b""),
        (SuffixByteRequest(3), b"789"),
        (SuffixByteRequest(30), b"0123456789"),
        (icechunk_storage.RangeByteRequest(1, 3), b"12"),  # ours are accepted too
    ],
)
async def test_get_maps_every_byte_request(byte_range: Any, expected: bytes) -> None:
    store = ZarrStore(in_memory_storage())
    await store.storage.put("c/0", b"0123456789")
    observed = await store.get("c/0", PROTOTYPE, byte_range)
    assert observed is not None
    assert observed.to_bytes() == expected
    many = await store.get_partial_values(PROTOTYPE, [("c/0", byte_range)])
    assert many[0] is not None
    assert many[0].to_bytes() == expected


async def test_get_past_the_end_raises_and_missing_is_none() -> None:
    store = ZarrStore(in_memory_storage())
    await store.storage.put("k", b"abc")
    with pytest.raises(RangeNotSatisfiableError):
        await store.get("k", PROTOTYPE, RangeByteRequest(5, 9))
    assert await store.get("missing", PROTOTYPE) is None
    assert await store.get("missing", PROTOTYPE, SuffixByteRequest(2)) is None


async def test_get_is_zero_copy(counted: InstrumentedStorage[Storage]) -> None:
    """The Buffer views the bytes the storage returned; set hands the storage a view."""
    store = ZarrStore(counted)
    payload = bytes(range(200))
    await store.set("c/0", buf(payload))
    stored = (await counted.get("c/0")).data
    observed = await store.get("c/0", PROTOTYPE)
    assert observed is not None
    assert np.shares_memory(observed.as_numpy_array(), np.frombuffer(stored, dtype="B"))


async def test_get_partial_values_is_one_fetch_in_order(
    counted: InstrumentedStorage[Storage],
) -> None:
    store = ZarrStore(counted)
    for index in range(5):
        await counted.put(f"c/{index}", bytes([index]) * 10)
    requests = [
        ("c/3", RangeByteRequest(0, 2)),
        ("missing", None),
        ("c/0", SuffixByteRequest(1)),
        ("c/3", OffsetByteRequest(9)),  # the same key twice
        ("c/4", None),
    ]
    counted.reset()
    results = await store.get_partial_values(PROTOTYPE, requests)
    assert [None if r is None else r.to_bytes() for r in results] == [
        b"\x03\x03",
        None,
        b"\x00",
        b"\x03",
        b"\x04" * 10,
    ]
    assert set(counted.stats) == {"get_many"}
    assert counted.stats["get_many"].calls == 1


async def test_get_many_is_one_fetch(counted: InstrumentedStorage[Storage]) -> None:
    store = ZarrStore(counted)
    await counted.put("a", b"A")
    counted.reset()
    got = [
        (key, None if value is None else value.to_bytes())
        async for key, value in store._get_many(
            [("a", PROTOTYPE, None), ("b", PROTOTYPE, None), ("a", PROTOTYPE, SuffixByteRequest(1))]
        )
    ]
    assert got == [("a", b"A"), ("b", None), ("a", b"A")]
    assert set(counted.stats) == {"get_many"}


async def test_getsize_is_a_head_not_a_read(counted: InstrumentedStorage[Storage]) -> None:
    store = ZarrStore(counted)
    await counted.put("big", b"x" * 10_000)
    counted.reset()
    assert await store.getsize("big") == 10_000
    assert set(counted.stats) == {"head"}
    with pytest.raises(FileNotFoundError):
        await store.getsize("nope")
    with pytest.raises(ObjectNotFoundError):
        await store.getsize("nope")


async def test_getsize_prefix_is_one_listing_of_a_directory(
    counted: InstrumentedStorage[Storage],
) -> None:
    store = ZarrStore(counted)
    for key, size in [("foo/zarr.json", 3), ("foo/c/0", 10), ("foo-bar/c/0", 100), ("x", 1)]:
        await counted.put(key, b"\0" * size)
    counted.reset()
    assert await store.getsize_prefix("foo") == 13
    assert await store.getsize_prefix("foo/") == 13
    assert await store.getsize_prefix("") == 114
    assert set(counted.stats) == {"list"}


async def test_set_if_not_exists_is_a_conditional_create(
    counted: InstrumentedStorage[Storage],
) -> None:
    store = ZarrStore(counted)
    await store.set_if_not_exists("k", buf(b"first"))
    await store.set_if_not_exists("k", buf(b"second"))
    assert set(counted.stats) == {"put"}  # no exists-then-set race
    assert counted.stats["put"].calls == 2
    assert (await counted.get("k")).data == b"first"


async def test_set_if_not_exists_races_one_winner() -> None:
    store = ZarrStore(in_memory_storage())
    await asyncio.gather(*(store.set_if_not_exists("k", buf(bytes([i]))) for i in range(20)))
    assert len((await store.storage.get("k")).data) == 1


async def test_set_if_not_exists_without_conditional_create(
    counted: InstrumentedStorage[Storage],
) -> None:
    """With conditional create switched off it still never overwrites (exists, then set)."""
    storage = counted.with_settings(StorageSettings(unsafe_use_conditional_create=False))
    store = ZarrStore(storage)
    assert not storage.capabilities.conditional_create
    await store.set_if_not_exists("k", buf(b"first"))
    await store.set_if_not_exists("k", buf(b"second"))
    assert (await storage.get("k")).data == b"first"


async def test_set_refuses_non_buffers() -> None:
    store = ZarrStore(in_memory_storage())
    with pytest.raises(TypeError, match=r"ZarrStore.set\(\) expects a zarr Buffer"):
        await store.set("k", b"raw")  # type: ignore[arg-type]


async def test_partial_writes_are_not_supported() -> None:
    store = ZarrStore(in_memory_storage())
    assert store.supports_partial_writes is False
    with pytest.raises(NotImplementedError):
        await store.set_partial_values([("k", 0, b"x")])


async def test_listing_semantics() -> None:
    store = ZarrStore(in_memory_storage())
    keys = ["zarr.json", "foo/zarr.json", "foo/c/0", "foo/c/1", "foo-bar/zarr.json", "fob"]
    for key in keys:
        await store.storage.put(key, b"")

    async def collect(listing: Any) -> list[str]:
        return sorted([key async for key in listing])

    assert await collect(store.list()) == sorted(keys)
    # list_prefix is a plain string prefix, as in zarr's contract
    assert await collect(store.list_prefix("fo")) == sorted(keys[1:])
    assert await collect(store.list_prefix("foo")) == sorted(keys[1:5])
    assert await collect(store.list_prefix("foo/")) == sorted(keys[1:4])
    assert await collect(store.list_prefix("foo/c/")) == ["foo/c/0", "foo/c/1"]
    assert await collect(store.list_prefix("")) == sorted(keys)
    # list_dir: direct children relative to the prefix
    assert await collect(store.list_dir("")) == ["fob", "foo", "foo-bar", "zarr.json"]
    assert await collect(store.list_dir("foo")) == ["c", "zarr.json"]
    assert await collect(store.list_dir("foo/")) == ["c", "zarr.json"]
    assert await collect(store.list_dir("nothing")) == []
    # directories are whole segments
    assert not await store.is_empty("foo")
    assert await store.is_empty("fo")
    assert await store.is_empty("fob")  # an object, not a directory
    await store.delete_dir("foo")
    assert await collect(store.list()) == ["fob", "foo-bar/zarr.json", "zarr.json"]


async def test_clear_empties_only_the_storage_prefix() -> None:
    outer = in_memory_storage()
    await outer.put("keep", b"1")
    store = ZarrStore(outer)
    await store.set("a/b", buf(b"x"))
    await store.clear()
    assert await store.is_empty("")


async def test_read_only() -> None:
    storage = in_memory_storage()
    await storage.put("k", b"v")
    store = ZarrStore(storage, read_only=True)
    message = "store was opened in read-only mode and does not support writing"
    for write in (
        store.set("k", buf(b"x")),
        store.set_if_not_exists("n", buf(b"x")),
        store.delete("k"),
        store.delete_dir(""),
        store.clear(),
        store._set_many([("k", buf(b"x"))]),
    ):
        with pytest.raises(ValueError, match=message):
            await write
    assert (await storage.get("k")).data == b"v"
    writer = store.with_read_only(False)
    assert not writer.read_only
    assert store != writer
    assert store == writer.with_read_only(True)


async def test_read_only_storage_makes_a_read_only_store() -> None:
    storage = in_memory_storage()
    storage._read_only = True  # what a read-only session or repository storage reports
    store = ZarrStore(storage)
    assert store.read_only
    assert not store.supports_writes
    with pytest.raises(ValueError, match="read-only mode"):
        await store.set("k", buf(b"x"))
    with pytest.raises(ValueError, match="Store is read-only"):
        await zarr.api.asynchronous.open_group(store=store, mode="w")


async def test_pickle_is_configuration_plus_storage() -> None:
    storage = in_memory_storage()
    store = ZarrStore(storage, read_only=True)
    await storage.put("k", b"v")
    copy = pickle.loads(pickle.dumps(store))
    assert copy == store
    assert copy.read_only
    assert not copy._is_open
    assert set(store.__getstate__()) == {"storage", "read_only"}
    got = await copy.get("k", PROTOTYPE)
    assert got is not None
    assert got.to_bytes() == b"v"
    assert store != ZarrStore(in_memory_storage(), read_only=True)  # other data, other store


# --- event loops: zarr's loop thread, the user's loop, one loop after another ---------------


@pytest.fixture(params=["memory", "local", pytest.param("s3", marks=pytest.mark.s3)])
def loop_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """A storage of each kind, for the event-loop tests (which start and close their loops)."""
    if request.param == "memory":
        yield in_memory_storage()
    elif request.param == "local":
        yield local_filesystem_storage(tmp_path / "root")
    else:
        request.getfixturevalue("aws_isolated")
        server: MotoServer = request.getfixturevalue("moto_server")
        storage = moto_s3_storage(server.url, request.getfixturevalue("bucket"))
        yield storage
        sync(storage.aclose())  # the clients built on zarr's loop


def _write_array(store: ZarrStore) -> np.ndarray[Any, Any]:
    data = np.arange(60, dtype="int32").reshape(6, 10)
    array = zarr.create_array(store, name="a", shape=data.shape, chunks=(2, 5), dtype="int32")
    array[:] = data
    return data


class _ThreadRecording(InstrumentedStorage[Storage]):
    """Records the thread every read and write runs on."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.threads: set[str] = set()

    async def put(self, key: str, data: Any, **kwargs: Any) -> Any:
        self.threads.add(threading.current_thread().name)
        return await super().put(key, data, **kwargs)

    async def get(self, key: str, byte_range: Any = None) -> Any:
        self.threads.add(threading.current_thread().name)
        return await super().get(key, byte_range)


def test_zarr_sync_api_runs_on_zarrs_loop_thread(loop_storage: Storage) -> None:
    counted = _ThreadRecording(loop_storage)
    store = ZarrStore(counted)
    data = _write_array(store)
    group = zarr.open_group(store, mode="r")
    array = group["a"]
    assert isinstance(array, zarr.Array)
    np.testing.assert_array_equal(array[:], data)
    np.testing.assert_array_equal(array[1:4, 3:7], data[1:4, 3:7])
    assert counted.stats["put"].calls == 1 + 1 + 6  # root group, array, chunks
    assert counted.threads == {"zarr_io"}

    async def sizes() -> int:
        return sum([info.size async for info in loop_storage.list("a")])

    assert array.nbytes_stored() == sync(sizes())


async def test_from_the_users_loop_and_zarrs_sync_api_alternately(
    loop_storage: Storage,
) -> None:
    store = ZarrStore(loop_storage)
    group = await zarr.api.asynchronous.open_group(store=store, mode="w")
    array = await group.create_array("a", shape=(4,), chunks=(2,), dtype="uint8")
    await array.setitem(slice(None), np.arange(4, dtype="uint8"))
    # the sync API, from this loop's thread, runs on zarr's own loop thread
    observed = await asyncio.to_thread(lambda: zarr.open_array(store, path="a", mode="r")[:])
    np.testing.assert_array_equal(observed, np.arange(4))
    await array.setitem(slice(0, 2), np.array([7, 7], dtype="uint8"))
    observed = await asyncio.to_thread(lambda: zarr.open_array(store, path="a", mode="r")[:])
    np.testing.assert_array_equal(observed, [7, 7, 2, 3])
    np.testing.assert_array_equal(await array.getitem(slice(None)), [7, 7, 2, 3])
    await loop_storage.aclose()


def test_one_store_on_two_loops_in_turn_and_in_two_threads(loop_storage: Storage) -> None:
    store = ZarrStore(loop_storage)

    async def write(value: int, *, close: bool = True) -> None:
        array = await zarr.api.asynchronous.open_array(
            store=store, path="a", mode="a", shape=(4,), chunks=(2,), dtype="uint8"
        )
        await array.setitem(slice(None), np.full(4, value, dtype="uint8"))
        if close:
            await loop_storage.aclose()

    async def read(*, close: bool = True) -> np.ndarray[Any, Any]:
        array = await zarr.api.asynchronous.open_array(store=store, path="a", mode="r")
        result = await array.getitem(slice(None))
        assert isinstance(result, np.ndarray)
        if close:
            await loop_storage.aclose()
        return result

    # a loop that ends without closing anything, then a new loop: nothing of the first reused
    asyncio.run(write(1, close=False))
    np.testing.assert_array_equal(asyncio.run(read(close=False)), 1)
    np.testing.assert_array_equal(sync(read(close=False)), 1)  # zarr's loop thread
    np.testing.assert_array_equal(asyncio.run(read()), 1)

    errors: list[BaseException] = []

    def in_thread(value: int) -> None:
        try:
            asyncio.run(write(value))
            asyncio.run(read())
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    # two loops at once, in two threads, with zarr's loop thread reading meanwhile
    threads = [threading.Thread(target=in_thread, args=(v,)) for v in (2, 3)]
    for thread in threads:
        thread.start()
    for _ in range(3):
        assert int(sync(read(close=False))[0]) in (1, 2, 3)
    for thread in threads:
        thread.join()
    assert errors == []
    assert int(asyncio.run(read())[0]) in (2, 3)


async def test_session_store_becomes_read_only_after_commit() -> None:
    repository = await Repository.create_async(in_memory_storage())
    session = await repository.writable_session_async("main")
    store = ZarrStore(session.storage)
    group = await zarr.api.asynchronous.open_group(store=store, mode="w")
    array = await group.create_array("a", shape=(4,), chunks=(2,), dtype="int8")
    await array.setitem(slice(None), np.arange(4, dtype="int8"))
    assert not store.read_only
    await session.commit_async("first")
    assert store.read_only  # the session is read-only after its commit, so the store is too
    assert not store.supports_writes
    with pytest.raises(ValueError, match="read-only mode"):
        await store.set("a/c/0", buf(b"x"))
    reader = await repository.readonly_session_async("main")
    copy = pickle.loads(pickle.dumps(ZarrStore(reader.storage)))
    assert copy.read_only
    opened = await zarr.api.asynchronous.open_array(store=copy, path="a", mode="r")
    np.testing.assert_array_equal(await opened.getitem(slice(None)), np.arange(4))
