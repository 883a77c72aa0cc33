"""The repository layer: config, create/open, sessions, refs, and commits that never lose data.

Backend-dependent tests run on every backend in ``BACKEND_FIXTURES`` (a fixture per backend
returns a :class:`Backend` that makes fresh, empty locations). Adding a backend is one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import multiprocessing
import os
import pickle
import queue
import random
import re
import threading
import warnings
from collections.abc import Callable, Coroutine
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest

from icechunk_storage import (
    AlreadyExistsError,
    BranchNotFoundError,
    CompressionConfig,
    ConfigurationError,
    ConflictError,
    ConnectionLostError,
    GCSummary,
    InstrumentedStorage,
    LatencyStorage,
    MergeConflictError,
    NotARepositoryError,
    ObjectNotFoundError,
    PreconditionFailedError,
    ReadOnlySessionError,
    ReadOnlyStorageError,
    RefAlreadyExistsError,
    RepositoryAlreadyExistsError,
    RepositoryConfig,
    RepositoryError,
    RepositoryFormatError,
    RepositoryLocationError,
    RepositoryNotFoundError,
    RepoUpdateRetryConfig,
    SessionPickleError,
    SessionStateError,
    SnapshotNotFoundError,
    Storage,
    StorageConcurrencySettings,
    StorageError,
    StorageRetriesSettings,
    StorageSettings,
    SyncError,
    TagNotFoundError,
    TooManyConcurrentChangesError,
    get_max_concurrent_requests,
    in_memory_storage,
    local_filesystem_storage,
    s3_storage,
)
from icechunk_storage._repository import Repository, Session, SessionStorage
from icechunk_storage._repository._config import config_from_json, config_to_json
from icechunk_storage._repository._format import (
    INITIAL_SNAPSHOT_ID,
    ManifestEntry,
    chunk_key,
    decode_info,
    is_valid_id,
    new_id,
    now_ms,
)
from icechunk_storage._repository._repository import MAX_UNCERTAIN_UPDATES, repo_update_delay
from icechunk_storage._sync import get_loop, sync
from tests import _repo_helpers as helpers
from tests._s3_proxy import RecordingProxy
from tests._s3_server import MOTO_KEY, MOTO_REGION
from tests.conformance import StorageConformance

UNSAFE = StorageSettings(unsafe_use_conditional_update=False, unsafe_use_conditional_create=False)


# --- backends ----------------------------------------------------------------------------------


@attrs.frozen
class Backend:
    """Fresh empty locations on one backend, and how to load it in the concurrency test."""

    name: str
    new: Callable[[], Storage]
    shared_across_processes: bool  # False: a pickled copy carries its own data (memory)
    writers_in_processes: bool = False  # else threads through the sync bridge
    writers: int = 8
    commits: int = 10  # per writer, in the concurrent-writers test


@pytest.fixture
def memory_backend() -> Backend:
    return Backend("memory", in_memory_storage, shared_across_processes=False)


@pytest.fixture
def local_backend(tmp_path: Path) -> Backend:
    counter = itertools.count()
    return Backend(
        "local",
        lambda: local_filesystem_storage(tmp_path / f"repo{next(counter)}"),
        shared_across_processes=True,
        writers_in_processes=True,
    )


@pytest.fixture
def s3_backend(s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path) -> Backend:
    """moto behind the recording proxy (which enforces conditional copies, as S3 does).

    Sized for moto's ~200 requests/s: 4 writers x 5 commits is ~50 commit attempts.
    """
    counter = itertools.count()

    def new() -> Storage:
        return s3_storage(
            bucket=bucket,
            prefix=f"repositories/r{next(counter)}",
            endpoint_url=s3_proxy.url,
            allow_http=True,
            force_path_style=True,
            region=MOTO_REGION,
            access_key_id=MOTO_KEY,
            secret_access_key=MOTO_KEY,
        )

    return Backend("s3", new, shared_across_processes=True, writers=8, commits=10)


BACKEND_FIXTURES = {
    "memory": "memory_backend",
    "local": "local_backend",
    "s3": "s3_backend",
}


@pytest.fixture(
    params=[
        pytest.param(name, marks=[pytest.mark.s3] if name == "s3" else [])
        for name in sorted(BACKEND_FIXTURES)
    ]
)
def backend(request: pytest.FixtureRequest) -> Backend:
    result = request.getfixturevalue(BACKEND_FIXTURES[request.param])
    assert isinstance(result, Backend)
    return result


async def keys_of(storage: Storage, prefix: str = "") -> set[str]:
    return {info.key async for info in storage.list(prefix)}


async def read(session: Session, key: str) -> bytes:
    return bytes((await session.storage.get(key)).data)


async def commit_values(
    repo: Repository, values: dict[str, bytes | None], branch: str = "main"
) -> str:
    """One commit on ``branch`` setting (or, for None, deleting) keys."""
    session = await repo.writable_session_async(branch)
    for key, value in values.items():
        if value is None:
            await session.storage.delete(key)
        else:
            await session.storage.put(key, value)
    return await session.commit_async(f"set {sorted(values)}")


# --- the sync bridge ---------------------------------------------------------------------------


async def _thread_name() -> str:
    return threading.current_thread().name


async def _fail() -> None:
    raise KeyError("from the coroutine")


def test_sync_runs_on_one_bridge_thread_and_reraises() -> None:
    assert sync(_thread_name()) == "icechunk_storage-sync"
    loop = get_loop()
    assert sync(_thread_name()) == "icechunk_storage-sync"
    assert get_loop() is loop
    with pytest.raises(KeyError, match="from the coroutine"):
        sync(_fail())


def test_sync_from_many_threads_at_once() -> None:
    async def slow_double(value: int) -> int:
        await asyncio.sleep(0.01)
        return 2 * value

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda v: sync(slow_double(v)), range(32)))
    assert results == [2 * v for v in range(32)]


async def test_sync_inside_a_running_loop_names_the_async_form() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine was never awaited" would be an error
        with pytest.raises(SyncError, match=r"Repository\.create\(\) was called from a running"):
            Repository.create(in_memory_storage())
        with pytest.raises(SyncError, match=r"use `await Repository\.create_async\(\.\.\.\)`"):
            Repository.create(in_memory_storage())
        repo = await Repository.create_async(in_memory_storage())
        session = await repo.writable_session_async("main")
        await session.storage.put("k", b"v")
        with pytest.raises(SyncError, match=r"await Session\.commit_async"):
            session.commit("nope")
        with pytest.raises(RuntimeError, match=r"await Repository\.ancestry_async"):
            repo.ancestry(branch="main")  # SyncError is also a RuntimeError
        gc.collect()
    assert session.has_uncommitted_changes  # nothing ran


def test_sync_called_on_the_bridge_loop_refuses_instead_of_deadlocking() -> None:
    async def nested() -> str:
        inner = _thread_name()
        try:
            return sync(inner)
        except SyncError as exc:
            return str(exc)

    assert "running event loop" in sync(nested())


def _child_uses_bridge(results: Any) -> None:
    results.put(sync(_thread_name()))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_sync_works_in_a_forked_child() -> None:
    sync(_thread_name())  # the parent's bridge thread exists before the fork
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_child_uses_bridge, args=(results,))
    child.start()
    try:
        assert results.get(timeout=60) == "icechunk_storage-sync"
    finally:
        child.join(timeout=60)
    assert child.exitcode == 0


def test_sync_forms_run_on_the_bridge_not_a_new_loop_per_call() -> None:
    names: list[str] = []

    class Recording(helpers.ProbeStorage):
        async def get(self, key: str, byte_range: Any = None) -> Any:
            names.append(threading.current_thread().name)
            return await super().get(key, byte_range)

    storage = Recording(in_memory_storage(), helpers.InFlight(), latency=0)
    repo = Repository.create(storage)
    repo.ancestry(branch="main")
    assert names
    assert set(names) == {"icechunk_storage-sync"}


# --- RepositoryConfig --------------------------------------------------------------------------


def test_config_defaults_and_effective_values() -> None:
    config = RepositoryConfig()
    assert config.storage is None
    assert config.max_concurrent_requests is None
    assert config.effective_max_concurrent_requests == 256
    assert config.effective_inline_chunk_threshold_bytes == 512
    assert config.effective_repo_update_retries == (100, 0.05, 30.0)
    assert config.effective_compression == ("zlib", 3)
    default = RepositoryConfig.default()
    assert default.max_concurrent_requests == 256
    assert default.inline_chunk_threshold_bytes == 512
    assert default.repo_update_retries == RepoUpdateRetryConfig(
        default=StorageRetriesSettings(max_tries=100, initial_backoff_ms=50, max_backoff_ms=30000)
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_concurrent_requests": 0}, "max_concurrent_requests must be >= 1"),
        ({"max_concurrent_requests": True}, "max_concurrent_requests must be an int"),
        ({"inline_chunk_threshold_bytes": -1}, "inline_chunk_threshold_bytes must be >= 0"),
        ({"storage": {"retries": 3}}, "storage must be StorageSettings"),
        ({"repo_update_retries": 5}, "repo_update_retries must be RepoUpdateRetryConfig"),
    ],
)
def test_config_validation_names_the_field(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        RepositoryConfig(**kwargs)
    with pytest.raises(ValueError, match=match):
        RepositoryConfig(**kwargs)


def test_compression_config_validation() -> None:
    with pytest.raises(ConfigurationError, match="algorithm"):
        CompressionConfig(algorithm="lz4")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="between 0 and 9"):
        CompressionConfig(level=10)
    assert RepositoryConfig(
        compression=CompressionConfig(algorithm="none")
    ).effective_compression == (
        "none",
        3,
    )


def test_config_merge_json_and_pickle() -> None:
    base = RepositoryConfig(
        storage=StorageSettings(retries=StorageRetriesSettings(max_tries=3, initial_backoff_ms=7)),
        max_concurrent_requests=10,
    )
    override = RepositoryConfig(
        storage=StorageSettings(retries=StorageRetriesSettings(max_tries=5)),
        inline_chunk_threshold_bytes=0,
    )
    merged = base.merge(override)
    assert merged.storage is not None
    assert merged.storage.retries is not None
    assert merged.storage.retries.max_tries == 5
    assert merged.storage.retries.initial_backoff_ms == 7  # nested merge, field by field
    assert merged.max_concurrent_requests == 10
    assert merged.inline_chunk_threshold_bytes == 0
    assert config_from_json(config_to_json(merged)) == merged
    assert config_to_json(RepositoryConfig()) == {}
    assert config_from_json({"max_concurrent_requests": 4, "from_the_future": 1}) == (
        RepositoryConfig(max_concurrent_requests=4)
    )
    assert pickle.loads(pickle.dumps(merged)) == merged
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        merged.max_concurrent_requests = 1  # type: ignore[misc]


# --- ids and format ----------------------------------------------------------------------------


def test_ids_are_20_crockford_characters() -> None:
    ids = {new_id() for _ in range(2000)}
    assert len(ids) == 2000
    for value in ids:
        assert is_valid_id(value)
        assert len(value) == 20
        assert set(value) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
        assert value[-1] in "0G"  # 96 bits: the last character carries 1 bit and 4 zero bits
    assert is_valid_id(INITIAL_SNAPSHOT_ID)
    assert not is_valid_id("1CECHNKREP0F1RSTCMTI")  # I is not Crockford
    assert not is_valid_id("short")


def test_ids_are_unique_across_threads_and_a_fork() -> None:
    """``new_id`` hands out random bytes read in batches: never the same twice, whether two
    threads ask at once or a forked child asks for the ids its parent still holds."""
    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(lambda _: new_id(), range(4000)))
    assert len(set(ids)) == 4000
    new_id()  # the parent now holds the rest of a batch
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids, then leave without the parent's cleanup
        try:
            os.write(write, " ".join(new_id() for _ in range(10)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    assert len(child) == 10
    assert child.isdisjoint(new_id() for _ in range(10))


def test_now_ms_is_the_current_utc_time_to_the_millisecond() -> None:
    import time

    for _ in range(3):  # built once per millisecond: each new millisecond gives a new stamp
        before = datetime.now(UTC) - timedelta(milliseconds=1)
        stamp = now_ms()
        assert before <= stamp <= datetime.now(UTC)
        assert stamp.utcoffset() == timedelta(0)
        assert stamp.microsecond % 1000 == 0
        time.sleep(0.003)


async def test_objects_on_storage_match_the_documented_format() -> None:
    storage = in_memory_storage()
    repo = await Repository.create_async(storage)
    assert await keys_of(storage) == {"repo", f"snapshots/{INITIAL_SNAPSHOT_ID}"}
    header = bytes((await storage.get("repo")).data).split(b"\n", 1)[0]
    assert header == b"icechunk_storage repo-info 2 zlib"
    first = await commit_values(repo, {"small": b"s" * 512, "big": b"b" * 513})
    objects = await keys_of(storage)
    chunks = {key for key in objects if key.startswith("chunks/")}
    assert len(chunks) == 1  # 513 bytes: a chunk object; 512 bytes: inline in the snapshot
    assert bytes((await storage.get(chunks.pop())).data) == b"b" * 513
    assert f"snapshots/{first}" in objects
    snapshot_header = bytes((await storage.get(f"snapshots/{first}")).data).split(b"\n", 1)[0]
    assert snapshot_header == b"icechunk_storage snapshot 2 zlib"
    (manifest,) = {key for key in objects if key.startswith("manifests/")}  # both keys: node ""
    assert bytes((await storage.get(manifest)).data).split(b"\n", 1)[0] == (
        b"icechunk_storage manifest 2 zlib"
    )
    backups = {key for key in objects if key.startswith("overwritten/")}
    assert len(backups) == 1
    (backup,) = backups
    assert backup.startswith("overwritten/repo.")
    _, millis, suffix = backup.split(".")
    assert len(millis) == 14
    assert millis.isdigit()
    assert is_valid_id(suffix)


async def test_uncompressed_metadata_is_plain_json() -> None:
    storage = in_memory_storage()
    await Repository.create_async(
        storage, RepositoryConfig(compression=CompressionConfig(algorithm="none"))
    )
    header, body = bytes((await storage.get("repo")).data).split(b"\n", 1)
    assert header == b"icechunk_storage repo-info 2 none"
    assert body.startswith(b'{"branches":{"main":"1CECHNKREP0F1RSTCMT0"}')


async def test_foreign_or_newer_info_objects_are_refused_clearly() -> None:
    storage = in_memory_storage()
    await storage.put("repo", b"not a repository at all")
    with pytest.raises(NotARepositoryError, match="an object named 'repo' in another format"):
        await Repository.open_async(storage)
    await storage.put("repo", b"icechunk_storage repo-info 99 none\n{}")
    with pytest.raises(RepositoryFormatError, match="format version 99"):
        await Repository.open_async(storage)
    await storage.put("repo", b"icechunk_storage repo-info 1 zlib\nnot zlib")
    with pytest.raises(RepositoryFormatError, match="corrupt"):
        await Repository.open_async(storage)
    await storage.put(
        "repo", b'icechunk_storage repo-info 1 none\n{"config":{"max_concurrent_requests":0}}'
    )
    with pytest.raises(RepositoryFormatError, match="corrupt"):
        await Repository.open_async(storage)


@pytest.mark.parametrize(
    ("objects", "found"),
    [
        ({"repo": "ICE🧊CHUNK".encode() + b"\x00binary"}, "an Icechunk repository"),
        ({"refs/branch.main/ref.json": b'{"snapshot":"X"}'}, r"Icechunk repository \(spec v1"),
        ({"zarr.json": b'{"zarr_format":3,"node_type":"group"}'}, "a plain Zarr hierarchy"),
        (
            {"data/file.csv": b"a,b"},
            r"objects that are not a repository \(e\.g\. 'data/file\.csv'\)",
        ),
    ],
    ids=["icechunk-v2", "icechunk-v1", "zarr", "files"],
)
async def test_foreign_data_is_never_mistaken_for_a_repository(
    backend: Backend, objects: dict[str, bytes], found: str
) -> None:
    storage = backend.new()
    for key, data in objects.items():
        await storage.put(key, data)
    with pytest.raises(NotARepositoryError, match=found) as info:
        await Repository.exists_async(storage)
    assert isinstance(info.value, RepositoryNotFoundError)
    with pytest.raises(NotARepositoryError, match=found):
        await Repository.open_async(storage)
    with pytest.raises(RepositoryLocationError, match=found):
        await Repository.create_async(storage)
    with pytest.raises(RepositoryLocationError, match=found):
        await Repository.open_or_create_async(storage)
    assert await keys_of(storage) == set(objects)  # nothing written


async def test_an_empty_location_costs_one_listing_to_tell_apart() -> None:
    """What every create finds, and every open of a missing repository: an empty prefix.
    One GET of the info object and one listing decide it (the keys that would name foreign
    content are probed only when something is there); a create adds only its own writes,
    the conditions probe and one more listing."""
    storage = InstrumentedStorage(in_memory_storage())
    with pytest.raises(RepositoryNotFoundError):
        await Repository.open_async(storage)
    assert {name: stats.calls for name, stats in storage.stats.items()} == {"get": 1, "list": 1}
    storage.reset()
    await Repository.create_async(storage)
    calls = {name: stats.calls for name, stats in storage.stats.items()}
    assert "exists" not in calls
    assert calls == {"get": 1, "list": 2, "put": 6, "delete": 1}


# --- create, open, exists, config --------------------------------------------------------------


def test_seed_example_works_as_written_synchronously() -> None:
    storage = in_memory_storage()
    config = RepositoryConfig(
        storage=StorageSettings(
            unsafe_use_conditional_update=False, unsafe_use_conditional_create=False
        )
    )
    repo = Repository.create(storage=storage, config=config)
    assert repo.config.storage is not None
    assert repo.config.storage.unsafe_use_conditional_update is False
    assert repo.config.storage.unsafe_use_conditional_create is False
    assert not repo.storage.capabilities.conditional_update
    session = repo.writable_session("main")
    sync(session.storage.put("zarr.json", b"{}"))
    snapshot_id = session.commit("first commit")
    assert [info.id for info in repo.ancestry(branch="main")] == [snapshot_id, INITIAL_SNAPSHOT_ID]
    reopened = Repository.open(storage)  # the persisted config keeps the repository unsafe
    assert reopened.config.storage is not None
    assert reopened.config.storage.unsafe_use_conditional_update is False


async def test_create_open_exists_fetch_config(backend: Backend) -> None:
    storage = backend.new()
    assert not await Repository.exists_async(storage)
    assert await Repository.fetch_config_async(storage) is None
    with pytest.raises(RepositoryNotFoundError, match=r"No repository at .*Repository\.create"):
        await Repository.open_async(storage)
    with pytest.raises(FileNotFoundError):
        await Repository.open_async(storage)
    repo = await Repository.create_async(storage)
    assert await Repository.exists_async(storage)
    assert repo.storage.settings == repo.config.storage
    assert await repo.list_branches_async() == {"main"}
    assert await repo.lookup_branch_async("main") == INITIAL_SNAPSHOT_ID
    initial = await repo.lookup_snapshot_async(INITIAL_SNAPSHOT_ID)
    assert initial.parent_id is None
    assert initial.message == "Repository initialized"
    with pytest.raises(RepositoryAlreadyExistsError, match="already exists"):
        await Repository.create_async(storage)
    with pytest.raises(FileExistsError):
        await Repository.create_async(storage)
    opened = await Repository.open_async(storage)
    assert await opened.lookup_branch_async("main") == INITIAL_SNAPSHOT_ID
    assert await Repository.fetch_config_async(storage) == RepositoryConfig()


def test_sync_forms_of_create_open_exists(backend: Backend) -> None:
    storage = backend.new()
    assert not Repository.exists(storage)
    repo = Repository.open_or_create(storage)
    assert Repository.exists(storage)
    again = Repository.open_or_create(storage)
    assert again.lookup_branch("main") == repo.lookup_branch("main") == INITIAL_SNAPSHOT_ID
    assert Repository.fetch_config(storage) == RepositoryConfig()


async def test_settings_merge_user_over_persisted_over_backend_defaults() -> None:
    storage = in_memory_storage()
    backend_defaults = storage.default_settings()
    created = await Repository.create_async(
        storage,
        RepositoryConfig(
            storage=StorageSettings(
                retries=StorageRetriesSettings(max_tries=3, initial_backoff_ms=7)
            ),
            max_concurrent_requests=11,
        ),
    )
    assert created.config.storage is not None
    assert created.config.storage.retries is not None
    assert created.config.storage.retries.max_tries == 3
    assert created.config.storage.concurrency == backend_defaults.concurrency  # backend default
    assert created.config.max_concurrent_requests == 11

    persisted = await Repository.fetch_config_async(storage)
    assert persisted == RepositoryConfig(
        storage=StorageSettings(retries=StorageRetriesSettings(max_tries=3, initial_backoff_ms=7)),
        max_concurrent_requests=11,
    )  # only what was set: backend defaults are not baked in

    opened = await Repository.open_async(storage)  # the persisted config applies
    assert opened.config.storage is not None
    assert opened.config.storage.retries is not None
    assert opened.config.storage.retries.max_tries == 3
    assert opened.storage.settings.effective_retries[:2] == (3, 7)
    assert opened.config.max_concurrent_requests == 11

    user = RepositoryConfig(
        storage=StorageSettings(retries=StorageRetriesSettings(max_tries=5)),
        inline_chunk_threshold_bytes=0,
    )
    overridden = await Repository.open_async(storage, user)
    assert overridden.storage.settings.effective_retries[:2] == (5, 7)  # user > persisted
    assert overridden.config.max_concurrent_requests == 11
    assert overridden.config.inline_chunk_threshold_bytes == 0
    assert (await Repository.fetch_config_async(storage)) == persisted  # open does not save

    await overridden.save_config_async()
    saved = await Repository.fetch_config_async(storage)
    assert saved is not None
    assert saved.storage is not None
    assert saved.storage.retries is not None
    assert saved.storage.retries.max_tries == 5
    assert saved.inline_chunk_threshold_bytes == 0
    assert (await Repository.open_async(storage)).storage.settings.effective_retries[:2] == (5, 7)


async def test_settings_given_to_the_storage_count_as_the_users() -> None:
    storage = in_memory_storage().with_settings(
        StorageSettings(concurrency=StorageConcurrencySettings(ideal_concurrent_request_size=99))
    )
    repo = await Repository.create_async(storage, RepositoryConfig(storage=UNSAFE))
    settings = repo.storage.settings
    assert settings.effective_concurrency[1] == 99
    assert not settings.conditional_update
    assert await Repository.fetch_config_async(storage) == RepositoryConfig(storage=UNSAFE)


def test_save_config_sync() -> None:
    storage = in_memory_storage()
    Repository.create(storage)
    repo = Repository.open(storage, RepositoryConfig(max_concurrent_requests=7))
    repo.save_config()
    assert Repository.fetch_config(storage) == RepositoryConfig(max_concurrent_requests=7)


async def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(ConfigurationError, match="storage must be a Storage"):
        await Repository.create_async("s3://bucket")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="config must be a RepositoryConfig"):
        await Repository.create_async(in_memory_storage(), {"storage": None})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Repository\.create"):
        Repository(in_memory_storage(), RepositoryConfig())


# --- where a repository may be created ---------------------------------------------------------


async def test_empty_prefix_on_a_cloud_store_is_refused_before_any_io() -> None:
    counted = InstrumentedStorage(helpers.CloudLikeMemoryStorage(prefix=""))
    with pytest.raises(RepositoryLocationError, match="empty prefix"):
        await Repository.create_async(counted)
    with pytest.raises(ValueError, match="Give the storage a prefix"):
        await Repository.create_async(counted)
    assert counted.totals().calls == 0
    with_prefix = helpers.CloudLikeMemoryStorage(prefix="datasets/one")
    repo = await Repository.create_async(with_prefix)
    assert await repo.lookup_branch_async("main") == INITIAL_SNAPSHOT_ID
    assert "datasets/one/repo" in with_prefix._objects
    # Memory and local storages are not cloud stores: the root is fine there.
    await Repository.create_async(in_memory_storage())


async def test_prefix_holding_objects_is_refused_before_anything_is_written(
    backend: Backend,
) -> None:
    storage = backend.new()
    await storage.put("someone/elses/data", b"precious")
    with pytest.raises(RepositoryLocationError, match=r"already holds objects .*someone/elses"):
        await Repository.create_async(storage)
    assert await keys_of(storage) == {"someone/elses/data"}


async def test_concurrent_creators_exactly_one_succeeds(backend: Backend) -> None:
    # Latency makes both creators pass the emptiness check before either writes.
    storage = LatencyStorage(backend.new(), 0.01)
    outcomes = await asyncio.gather(
        Repository.create_async(storage),
        Repository.create_async(storage),
        return_exceptions=True,
    )
    created = [o for o in outcomes if isinstance(o, Repository)]
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(created) == 1
    assert len(failed) == 1
    assert isinstance(failed[0], RepositoryAlreadyExistsError)
    assert "created at" in str(failed[0])
    assert "by someone else" in str(failed[0])


async def test_without_conditional_create_two_creators_both_succeed(backend: Backend) -> None:
    """The documented trade-off of unsafe_use_conditional_create=False."""
    storage = LatencyStorage(backend.new(), 0.01)
    config = RepositoryConfig(storage=UNSAFE)
    outcomes = await asyncio.gather(
        Repository.create_async(storage, config),
        Repository.create_async(storage, config),
        return_exceptions=True,
    )
    assert all(isinstance(o, Repository) for o in outcomes)


async def test_open_or_create_race_gives_both_the_same_repository(backend: Backend) -> None:
    storage = LatencyStorage(backend.new(), 0.01)
    first, second = await asyncio.gather(
        Repository.open_or_create_async(storage), Repository.open_or_create_async(storage)
    )
    snapshot_id = await commit_values(first, {"k": b"v"})
    assert await second.lookup_branch_async("main") == snapshot_id


async def test_crash_mid_create_leaves_no_valid_looking_repository(backend: Backend) -> None:
    storage = backend.new()
    with pytest.raises(StorageError, match="simulated crash"):
        await Repository.create_async(helpers.CrashingStorage(storage))
    assert await keys_of(storage)  # the initial snapshot was written ...
    assert not await Repository.exists_async(storage)  # ... but no repository exists
    with pytest.raises(RepositoryNotFoundError):
        await Repository.open_async(storage)
    with pytest.raises(RepositoryLocationError, match="already holds objects"):
        await Repository.create_async(storage)


# --- sessions ----------------------------------------------------------------------------------


async def test_session_view_reads_writes_lists_and_deletes(backend: Backend) -> None:
    repo = await Repository.create_async(backend.new())
    session = await repo.writable_session_async("main")
    view = session.storage
    assert isinstance(view, Storage)
    assert view.capabilities.can_write
    assert not session.has_uncommitted_changes
    big = bytes(range(256)) * 8
    await view.put("zarr.json", b'{"zarr_format":3}')
    await view.put("array/c/0/0", big)
    await view.put("array/c/0/1", memoryview(big)[:100])
    assert session.has_uncommitted_changes
    assert await read(session, "array/c/0/0") == big
    assert bytes((await view.get("array/c/0/0", helpers_range(5, 10))).data) == big[5:10]
    assert await keys_of(view) == {"zarr.json", "array/c/0/0", "array/c/0/1"}
    listing = await view.list_dir("array/c")
    assert listing.prefixes == ["array/c/0/"]
    assert (await view.list_dir("array/c/0")).objects[0].key == "array/c/0/0"
    assert (await view.head("array/c/0/0")).size == len(big)

    other = await repo.writable_session_async("main")  # uncommitted writes are private
    assert await keys_of(other.storage) == set()

    snapshot_id = await session.commit_async("first", {"author": "test"})
    assert session.read_only
    assert session.snapshot_id == snapshot_id
    assert await read(session, "array/c/0/0") == big  # reads the new snapshot

    second = await repo.writable_session_async("main")
    assert await read(second, "array/c/0/1") == big[:100]
    await second.storage.delete("array/c/0/1")
    await second.storage.delete("never/there")
    await second.storage.copy("zarr.json", "copy.json")
    result = await second.storage.delete_many(["array/c/0/0", "missing"])
    assert (result.deleted_objects, result.deleted_bytes) == (1, len(big))
    assert await keys_of(second.storage) == {"zarr.json", "copy.json"}
    with pytest.raises(ObjectNotFoundError):
        await second.storage.get("array/c/0/0")
    third_id = await second.commit_async("second")
    ancestry = await repo.ancestry_async(branch="main")
    assert [info.id for info in ancestry] == [third_id, snapshot_id, INITIAL_SNAPSHOT_ID]
    assert ancestry[1].metadata == {"author": "test"}
    assert ancestry[0].parent_id == snapshot_id


def helpers_range(start: int, end: int) -> Any:
    from icechunk_storage import RangeByteRequest

    return RangeByteRequest(start, end)


async def test_snapshots_read_exactly_what_was_committed(backend: Backend) -> None:
    repo = await Repository.create_async(backend.new())
    first = await commit_values(repo, {"a": b"a1" * 400, "b": b"b1", "gone": b"x"})
    reader = await repo.readonly_session_async(branch="main")  # pinned at `first`
    await repo.create_tag_async("v1", first)
    second = await commit_values(repo, {"a": b"a2", "b": None, "gone": None, "c": b"c2" * 400})

    for session in (
        reader,
        await repo.readonly_session_async(tag="v1"),
        await repo.readonly_session_async(snapshot_id=first),
    ):
        assert session.snapshot_id == first
        assert await keys_of(session.storage) == {"a", "b", "gone"}
        assert await read(session, "a") == b"a1" * 400
        assert await read(session, "b") == b"b1"
    latest = await repo.readonly_session_async(branch="main")
    assert latest.snapshot_id == second
    assert await keys_of(latest.storage) == {"a", "c"}
    assert await read(latest, "a") == b"a2"
    assert await read(latest, "c") == b"c2" * 400
    # a fresh process-independent copy reads the same (the snapshot object, not a cache)
    reopened = await Repository.open_async(repo.storage)
    pinned = await reopened.readonly_session_async(snapshot_id=first)
    assert await read(pinned, "a") == b"a1" * 400


async def test_readonly_sessions_refuse_writes_clearly() -> None:
    repo = await Repository.create_async(in_memory_storage())
    first = await commit_values(repo, {"k": b"v"})
    session = await repo.readonly_session_async(snapshot_id=first)
    assert session.read_only
    assert session.branch is None
    view = session.storage
    assert not view.capabilities.can_write
    attempts: list[Callable[[], Coroutine[Any, Any, object]]] = [
        lambda: view.put("k", b"w"),
        lambda: view.delete("k"),
        lambda: view.copy("k", "k2"),
        lambda: view.delete_many(["k"]),
        lambda: session.commit_async("nope", allow_empty=True),
    ]
    for attempt in attempts:
        with pytest.raises(ReadOnlySessionError, match=r"read-only .*writable_session"):
            await attempt()
    with pytest.raises(ReadOnlyStorageError):  # the Storage contract's error, too
        await view.put("k", b"w")
    assert await read(session, "k") == b"v"


async def test_committed_session_becomes_read_only() -> None:
    repo = await Repository.create_async(in_memory_storage())
    session = await repo.writable_session_async("main")
    await session.storage.put("k", b"v")
    snapshot_id = await session.commit_async("one")
    with pytest.raises(ReadOnlySessionError, match=f"committed as snapshot {snapshot_id}"):
        await session.storage.put("k", b"w")
    with pytest.raises(ReadOnlySessionError):
        await session.commit_async("again")


async def test_commit_requires_changes_unless_allowed() -> None:
    repo = await Repository.create_async(in_memory_storage())
    session = await repo.writable_session_async("main")
    with pytest.raises(SessionStateError, match="allow_empty=True"):
        await session.commit_async("empty")
    snapshot_id = await session.commit_async("empty", allow_empty=True)
    assert await repo.lookup_branch_async("main") == snapshot_id
    other = await repo.writable_session_async("main")
    await other.storage.put("k", b"v")
    with pytest.raises(ConfigurationError, match="JSON-serializable"):
        await other.commit_async("bad metadata", {"when": object()})  # type: ignore[dict-item]
    other.discard_changes()
    assert not other.has_uncommitted_changes


async def test_session_conditional_writes_and_versions() -> None:
    repo = await Repository.create_async(in_memory_storage())
    session = await repo.writable_session_async("main")
    view = session.storage
    first = await view.put("k", b"1", mode="create")
    with pytest.raises(AlreadyExistsError):
        await view.put("k", b"2", mode="create")
    second = await view.put("k", b"2", mode=first)
    with pytest.raises(PreconditionFailedError):
        await view.put("k", b"3", mode=first)
    assert await view.get_if_changed("k", second) is None
    await session.commit_async("c")
    after = await repo.writable_session_async("main")
    assert (await after.storage.head("k")).version == second  # versions survive the commit
    big = await after.storage.put("big", b"x" * 5000, mode="create")
    with pytest.raises(AlreadyExistsError):  # checked before uploading a chunk object
        await after.storage.put("big", b"y" * 5000, mode="create")
    assert (await after.storage.head("big")).version == big


async def test_max_concurrent_requests_is_a_per_repository_limit() -> None:
    probe = helpers.InFlight()
    storage = helpers.ProbeStorage(in_memory_storage(), probe)
    before = get_max_concurrent_requests()
    repo = await Repository.create_async(storage, RepositoryConfig(max_concurrent_requests=3))
    assert get_max_concurrent_requests() == before  # the process-wide limit is untouched
    await commit_values(repo, {f"k{i}": bytes([i]) * 600 for i in range(20)})
    session = await repo.readonly_session_async(branch="main")
    await session.storage.head("k0")  # load the snapshot
    probe.maximum = 0
    await asyncio.gather(*(session.storage.get(f"k{i}") for i in range(20)))
    assert probe.maximum == 3


async def test_a_sessions_chunk_fetch_keeps_the_repository_limit() -> None:
    unbatched = helpers.UnbatchedProbeMemory()  # one backend request per chunk read
    repo = await Repository.create_async(unbatched, RepositoryConfig(max_concurrent_requests=3))
    await commit_values(repo, {f"k{i}": bytes([i]) * 600 for i in range(20)})
    session = await repo.readonly_session_async(branch="main")
    await session.storage.head("k0")
    unbatched.probe.maximum = 0
    values = await session.storage.get_many([(f"k{i}", None) for i in range(20)])
    assert values == [bytes([i]) * 600 for i in range(20)]
    assert unbatched.probe.maximum == 3
    with pytest.raises(ValueError, match="max_concurrency"):
        await unbatched.get_many([("x", None)], max_concurrency=0)


# --- branches and tags -------------------------------------------------------------------------


async def test_branches() -> None:
    repo = await Repository.create_async(in_memory_storage())
    first = await commit_values(repo, {"k": b"1"})
    await repo.create_branch_async("dev", first)
    assert await repo.list_branches_async() == {"main", "dev"}
    on_dev = await commit_values(repo, {"k": b"dev"}, branch="dev")
    assert [i.id for i in await repo.ancestry_async(branch="dev")] == [
        on_dev,
        first,
        INITIAL_SNAPSHOT_ID,
    ]
    assert await repo.lookup_branch_async("main") == first
    with pytest.raises(RefAlreadyExistsError, match="already exists"):
        await repo.create_branch_async("dev", first)
    with pytest.raises(SnapshotNotFoundError):
        await repo.create_branch_async("other", new_id())

    await repo.reset_branch_async("dev", first)
    assert await repo.lookup_branch_async("dev") == first
    with pytest.raises(ConflictError) as info:
        await repo.reset_branch_async("dev", INITIAL_SNAPSHOT_ID, from_snapshot_id=on_dev)
    assert (info.value.expected_parent, info.value.actual_parent) == (on_dev, first)
    await repo.reset_branch_async("dev", on_dev, from_snapshot_id=first)
    assert await repo.lookup_branch_async("dev") == on_dev

    await repo.delete_branch_async("dev")
    assert await repo.list_branches_async() == {"main"}
    with pytest.raises(BranchNotFoundError, match="No branch 'dev'"):
        await repo.writable_session_async("dev")
    with pytest.raises(LookupError):
        await repo.delete_branch_async("dev")
    with pytest.raises(ConfigurationError, match="'main' branch cannot be deleted"):
        await repo.delete_branch_async("main")
    # a deleted branch's snapshots stay readable by id
    session = await repo.readonly_session_async(snapshot_id=on_dev)
    assert await read(session, "k") == b"dev"


async def test_tags() -> None:
    repo = await Repository.create_async(in_memory_storage())
    first = await commit_values(repo, {"k": b"1"})
    await repo.create_tag_async("v1", first)
    assert await repo.list_tags_async() == {"v1"}
    assert await repo.lookup_tag_async("v1") == first
    assert [i.id for i in await repo.ancestry_async(tag="v1")] == [first, INITIAL_SNAPSHOT_ID]
    with pytest.raises(RefAlreadyExistsError):
        await repo.create_tag_async("v1", INITIAL_SNAPSHOT_ID)
    await repo.delete_tag_async("v1")
    assert await repo.list_tags_async() == set()
    with pytest.raises(TagNotFoundError):
        await repo.readonly_session_async(tag="v1")
    with pytest.raises(TagNotFoundError):
        await repo.delete_tag_async("v1")
    with pytest.raises(RefAlreadyExistsError, match="never reused"):
        await repo.create_tag_async("v1", first)


@pytest.mark.parametrize("name", ["", "a/b", "tab\there", "x" * 256])
async def test_bad_ref_names_and_ids(name: str) -> None:
    repo = await Repository.create_async(in_memory_storage())
    with pytest.raises(ConfigurationError, match="Invalid branch name"):
        await repo.create_branch_async(name, INITIAL_SNAPSHOT_ID)
    with pytest.raises(ConfigurationError, match="Invalid tag name"):
        await repo.create_tag_async(name, INITIAL_SNAPSHOT_ID)
    with pytest.raises(ConfigurationError, match="Invalid snapshot id"):
        await repo.create_tag_async("ok", "not-an-id")
    with pytest.raises(ConfigurationError, match="exactly one of branch, tag or snapshot_id"):
        await repo.readonly_session_async("main", tag="t")
    with pytest.raises(ConfigurationError, match="exactly one"):
        await repo.ancestry_async()


def test_refs_sync_forms() -> None:
    repo = Repository.create(in_memory_storage())
    repo.create_branch("dev", INITIAL_SNAPSHOT_ID)
    repo.create_tag("t", INITIAL_SNAPSHOT_ID)
    session = repo.writable_session("dev")
    sync(session.storage.put("k", b"v"))
    snapshot_id = session.commit("on dev")
    repo.reset_branch("main", snapshot_id)
    assert repo.lookup_branch("main") == snapshot_id
    assert repo.lookup_tag("t") == INITIAL_SNAPSHOT_ID
    assert repo.lookup_snapshot(snapshot_id).message == "on dev"
    repo.delete_tag("t")
    repo.delete_branch("dev")
    assert repo.list_branches() == {"main"}
    assert repo.list_tags() == set()
    assert repo.readonly_session(tag=None, snapshot_id=snapshot_id).snapshot_id == snapshot_id


# --- the commit protocol -----------------------------------------------------------------------


async def test_commit_conflict_carries_expected_and_actual_parent(backend: Backend) -> None:
    repo = await Repository.create_async(backend.new())
    one = await repo.writable_session_async("main")
    two = await repo.writable_session_async("main")
    await one.storage.put("a", b"1")
    await two.storage.put("b", b"2")
    winner = await one.commit_async("one")
    with pytest.raises(ConflictError) as info:
        await two.commit_async("two")
    assert info.value.expected_parent == INITIAL_SNAPSHOT_ID
    assert info.value.actual_parent == winner
    assert info.value.branch == "main"
    assert isinstance(info.value, RepositoryError)
    assert f"expected its tip to be {INITIAL_SNAPSHOT_ID}, but it is at {winner}" in str(info.value)
    assert two.has_uncommitted_changes
    assert not two.read_only
    assert [i.id for i in await repo.ancestry_async(branch="main")] == [winner, INITIAL_SNAPSHOT_ID]


async def _interleaved_commits(
    storage: Storage, config: RepositoryConfig
) -> tuple[Repository, list[Any]]:
    """Two sessions on the same parent; both read the info object before either writes it."""
    gate = helpers.Gate(reads=2)
    repo = await Repository.create_async(helpers.GatedStorage(storage, gate), config)
    one = await repo.writable_session_async("main")
    two = await repo.writable_session_async("main")
    await one.storage.put("from/one", b"1")
    await two.storage.put("from/two", b"2")
    gate.arm()
    outcomes = await asyncio.gather(
        one.commit_async("one"), two.commit_async("two"), return_exceptions=True
    )
    gate.armed = False
    return repo, list(outcomes)


async def test_interleaved_commits_with_conditional_update_lose_nothing(backend: Backend) -> None:
    """Also the default on the local filesystem: it commits safely out of the box."""
    repo, outcomes = await _interleaved_commits(backend.new(), RepositoryConfig())
    assert repo.storage.capabilities.conditional_update
    ids = [o for o in outcomes if isinstance(o, str)]
    conflicts = [o for o in outcomes if isinstance(o, ConflictError)]
    assert len(ids) == 1, outcomes
    assert len(conflicts) == 1, outcomes
    assert conflicts[0].actual_parent == ids[0]
    assert [i.id for i in await repo.ancestry_async(branch="main")] == [ids[0], INITIAL_SNAPSHOT_ID]


async def test_interleaved_commits_without_conditional_update_lose_one(backend: Backend) -> None:
    """The documented trade-off of unsafe_use_conditional_update=False, shown deterministically:
    both commits return a snapshot id, but only the last writer's is on the branch."""
    repo, outcomes = await _interleaved_commits(backend.new(), RepositoryConfig(storage=UNSAFE))
    assert not repo.storage.capabilities.conditional_update
    assert all(isinstance(o, str) for o in outcomes), outcomes
    history = [i.id for i in await repo.ancestry_async(branch="main")]
    assert len(history) == 2  # one commit on top of the initial snapshot ...
    lost = [o for o in outcomes if o not in history]
    assert len(lost) == 1  # ... and the other, although "committed", is lost
    tip = await repo.readonly_session_async(branch="main")
    assert len(await keys_of(tip.storage)) == 1


@pytest.mark.parametrize(
    "error",
    [
        PreconditionFailedError("repo", None),  # re-sent PUT, readback finds another writer
        ConnectionLostError("response lost; the retries ran out"),
    ],
    ids=["precondition-after-resend", "transient"],
)
async def test_a_landed_commit_whose_response_is_lost_is_not_a_conflict(
    backend: Backend, error: BaseException
) -> None:
    """The branch update lands, its response is lost, another writer commits on top before
    the retry: the commit finds its own snapshot in the branch's history and succeeds, once."""
    inner = backend.new()
    await Repository.create_async(inner)
    other = await Repository.open_async(inner)  # the other writer: no fault injection

    async def another_commit() -> object:
        return await commit_values(other, {"other": b"o"})

    script = helpers.LostResponse(error=error, meanwhile=another_commit)
    repo = await Repository.open_async(helpers.LosingStorage(inner, script))
    session = await repo.writable_session_async("main")
    await session.storage.put("mine", b"m" * 1000)
    snapshot_id = await session.commit_async("lands, but its response is lost")
    assert script.lost == 1
    history = [info.id for info in await repo.ancestry_async(branch="main")]
    assert history.count(snapshot_id) == 1
    assert history[1:] == [snapshot_id, INITIAL_SNAPSHOT_ID]  # the other commit is on top
    assert session.read_only
    assert session.snapshot_id == snapshot_id
    tip = await repo.readonly_session_async(branch="main")
    assert await read(tip, "mine") == b"m" * 1000
    assert await read(tip, "other") == b"o"


async def test_a_lost_response_on_a_ref_change_is_not_reported_as_a_failure() -> None:
    """Nobody wrote after the lost write: the info read back is exactly what was written."""

    async def nothing() -> object:
        return None

    script = helpers.LostResponse(error=ConnectionLostError("lost"), meanwhile=nothing)
    repo = await Repository.create_async(helpers.LosingStorage(in_memory_storage(), script))
    await repo.create_tag_async("v1", INITIAL_SNAPSHOT_ID)  # not RefAlreadyExistsError
    assert script.lost == 1
    assert await repo.lookup_tag_async("v1") == INITIAL_SNAPSHOT_ID


async def test_persistent_transient_errors_on_the_update_are_raised() -> None:
    """Writes that never land, failing with transient errors: re-checked a few times, then the
    error is raised (not retried 100 times with backoff)."""

    async def nothing() -> object:
        return None

    script = helpers.LostResponse(error=ConnectionLostError("down"), meanwhile=nothing, remaining=0)
    repo = await Repository.create_async(helpers.LosingStorage(in_memory_storage(), script))
    script.remaining, script.land = 1000, False
    session = await repo.writable_session_async("main")
    await session.storage.put("k", b"v")
    with pytest.raises(ConnectionLostError):
        await session.commit_async("storage keeps failing")
    assert script.lost == 1 + MAX_UNCERTAIN_UPDATES
    assert await repo.lookup_branch_async("main") == INITIAL_SNAPSHOT_ID


async def test_version_races_are_retried_transparently(backend: Backend) -> None:
    races = helpers.Races(remaining=7)  # past the 5 immediate attempts, into backoff
    repo = await Repository.create_async(helpers.RacingStorage(backend.new(), races))
    snapshot_id = await commit_values(repo, {"k": b"v"})
    assert races.sabotaged == 7
    assert await repo.lookup_branch_async("main") == snapshot_id
    backups = await keys_of(repo.storage, "overwritten")
    assert len(backups) == 8  # one backup per attempt that got as far as the copy


async def test_update_attempts_exhausted_is_a_clear_error() -> None:
    races = helpers.Races(remaining=1000)
    config = RepositoryConfig(
        repo_update_retries=RepoUpdateRetryConfig(default=StorageRetriesSettings(max_tries=4))
    )
    repo = await Repository.create_async(helpers.RacingStorage(in_memory_storage(), races), config)
    session = await repo.writable_session_async("main")
    await session.storage.put("k", b"v")
    with pytest.raises(
        TooManyConcurrentChangesError, match="after 4 attempts: too many concurrent"
    ) as info:
        await session.commit_async("never lands")
    assert info.value.attempts == 4
    assert races.sabotaged == 4
    assert await repo.lookup_branch_async("main") == INITIAL_SNAPSHOT_ID


def test_update_retry_schedule() -> None:
    rng = random.Random(42)
    for attempt in range(1, 6):
        assert repo_update_delay(attempt, 0.05, 30.0, rng) == 0.0  # five immediate attempts
    samples = {
        attempt: [repo_update_delay(attempt, 0.05, 30.0, rng) for _ in range(300)]
        for attempt in (6, 7, 8, 30, 100)
    }
    assert 0 < max(samples[6]) <= 0.05
    assert 0.05 < max(samples[7]) <= 0.1
    assert 0.1 < max(samples[8]) <= 0.2
    assert 25 < max(samples[30]) <= 30.0  # capped at 30 s
    assert max(samples[100]) <= 30.0
    assert min(samples[30]) < 5  # full jitter


async def test_earlier_info_objects_are_backed_up(backend: Backend) -> None:
    repo = await Repository.create_async(backend.new())
    ids = [await commit_values(repo, {f"k{i}": b"v"}) for i in range(3)]
    await repo.create_tag_async("t", ids[0])
    backups = sorted(await keys_of(repo.storage, "overwritten"))
    assert len(backups) == 4
    # newest first: each backup is the info object as it was before one change
    tips = [decode_info((await repo.storage.get(key)).data).branches["main"] for key in backups]
    assert tips == [ids[2], ids[1], ids[0], INITIAL_SNAPSHOT_ID]
    assert "t" not in decode_info((await repo.storage.get(backups[0])).data).tags


# --- many writers ------------------------------------------------------------------------------


async def _check_history(
    repo: Repository, outcomes: list[helpers.WriterOutcome], commits_per_writer: int
) -> None:
    """Every returned snapshot id is on the branch exactly once, every other attempt was a
    ConflictError, and every snapshot holds exactly the keys committed up to it."""
    commits = [commit for outcome in outcomes for commit in outcome.commits]
    assert [len(outcome.commits) for outcome in outcomes] == [commits_per_writer] * len(outcomes)
    history = await repo.ancestry_async(branch="main")
    assert history[-1].id == INITIAL_SNAPSHOT_ID
    on_branch = [info.id for info in history[:-1]]
    assert len(on_branch) == len(set(on_branch))  # nothing duplicated
    assert set(on_branch) == {snapshot_id for snapshot_id, _ in commits}  # nothing lost
    assert len(on_branch) == len(commits)  # nothing extra
    key_of = dict(commits)
    expected: set[str] = set()
    for info in reversed(history[:-1]):
        expected.add(key_of[info.id])
        session = await repo.readonly_session_async(snapshot_id=info.id)
        assert await keys_of(session.storage) == expected
    tip = await repo.readonly_session_async(branch="main")
    keys = sorted(expected)
    values = await tip.storage.get_many([(key, None) for key in keys])
    for key, value in zip(keys, values, strict=True):
        writer, attempt = key.split("/")
        assert value == helpers.payload(int(writer[1:]), int(attempt[1:]))


def test_concurrent_writers_never_lose_a_commit(backend: Backend) -> None:
    """8 writers x 10 commits each on one branch (in processes on the local filesystem; else
    threads through the sync bridge).
    Every attempt either returned a snapshot id or raised ConflictError (anything else fails
    the test)."""
    storage = backend.new()
    repo = Repository.create(storage)
    writers, commits = backend.writers, backend.commits
    if backend.writers_in_processes:
        outcomes = _run_writer_processes(repo, writers, commits)
    else:
        # latency makes in-memory commits interleave; network backends interleave anyway
        slow = Repository.open(
            LatencyStorage(storage, 0.002) if backend.name == "memory" else storage
        )
        with ThreadPoolExecutor(writers) as pool:
            outcomes = list(
                pool.map(lambda w: helpers.commit_until_sync(slow, w, commits), range(writers))
            )
    assert sum(o.conflicts for o in outcomes) > 0, "the writers never actually competed"
    sync(_check_history(repo, outcomes, commits))


def _run_writer_processes(
    repo: Repository, writers: int, commits: int
) -> list[helpers.WriterOutcome]:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(writers)
    results = context.Queue()
    pickled = pickle.dumps(repo)
    processes = [
        context.Process(target=helpers.writer_process, args=(pickled, w, commits, barrier, results))
        for w in range(writers)
    ]
    for process in processes:
        process.start()
    outcomes: list[helpers.WriterOutcome] = []
    try:
        for _ in processes:
            writer, landed, conflicts, error = results.get(timeout=240)
            assert error is None, f"writer {writer} failed: {error}"
            outcomes.append(helpers.WriterOutcome([(c[0], c[1]) for c in landed], conflicts))
    except queue.Empty:
        pytest.fail("a writer process did not report back")
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
    assert all(process.exitcode == 0 for process in processes)
    return outcomes


async def test_writers_on_different_branches_all_succeed(backend: Backend) -> None:
    """Version races without a branch conflict are retried, never reported."""
    repo = await Repository.create_async(LatencyStorage(backend.new(), 0.002))
    branches = [f"b{i}" for i in range(4)]
    for branch in branches:
        await repo.create_branch_async(branch, INITIAL_SNAPSHOT_ID)

    async def write(branch: str) -> list[str]:
        return [await commit_values(repo, {f"{branch}/{i}": b"v"}, branch) for i in range(3)]

    results = await asyncio.gather(*(write(branch) for branch in branches))
    for branch, ids in zip(branches, results, strict=True):
        history = [info.id for info in await repo.ancestry_async(branch=branch)]
        assert history == [*reversed(ids), INITIAL_SNAPSHOT_ID]


# --- expiration and garbage collection ---------------------------------------------------------


def _big(tag: str) -> bytes:
    return tag.encode() * 600  # above the inline limit: a chunk object


async def _chunk_ids(repo: Repository) -> set[str]:
    return {key.removeprefix("chunks/") for key in await keys_of(repo.storage, "chunks/")}


async def _read_everything(repo: Repository, snapshot_id: str) -> None:
    """Every value of the snapshot reads (RepositoryFormatError if a chunk is gone)."""
    session = await repo.readonly_session_async(snapshot_id=snapshot_id)
    for key in await keys_of(session.storage):
        await session.storage.get(key)


async def test_expire_then_collect_deletes_only_unreferenced_old_objects(
    backend: Backend,
) -> None:
    repo = await Repository.create_async(backend.new())
    one = await commit_values(repo, {"k": _big("A")})
    two = await commit_values(repo, {"k": _big("B")})
    await asyncio.sleep(0.01)
    middle = datetime.now(UTC)
    await asyncio.sleep(0.01)
    three = await commit_values(repo, {"other": _big("C")})
    await repo.create_tag_async("kept", one)  # a tag keeps its snapshot and its chunks
    abandoned = await repo.writable_session_async("main")
    await abandoned.storage.put("never/committed", _big("G"))
    fork = await (await repo.writable_session_async("main")).fork_async()
    await fork.storage.put("never/merged", _big("F"))
    chunks_before = await _chunk_ids(repo)
    assert len(chunks_before) == 5

    expired = await repo.expire_snapshots_async(middle)
    assert expired == {two}  # "one" is a tag's tip, "three" the branch's
    assert [i.id for i in await repo.ancestry_async(branch="main")] == [
        three,
        one,
        INITIAL_SNAPSHOT_ID,
    ]

    await asyncio.sleep(1.05)  # object dates count as up to 1 s early (S3 rounds them down)
    cutoff = datetime.now(UTC)
    late = await repo.writable_session_async("main")
    await late.storage.put("written/after/the/cutoff", _big("L"))  # too new to delete

    dry = await repo.garbage_collect_async(cutoff, dry_run=True)
    assert dry == GCSummary(  # snapshot two's manifest went with it: three rewrote it
        chunks_deleted=2, manifests_deleted=1, snapshots_deleted=1, bytes_deleted=dry.bytes_deleted
    )
    assert len(await _chunk_ids(repo)) == 6  # a dry run deletes nothing
    summary = await repo.garbage_collect_async(cutoff)
    assert summary == dry
    assert summary.bytes_deleted >= 2 * 600  # G and F, and snapshot two
    assert len(await _chunk_ids(repo)) == 4  # A (tag), B and C (main), L (too new)
    assert not await repo.storage.exists(f"snapshots/{two}")
    for snapshot_id in (three, one, INITIAL_SNAPSHOT_ID):
        await _read_everything(repo, snapshot_id)
    with pytest.raises(SnapshotNotFoundError):
        await repo.readonly_session_async(snapshot_id=two)
    await late.commit_async("commits after garbage collection")
    await _read_everything(repo, await repo.lookup_branch_async("main"))
    assert await repo.garbage_collect_async(datetime.now(UTC)) == GCSummary()


async def test_expire_can_delete_expired_refs() -> None:
    repo = await Repository.create_async(in_memory_storage())
    old = await commit_values(repo, {"k": b"v"})
    await repo.create_branch_async("stale", old)
    await repo.create_tag_async("stale-tag", old)
    await asyncio.sleep(0.01)
    newest = await commit_values(repo, {"k": b"w"})
    expired = await repo.expire_snapshots_async(
        datetime.now(UTC), delete_expired_branches=True, delete_expired_tags=True
    )
    assert expired == {old}
    assert await repo.list_branches_async() == {"main"}
    assert await repo.list_tags_async() == set()
    assert [i.id for i in await repo.ancestry_async(branch="main")] == [newest, INITIAL_SNAPSHOT_ID]
    with pytest.raises(ConfigurationError, match="timezone-aware"):
        await repo.garbage_collect_async(datetime.now())
    with pytest.raises(ConfigurationError, match="future"):
        await repo.expire_snapshots_async(datetime.now(UTC) + timedelta(days=1))


async def test_garbage_collection_never_deletes_what_concurrent_writers_reference(
    backend: Backend,
) -> None:
    """Writers commit (and forks merge) while expiration and collection run over and over with
    a cutoff 0.3 s back (plus the 1 s date granularity): longer than any session here lives,
    the documented margin."""
    repo = await Repository.create_async(LatencyStorage(backend.new(), 0.001))
    for round_ in range(3):  # old history and old garbage, for the collector to work on
        await commit_values(repo, {f"old/{round_}": _big(f"o{round_}")})
        garbage = await repo.writable_session_async("main")
        await garbage.storage.put("garbage", _big(f"g{round_}"))
    await asyncio.sleep(1.35)
    stop = asyncio.Event()
    committed: list[str] = []

    async def writer(number: int) -> None:
        attempt = 0
        while not stop.is_set():
            attempt += 1
            session = await repo.writable_session_async("main")
            fork = await session.fork_async()
            await fork.storage.put(f"w{number}/fork{attempt}", _big(f"f{number}.{attempt}"))
            await session.storage.put(f"w{number}/{attempt}", _big(f"{number}.{attempt}"))
            await session.merge_async(fork)
            with contextlib.suppress(ConflictError):  # a conflict: try again on the new tip
                committed.append(await session.commit_async(f"writer {number}"))

    async def collector() -> list[GCSummary]:
        summaries = []
        for _ in range(4):
            margin = datetime.now(UTC) - timedelta(seconds=0.3)
            await repo.expire_snapshots_async(margin)
            summaries.append(await repo.garbage_collect_async(margin))
        stop.set()
        return summaries

    *_, summaries = await asyncio.gather(writer(1), writer(2), collector())
    assert committed
    assert sum(s.chunks_deleted for s in summaries) >= 3  # the old garbage went
    for snapshot_id in [info.id for info in await repo.ancestry_async(branch="main")]:
        await _read_everything(repo, snapshot_id)


# --- pickling ----------------------------------------------------------------------------------


async def test_repository_and_read_only_session_pickle_in_process() -> None:
    repo = await Repository.create_async(
        in_memory_storage(), RepositoryConfig(max_concurrent_requests=5)
    )
    snapshot_id = await commit_values(repo, {"small": b"s", "big": b"b" * 1000})
    repo_copy = pickle.loads(pickle.dumps(repo))
    assert repo_copy == repo
    assert repo_copy.config == repo.config
    reader = await repo.readonly_session_async(snapshot_id=snapshot_id)
    reader_copy = pickle.loads(pickle.dumps(reader))
    assert reader_copy == reader
    assert reader_copy.storage == reader.storage
    assert await read(reader_copy, "big") == b"b" * 1000
    assert await read(reader_copy, "small") == b"s"


async def test_pickling_a_writable_session_names_fork() -> None:
    """A copy written in another process would keep its changes: refused, pointing at fork()."""
    pytest.importorskip("zarr")
    repo = await Repository.create_async(in_memory_storage())
    session = await repo.writable_session_async("main")
    await session.storage.put("k", b"v")
    for what in (session, session.storage, session.store):
        with pytest.raises(SessionPickleError, match=r"session\.fork\(\)") as info:
            pickle.dumps(what)
        assert isinstance(info.value, pickle.PicklingError)
        assert "to_icechunk" in str(info.value)
    await session.commit_async("now read-only")
    assert pickle.loads(pickle.dumps(session)).snapshot_id == session.snapshot_id


async def test_a_pickled_fork_carries_its_changes_back(tmp_path: Path) -> None:
    repo = await Repository.create_async(local_filesystem_storage(tmp_path))
    await commit_values(repo, {"base": b"0"})
    session = await repo.writable_session_async("main")
    await session.storage.put("parent/before", b"p")  # the fork sees it
    fork = await session.fork_async()
    assert fork.is_fork
    assert not session.is_fork
    copy = pickle.loads(pickle.dumps(fork))
    assert await read(copy, "parent/before") == b"p"
    assert await read(copy, "base") == b"0"
    await copy.storage.put("fork/small", b"f")
    await copy.storage.put("fork/big", b"F" * 1000)
    await copy.storage.delete("base")
    back = pickle.loads(pickle.dumps(copy))
    assert not await session.storage.exists("fork/small")  # nothing until merged
    await session.merge_async(back)
    snapshot_id = await session.commit_async("forked writes")
    tip = await repo.readonly_session_async(snapshot_id=snapshot_id)
    assert await keys_of(tip.storage) == {"parent/before", "fork/small", "fork/big"}
    assert await read(tip, "fork/big") == b"F" * 1000
    with pytest.raises(SessionStateError, match="fork cannot be committed"):
        await back.commit_async("a fork commits")


async def test_merge_rule_for_keys_written_twice(tmp_path: Path) -> None:
    """A fork's change applies over the value it started from; anything else is a conflict."""
    repo = await Repository.create_async(local_filesystem_storage(tmp_path))
    await commit_values(repo, {"shared": b"0"})
    session = await repo.writable_session_async("main")
    await session.storage.put("meta", b"parent")
    one = await session.fork_async()
    two = pickle.loads(pickle.dumps(one))  # a copy of the same fork, as each dask task gets
    await one.storage.put("shared", b"1")
    await one.storage.put("meta", b"overwritten by the fork")  # sequential: fine
    await two.storage.put("own", b"2")
    await two.storage.put("shared", b"2")  # both forks changed "shared" from b"0"
    await session.merge_async(one, one)  # the same change twice is merged once
    with pytest.raises(MergeConflictError, match="'shared'") as info:
        await session.merge_async(two)
    assert info.value.keys == ["shared"]
    assert not await session.storage.exists("own")  # nothing of the conflicting fork merged
    assert await read(session, "meta") == b"overwritten by the fork"

    three = await session.fork_async()
    await three.storage.put("later", b"fork")
    await session.storage.put("later", b"parent, after forking")
    with pytest.raises(MergeConflictError):
        await session.merge_async(three)

    other = await (await repo.writable_session_async("main")).fork_async()
    await session.commit_async("the session moves on")
    with pytest.raises(SessionStateError, match="not forked from this session"):
        await (await repo.writable_session_async("main")).merge_async(other)
    with pytest.raises(ConfigurationError, match=r"forks made by Session\.fork"):
        await (await repo.writable_session_async("main")).merge_async(session)


def test_forks_work_in_a_spawned_process(backend: Backend) -> None:
    repo = Repository.create(backend.new())
    session = repo.writable_session("main")
    sync(session.storage.put("from/parent", b"parent" * 200))
    fork = session.fork()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        pickled = pool.submit(helpers.use_pickled_fork, pickle.dumps(fork)).result(timeout=120)
    back = pickle.loads(pickled)
    if not backend.shared_across_processes:
        # A pickled memory storage is a copy: the child's chunk went to its own copy.
        with pytest.raises(RepositoryError, match="in-memory storage"):
            session.merge(back)
        return
    session.merge(back)
    snapshot_id = session.commit("written in a child process")
    reader = repo.readonly_session(snapshot_id=snapshot_id)
    assert bytes(sync(reader.storage.get("from/child")).data) == b"child" * 200
    assert bytes(sync(reader.storage.get("from/parent")).data) == b"parent" * 200


def test_the_format_page_examples_run() -> None:
    page = Path(__file__).parent.parent / "docs" / "repository-format.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)
    assert blocks
    for code in blocks:
        exec(compile(code, str(page), "exec"), {})


# --- the session view against the Storage contract ---------------------------------------------


class _SessionConformance(StorageConformance):
    """The session's key/value view passes the Storage conformance suite."""

    stores_metadata = False  # content type and user metadata are not kept in a snapshot

    @pytest.fixture
    def location(self) -> Storage:
        raise NotImplementedError("a subclass provides an empty location")

    @pytest.fixture
    async def storage(self, location: Storage) -> Storage:
        """A fork's view: the kind of writable session that pickles (the suite pickles it)."""
        repo = await Repository.create_async(location)
        session = await repo.writable_session_async("main")
        return (await session.fork_async()).storage

    async def raw_put(self, storage: Storage, key: str, data: bytes) -> None:
        assert isinstance(storage, SessionStorage)
        storage.session._changes[key] = ManifestEntry(new_id(), len(data), now_ms(), inline=data)

    async def raw_get(self, storage: Storage, key: str) -> bytes | None:
        assert isinstance(storage, SessionStorage)
        entry = await storage.session._entry(key)
        if entry is None:
            return None
        if entry.chunk is None:
            return entry.inline
        chunk = await storage.session.repository.storage.get(chunk_key(entry.chunk))
        return bytes(chunk.data)


class TestMemorySessionConformance(_SessionConformance):
    @pytest.fixture
    def location(self) -> Storage:
        return in_memory_storage()


class TestLocalSessionConformance(_SessionConformance):
    many_keys = 500

    @pytest.fixture
    def location(self, local_backend: Backend) -> Storage:
        return local_backend.new()


@pytest.mark.s3
class TestS3SessionConformance(_SessionConformance):
    many_keys = 200  # values this small stay inline: few requests reach moto
    concurrent_writers = 8

    @pytest.fixture
    def location(self, s3_backend: Backend) -> Storage:
        return s3_backend.new()
