"""Distributed writes into a repository session: ``to_icechunk`` through forks, on every dask
scheduler, and the refusal that keeps plain ``to_zarr`` from committing nothing.

One two-worker process cluster serves the module (started once, about two seconds).
"""

from __future__ import annotations

import os
import pickle
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest
import xarray as xr

from icechunk_storage import (
    MergeConflictError,
    ReadOnlySessionError,
    Repository,
    RepositoryError,
    SessionPickleError,
    in_memory_storage,
    local_filesystem_storage,
)
from icechunk_storage._repository._format import INITIAL_SNAPSHOT_ID
from icechunk_storage._sync import sync
from icechunk_storage.xarray import to_icechunk


def dataset() -> xr.Dataset:
    """48 dask chunks of float64 (not inlined), one int variable, coordinates, attributes."""
    rng = np.random.default_rng(7)
    return xr.Dataset(
        {
            "temperature": (("time", "x"), rng.random((24, 10))),
            "flag": (("x",), np.arange(10, dtype="int16")),
        },
        coords={"time": np.arange(24), "x": np.linspace(0, 4.5, 10)},
        attrs={"title": "forks"},
    ).chunk({"time": 1, "x": 5})


def chunk_keys(session: Any, array: str) -> set[str]:
    async def listed() -> set[str]:
        return {info.key async for info in session.storage.list(f"{array}/c/")}

    return sync(listed())


def read_back(repo: Repository, snapshot_id: str) -> xr.Dataset:
    reader = repo.readonly_session(snapshot_id=snapshot_id)
    with xr.open_zarr(reader.store, consolidated=False) as opened:
        loaded: xr.Dataset = opened.compute(scheduler="threads")
    return loaded


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as connected,  # type: ignore[no-untyped-call]
    ):
        yield connected


def test_to_icechunk_on_a_process_cluster_commits_every_chunk(client: Any, tmp_path: Path) -> None:
    repo = Repository.create(local_filesystem_storage(tmp_path / "repo"))
    session = repo.writable_session("main")
    expected = dataset()
    assert os.getpid() not in set(client.run(os.getpid).values())  # tasks run elsewhere
    to_icechunk(expected, session)
    assert len(chunk_keys(session, "temperature")) == 48
    snapshot_id = session.commit("48 chunks from two worker processes")
    xr.testing.assert_identical(read_back(repo, snapshot_id), expected.compute())


def test_plain_to_zarr_on_a_process_cluster_raises(client: Any, tmp_path: Path) -> None:
    """The defect of issue 14: this used to commit a snapshot without any data chunk."""
    repo = Repository.create(local_filesystem_storage(tmp_path / "repo"))
    session = repo.writable_session("main")
    # distributed raises "Could not serialize object ..." from our SessionPickleError
    with pytest.raises(TypeError, match="Could not serialize") as info:
        dataset().to_zarr(session.store, mode="w", consolidated=False)
    text = "".join(traceback.format_exception(info.value))
    assert "session.fork()" in text
    assert "to_icechunk" in text
    assert not chunk_keys(session, "temperature")
    assert repo.lookup_branch("main") == INITIAL_SNAPSHOT_ID


def test_to_icechunk_on_the_processes_scheduler(tmp_path: Path) -> None:
    repo = Repository.create(local_filesystem_storage(tmp_path / "repo"))
    expected = dataset().isel(time=slice(0, 4))
    session = repo.writable_session("main")
    with dask.config.set(scheduler="processes", num_workers=2):
        to_icechunk(expected, session)
    xr.testing.assert_identical(read_back(repo, session.commit("processes")), expected.compute())


@pytest.mark.parametrize("scheduler", ["threads", "synchronous"])
def test_to_icechunk_on_local_schedulers(scheduler: str, tmp_path: Path) -> None:
    repo = Repository.create(local_filesystem_storage(tmp_path / "repo"))
    expected = dataset().isel(time=slice(0, 6))
    session = repo.writable_session("main")
    with dask.config.set(scheduler=scheduler):
        to_icechunk(expected, session, split_every=2)
    first = session.commit("first")
    xr.testing.assert_identical(read_back(repo, first), expected.compute())

    # Append along time in a new session: metadata resized here, chunks written by forks.
    more = dataset().isel(time=slice(6, 12))
    session = repo.writable_session("main")
    with dask.config.set(scheduler=scheduler):
        to_icechunk(more.drop_vars("flag"), session, append_dim="time")
    second = session.commit("appended")
    back = read_back(repo, second)
    np.testing.assert_array_equal(back.temperature.values, dataset().temperature.values[:12])


def test_to_icechunk_writes_a_data_array(tmp_path: Path) -> None:
    repo = Repository.create(local_filesystem_storage(tmp_path / "repo"))
    array = dataset().temperature
    session = repo.writable_session("main")
    with dask.config.set(scheduler="threads"):
        to_icechunk(array, session, group="nested")
    snapshot_id = session.commit("a data array")
    reader = repo.readonly_session(snapshot_id=snapshot_id)
    store: Any = reader.store
    with xr.open_dataarray(store, group="nested", engine="zarr", consolidated=False) as back:
        xr.testing.assert_identical(back.compute(), array.compute())


def test_to_icechunk_refuses_what_it_cannot_do(client: Any, tmp_path: Path) -> None:
    repo = Repository.create(local_filesystem_storage(tmp_path / "repo"))
    snapshot_id = repo.writable_session("main")
    reader = repo.readonly_session(branch="main")
    with pytest.raises(ReadOnlySessionError):
        to_icechunk(dataset(), reader)
    with pytest.raises(TypeError, match="writes to a Session"):
        to_icechunk(dataset(), snapshot_id.store)  # type: ignore[arg-type]

    # Misaligned dask chunks with safe_chunks=False: two forks write the same Zarr chunk.
    session = repo.writable_session("main")
    misaligned = dataset().isel(time=slice(0, 4)).chunk({"time": 3, "x": 5})
    with pytest.raises(MergeConflictError, match="temperature/c/"):  # on the cluster
        to_icechunk(
            misaligned, session, encoding={"temperature": {"chunks": (2, 5)}}, safe_chunks=False
        )


def test_to_icechunk_with_processes_and_an_in_memory_storage_says_why_it_fails() -> None:
    repo = Repository.create(in_memory_storage())
    session = repo.writable_session("main")
    with (
        dask.config.set(scheduler="processes", num_workers=1),
        pytest.raises(RepositoryError, match="in-memory"),
    ):
        to_icechunk(dataset().chunk({"time": 24, "x": 10}), session)  # one 1920-byte chunk


def test_a_writable_sessions_store_refuses_pickling_but_a_readers_does_not() -> None:
    repo = Repository.create(in_memory_storage())
    with pytest.raises(SessionPickleError, match=r"fork\(\)"):
        pickle.dumps(repo.writable_session("main").store)
    reader = repo.readonly_session(branch="main")
    assert pickle.loads(pickle.dumps(reader.store)) == reader.store
