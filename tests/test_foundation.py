"""The shared machinery every backend relies on: settings, keys, retries, the request limit,
wrappers, and lost-response recovery of conditional writes."""

from __future__ import annotations

import asyncio
import inspect
import pickle
import random
from collections.abc import Mapping

import attrs
import pytest

import icechunk_storage
from icechunk_storage import (
    AlreadyExistsError,
    ConfigurationError,
    ConnectionLostError,
    InstrumentedStorage,
    InvalidKeyError,
    LatencyStorage,
    MemoryStorage,
    ObjectNotFoundError,
    PreconditionFailedError,
    RangeByteRequest,
    RetriesExhaustedError,
    Storage,
    StorageConcurrencySettings,
    StorageError,
    StorageRetriesSettings,
    StorageSettings,
    StorageTimeoutError,
    StorageTimeoutSettings,
    ThrottledError,
    VersionInfo,
    WrappedStorage,
    in_memory_storage,
    set_max_concurrent_requests,
)
from icechunk_storage._keys import normalize_list_prefix, normalize_prefix, validate_key
from icechunk_storage._limits import DEFAULT_MAX_CONCURRENT_REQUESTS
from icechunk_storage._ranges import ByteRequest
from icechunk_storage._retry import RetryPolicy, call_with_retries
from icechunk_storage._storage import Data, GetResult, PutMode

# --- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: StorageRetriesSettings(max_tries=0), "max_tries"),
        (lambda: StorageRetriesSettings(initial_backoff_ms=-1), "initial_backoff_ms"),
        (lambda: StorageRetriesSettings(max_tries=True), "max_tries"),
        (lambda: StorageRetriesSettings(max_tries="3"), "max_tries"),  # type: ignore[arg-type]
        (
            lambda: StorageConcurrencySettings(max_concurrent_requests_for_object=0),
            "max_concurrent_requests_for_object",
        ),
        (
            lambda: StorageConcurrencySettings(ideal_concurrent_request_size=-5),
            "ideal_concurrent_request_size",
        ),
        (lambda: StorageTimeoutSettings(connect_timeout_ms=0), "connect_timeout_ms"),
        (
            lambda: StorageSettings(minimum_size_for_multipart_upload=0),
            "minimum_size_for_multipart_upload",
        ),
        (lambda: StorageSettings(unsafe_use_conditional_create="no"), "unsafe_use_"),  # type: ignore[arg-type]
        (lambda: StorageSettings(retries=3), "retries"),  # type: ignore[arg-type]
        (lambda: StorageSettings(storage_class=1), "storage_class"),  # type: ignore[arg-type]
    ],
)
def test_invalid_settings_name_the_field(build: object, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        build()  # type: ignore[operator]


def test_settings_defaults_are_icechunks() -> None:
    settings = StorageSettings()
    assert settings.effective_retries == (10, 100, 180_000)
    assert settings.effective_concurrency == (18, 12 * 1024 * 1024)
    assert settings.conditional_create
    assert settings.conditional_update
    assert settings.use_metadata
    assert settings.effective_minimum_size_for_multipart_upload == 100 * 1024 * 1024
    assert StorageSettings(storage_class="X").effective_chunks_storage_class == "X"
    assert (
        StorageSettings(storage_class="X", chunks_storage_class="Y").effective_chunks_storage_class
        == "Y"
    )


def test_merge_takes_fields_set_in_other_and_merges_nested_field_by_field() -> None:
    base = StorageSettings(
        retries=StorageRetriesSettings(max_tries=3, initial_backoff_ms=10),
        storage_class="STANDARD",
    )
    override = StorageSettings(
        retries=StorageRetriesSettings(max_tries=7), unsafe_use_conditional_update=False
    )
    merged = base.merge(override)
    assert merged.retries == StorageRetriesSettings(max_tries=7, initial_backoff_ms=10)
    assert merged.storage_class == "STANDARD"
    assert merged.unsafe_use_conditional_update is False
    assert base.merge(None) is base
    with pytest.raises(ConfigurationError):
        base.merge(StorageRetriesSettings())  # type: ignore[arg-type]


def test_settings_are_frozen_hashable_and_pickle() -> None:
    settings = StorageSettings(
        concurrency=StorageConcurrencySettings(ideal_concurrent_request_size=5)
    )
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        settings.storage_class = "X"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(settings)) == settings
    assert hash(settings) == hash(pickle.loads(pickle.dumps(settings)))


def test_backend_defaults() -> None:
    memory = in_memory_storage()
    assert memory.settings.effective_retries[0] == 1
    assert memory.with_settings(StorageSettings(retries=StorageRetriesSettings(max_tries=4)))
    tuned = memory.with_settings(StorageSettings(retries=StorageRetriesSettings(max_tries=4)))
    assert tuned.settings.effective_retries[0] == 4
    assert memory.settings.effective_retries[0] == 1  # with_settings never mutates
    with pytest.raises(ConfigurationError, match="StorageSettings"):
        memory.with_settings({"retries": 3})  # type: ignore[arg-type]


# --- keys ----------------------------------------------------------------------------------


def test_key_rules() -> None:
    assert validate_key("a/b.c/d-e_f") == "a/b.c/d-e_f"
    for bad in ["", "/a", "a/", "a//b", "..", "a/..", "./a", "a\x00", "a\nb", "a\\b", "a\x7f"]:
        with pytest.raises(InvalidKeyError):
            validate_key(bad)
    assert normalize_prefix(None) == normalize_prefix("") == normalize_prefix("/") == ""
    assert normalize_prefix("/data/x/") == "data/x"
    with pytest.raises(InvalidKeyError):
        normalize_prefix("data/../../etc")
    assert normalize_list_prefix("a") == normalize_list_prefix("a/") == "a/"
    assert normalize_list_prefix("") == normalize_list_prefix("/") == ""


# --- retries -------------------------------------------------------------------------------


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    policy = RetryPolicy(max_tries=10, initial_backoff=0.1, max_backoff=1.0)
    rng = random.Random(1)
    for failed in range(1, 10):
        ceiling = min(1.0, 0.1 * 2 ** (failed - 1))
        samples = [policy.backoff(failed, rng) for _ in range(200)]
        assert all(0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling * 0.8  # jitter spans the whole window


async def test_retries_only_transient_errors_and_counts_attempts() -> None:
    calls = 0
    sleeps: list[float] = []

    async def no_sleep(delay: float) -> None:
        sleeps.append(delay)

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ThrottledError("slow down")
        return "done"

    policy = RetryPolicy(max_tries=5, initial_backoff=0.1, max_backoff=1.0)
    assert await call_with_retries("get", "k", flaky, policy, sleep=no_sleep) == "done"
    assert calls == 3
    assert len(sleeps) == 2

    async def always_failing() -> str:
        raise ConnectionLostError("reset")

    with pytest.raises(RetriesExhaustedError) as caught:
        await call_with_retries("get", "k", always_failing, policy, sleep=no_sleep)
    assert caught.value.attempts == 5
    assert isinstance(caught.value.__cause__, ConnectionLostError)
    assert "max_tries" in str(caught.value)

    async def not_transient() -> str:
        raise ObjectNotFoundError("k")

    sleeps.clear()
    with pytest.raises(ObjectNotFoundError):
        await call_with_retries("get", "k", not_transient, policy, sleep=no_sleep)
    assert sleeps == []


class _FlakyMemory(MemoryStorage):
    """Fails the first ``failures`` backend writes in the given way."""

    def __init__(self, failures: int, *, lose_response: bool) -> None:
        super().__init__(
            settings=StorageSettings(
                retries=StorageRetriesSettings(max_tries=4, initial_backoff_ms=1, max_backoff_ms=2)
            )
        )
        self.failures = failures
        self.lose_response = lose_response

    async def _put_object(
        self,
        path: str,
        data: Data,
        mode: PutMode,
        content_type: str | None,
        metadata: Mapping[str, str],
    ) -> VersionInfo:
        if self.failures:
            self.failures -= 1
            if self.lose_response:  # the write happens, but its answer never arrives
                await super()._put_object(path, data, mode, content_type, metadata)
            raise ConnectionLostError("connection reset by peer")
        return await super()._put_object(path, data, mode, content_type, metadata)


async def test_transient_write_failures_are_retried_and_counted() -> None:
    storage = InstrumentedStorage(_FlakyMemory(2, lose_response=False))
    await storage.put("k", b"x")
    assert storage.stats["put"].requests == 3
    assert storage.stats["put"].retries == 2
    with pytest.raises(RetriesExhaustedError):
        await InstrumentedStorage(_FlakyMemory(10, lose_response=False)).put("k", b"x")


async def test_lost_response_of_a_conditional_create_counts_as_success() -> None:
    storage = _FlakyMemory(1, lose_response=True)
    version = await storage.put("repo", b"mine", mode="create")  # retried, trips its own write
    assert (await storage.head("repo")).version == version
    await storage.put("taken", b"theirs", mode="create")
    storage.failures = 1  # our create is lost *and* someone else's object is there
    with pytest.raises(AlreadyExistsError):
        await storage.put("taken", b"mine", mode="create")
    assert bytes((await storage.get("taken")).data) == b"theirs"


async def test_lost_response_readback_never_claims_someone_elses_write() -> None:
    storage = _FlakyMemory(0, lose_response=True)
    first = await storage.put("repo", b"theirs")
    await storage.put("repo", b"newer")
    with pytest.raises(PreconditionFailedError):
        await storage.put("repo", b"mine", mode=first)
    storage.failures = 1
    current = (await storage.head("repo")).version
    assert await storage.put("repo", b"mine", mode=current) != current
    assert bytes((await storage.get("repo")).data) == b"mine"


async def test_without_metadata_there_is_no_write_id_and_no_readback() -> None:
    storage = _FlakyMemory(1, lose_response=True).with_settings(
        StorageSettings(
            unsafe_use_metadata=False,
            retries=StorageRetriesSettings(max_tries=4, initial_backoff_ms=1, max_backoff_ms=2),
        )
    )
    with pytest.raises(AlreadyExistsError):
        await storage.put("repo", b"mine", mode="create")
    assert (await storage.head("repo")).metadata == {}


async def test_conditional_writes_carry_distinct_random_write_ids() -> None:
    from icechunk_storage._backend import WRITE_ID_METADATA_KEY

    storage = MemoryStorage()
    ids = set()
    for index in range(300):  # more than one batch of random bytes (4,096 / 16)
        await storage.put(f"k{index}", b"v", mode="create")
        ids.add((await storage.head(f"k{index}")).metadata[WRITE_ID_METADATA_KEY])
    assert len(ids) == 300
    assert all(len(write_id) == 32 and int(write_id, 16) >= 0 for write_id in ids)


def test_random_bytes_are_never_handed_out_twice_and_refuse_odd_sizes() -> None:
    from icechunk_storage._random import random_bytes, random_hex

    drawn = [random_bytes(1000) for _ in range(20)]  # crosses batch ends: never a short piece
    assert all(len(piece) == 1000 for piece in drawn)
    assert len(set(drawn)) == 20
    assert len(random_hex(16)) == 32
    for count in (0, -1, 4097):
        with pytest.raises(ValueError, match="count must be between 1 and 4096"):
            random_bytes(count)


class _HangingMemory(MemoryStorage):
    """Reads fail transiently after a pause, forever: only a deadline ends them."""

    async def _get_object(self, path: str, byte_range: ByteRequest | None) -> GetResult:
        await asyncio.sleep(0.02)
        raise ConnectionLostError("connection reset by peer")


async def test_operation_timeout_bounds_all_attempts_together() -> None:
    storage = _HangingMemory().with_settings(
        StorageSettings(
            retries=StorageRetriesSettings(max_tries=1000, initial_backoff_ms=1, max_backoff_ms=5),
            timeouts=StorageTimeoutSettings(operation_timeout_ms=150),
        )
    )
    await storage.put("k", b"x")
    started = asyncio.get_running_loop().time()
    with pytest.raises(StorageTimeoutError, match="operation_timeout_ms") as caught:
        await storage.get("k")
    assert asyncio.get_running_loop().time() - started < 5  # not 1000 attempts
    assert isinstance(caught.value.__cause__, TimeoutError)
    without_budget = storage.with_settings(
        StorageSettings(retries=StorageRetriesSettings(max_tries=3, initial_backoff_ms=1))
    )
    with pytest.raises(RetriesExhaustedError):  # no budget: the retry budget ends it
        await without_budget.get("k")


async def test_large_reads_in_parts_land_in_one_lazily_zeroed_buffer() -> None:
    storage = in_memory_storage().with_settings(
        StorageSettings(
            concurrency=StorageConcurrencySettings(
                ideal_concurrent_request_size=256 * 1024, max_concurrent_requests_for_object=8
            )
        )
    )
    data = random.Random(5).randbytes(3 * 1024 * 1024 + 17)
    await storage.put("big", data)
    whole = await storage.get("big", RangeByteRequest(0, len(data)))
    assert isinstance(whole.data, memoryview)  # no copy into bytes afterwards
    assert whole.data == data
    tail = await storage.get("big", RangeByteRequest(1024 * 1024, 8 * 1024 * 1024))
    assert bytes(tail.data) == data[1024 * 1024 :]  # ran past the end: truncated
    [fetched] = await storage.get_many([("big", RangeByteRequest(5, 2 * 1024 * 1024))])
    assert fetched == data[5 : 2 * 1024 * 1024]


# --- the request limit ---------------------------------------------------------------------


class _CountingMemory(MemoryStorage):
    in_flight = 0
    peak = 0

    async def _get_object(self, path: str, byte_range: ByteRequest | None) -> GetResult:
        type(self).in_flight += 1
        type(self).peak = max(type(self).peak, type(self).in_flight)
        try:
            await asyncio.sleep(0.001)
            return await super()._get_object(path, byte_range)
        finally:
            type(self).in_flight -= 1


async def test_one_request_limit_is_shared_by_every_storage() -> None:
    set_max_concurrent_requests(7)
    try:
        first, second = _CountingMemory(), _CountingMemory()
        for storage in (first, second):
            for i in range(50):
                await storage.put(f"k{i}", b"x")
        _CountingMemory._read_batch_size = 0  # one request per read for this test
        await asyncio.gather(
            first.get_many([(f"k{i}", None) for i in range(50)]),
            second.get_many([(f"k{i}", None) for i in range(50)]),
            *(first.get(f"k{i}") for i in range(20)),
        )
        assert _CountingMemory.peak == 7
    finally:
        set_max_concurrent_requests(DEFAULT_MAX_CONCURRENT_REQUESTS)
    with pytest.raises(ValueError, match="max_concurrent_requests"):
        set_max_concurrent_requests(0)


async def test_get_many_max_concurrency_bounds_one_call() -> None:
    storage = _CountingMemory()
    for i in range(40):
        await storage.put(f"k{i}", b"x")
    _CountingMemory._read_batch_size = 0
    _CountingMemory.peak = 0
    await storage.get_many([(f"k{i}", None) for i in range(40)], max_concurrency=3)
    assert _CountingMemory.peak == 3
    with pytest.raises(ValueError, match="max_concurrency"):
        await storage.get_many([("k1", None)], max_concurrency=0)


# --- wrappers ------------------------------------------------------------------------------


def test_wrapped_storage_forwards_every_method_of_the_contract() -> None:
    contract = {
        name
        for name, member in inspect.getmembers(Storage)
        if not name.startswith("_") and (inspect.isfunction(member) or isinstance(member, property))
    }
    missing = {name for name in contract if name not in WrappedStorage.__dict__}
    assert missing == set()


async def test_wrappers_are_transparent_and_compose() -> None:
    inner = in_memory_storage()
    stack = InstrumentedStorage(LatencyStorage(inner, 0.001))
    await stack.put("a", b"123")
    assert bytes((await stack.get("a")).data) == b"123"
    assert await stack.get_many([("a", None)]) == [b"123"]
    assert [i.key async for i in stack.list()] == ["a"]
    assert stack.capabilities == inner.capabilities
    assert stack.prefix == inner.prefix
    tuned = stack.with_settings(StorageSettings(storage_class="X"))
    assert isinstance(tuned, InstrumentedStorage)
    assert isinstance(tuned.inner, LatencyStorage)
    assert tuned.settings.storage_class == "X"
    assert bytes((await tuned.get("a")).data) == b"123"
    assert stack.stats["get"].calls == 2  # tuned shares its counters
    assert stack.stats["put"].bytes_written == 3
    assert "MemoryStorage" in repr(stack)
    with pytest.raises(TypeError):
        WrappedStorage("not a storage")  # type: ignore[type-var]
    with pytest.raises(ValueError, match="latency"):
        LatencyStorage(inner, -1)


async def test_instrumented_storage_counts_errors_and_time() -> None:
    storage = InstrumentedStorage(in_memory_storage())
    with pytest.raises(ObjectNotFoundError):
        await storage.get("missing")
    stats = storage.stats["get"]
    assert (stats.calls, stats.errors) == (1, 1)
    assert stats.total_seconds > 0
    assert stats.max_seconds > 0
    assert storage.totals().calls == 1
    storage.reset()
    assert storage.stats == {}


# --- the public surface --------------------------------------------------------------------


def test_public_names_are_exported_and_importing_loads_no_sdk() -> None:
    import subprocess
    import sys

    for name in icechunk_storage.__all__:
        assert hasattr(icechunk_storage, name), name
    code = (
        "import sys, icechunk_storage; "
        "heavy = {'aiobotocore', 'botocore', 'aiohttp', 'zarr', 'azure', 'gcloud'}; "
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_error_tree() -> None:
    assert issubclass(ObjectNotFoundError, FileNotFoundError)
    assert issubclass(AlreadyExistsError, FileExistsError)
    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(InvalidKeyError, ValueError)
    for error in (ObjectNotFoundError, AlreadyExistsError, ThrottledError, ConfigurationError):
        assert issubclass(error, StorageError)


def test_a_forked_child_forgets_every_loop_local_value_and_registered_state() -> None:
    """One mechanism (``_forks``): after ``fork`` the child starts with empty loop-local
    values (no parent sockets) and every registered module function has run."""
    import os

    from icechunk_storage._forks import forget_after_fork
    from icechunk_storage._loops import LoopLocal

    built: list[int] = []

    def build() -> int:
        built.append(os.getpid())
        return len(built)

    local: LoopLocal[int] = LoopLocal(build)
    ran: list[int] = []
    forget_after_fork(lambda: ran.append(os.getpid()))

    async def value() -> int:
        return local.get()

    parent_loop = asyncio.new_event_loop()  # kept open: its value stays in the parent
    assert parent_loop.run_until_complete(value()) == 1
    assert len(local.items()) == 1
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running the parent's cleanup
        try:
            loop = asyncio.new_event_loop()
            report = f"{len(local.items())},{loop.run_until_complete(value())},{len(ran)}"
            os.write(write, report.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        report = pipe.read()
    os.waitpid(pid, 0)
    # No value survived the fork, the child built its own, and the hook ran once there.
    assert report == "0,2,1"
    assert ran == []  # not in the parent
    assert len(local.items()) == 1
    parent_loop.close()


def test_every_error_class_is_in_the_drawn_tree() -> None:
    """The error tree in ``_errors``'s docstring (and the repository's subtree) names every
    StorageError subclass the package defines, so users can see what to catch."""
    import importlib
    import inspect
    import pkgutil

    import icechunk_storage
    from icechunk_storage import StorageError, _errors
    from icechunk_storage._repository import _errors as repository_errors

    drawn = (_errors.__doc__ or "") + (repository_errors.__doc__ or "")
    classes = set()
    for module_info in pkgutil.walk_packages(icechunk_storage.__path__, "icechunk_storage."):
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, StorageError)
                and value.__module__.startswith("icechunk_storage")
                and not name.startswith("_")
            ):
                classes.add(value.__name__)
    missing = sorted(name for name in classes if name not in drawn)
    assert missing == []
    assert len(classes) > 30
