"""xarray and dask through ZarrStore: round trips, and dask workers reading a pickled store.

Datasets are tiny on purpose: moto serves about 200 requests a second.
"""

from __future__ import annotations

import os
import pickle
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from dask.base import annotate
from zarr.core.sync import sync

from icechunk_storage import (
    Repository,
    S3StaticCredentials,
    Storage,
    in_memory_storage,
    local_filesystem_storage,
)
from icechunk_storage.zarr import ZarrStore
from tests._s3_server import MOTO_KEY, MotoServer
from tests.test_zarr_store import moto_s3_storage


def small_dataset() -> xr.Dataset:
    """Three variables of different dtypes and dimensions, dask-chunked, with coordinates."""
    rng = np.random.default_rng(42)
    return xr.Dataset(
        {
            "temperature": (("time", "x"), rng.random((8, 10))),
            "rain": (("time",), np.arange(8, dtype="float32")),
            "flag": (("x",), np.arange(10, dtype="int16") % 3),
        },
        coords={"time": np.arange(8), "x": np.linspace(0, 4.5, 10)},
        attrs={"title": "round trip", "version": 3},
    ).chunk({"time": 4, "x": 5})


def round_trip(storage: Storage, *, consolidated: bool) -> None:
    expected = small_dataset()
    expected.to_zarr(ZarrStore(storage), mode="w", consolidated=consolidated)
    with xr.open_zarr(ZarrStore(storage, read_only=True), consolidated=consolidated) as back:
        assert isinstance(back["temperature"].data, da.Array)
        assert back["temperature"].data.chunks == ((4, 4), (5, 5))
        xr.testing.assert_identical(back.compute(), expected.compute())


CONSOLIDATED_WARNING = "ignore:Consolidated metadata is currently not part:UserWarning"


@pytest.mark.filterwarnings(CONSOLIDATED_WARNING)
@pytest.mark.parametrize("consolidated", [False, True])
def test_round_trip_local(tmp_path: Path, consolidated: bool) -> None:
    with dask.config.set(scheduler="threads"):
        round_trip(local_filesystem_storage(tmp_path / "data"), consolidated=consolidated)


def test_append_and_region_writes_local(tmp_path: Path) -> None:
    """xarray's incremental writes: append along a dimension, then overwrite a region."""
    storage = local_filesystem_storage(tmp_path / "data")
    first = small_dataset()
    first.to_zarr(ZarrStore(storage), mode="w", consolidated=False)
    more = first.assign_coords(time=first.time + 8)
    more.to_zarr(ZarrStore(storage), append_dim="time", consolidated=False)
    patch = first.isel(time=slice(0, 4)).drop_vars("flag")
    patch = patch.assign(temperature=patch.temperature * 0 - 1, rain=patch.rain * 0 - 1)
    patch.drop_vars("x").to_zarr(
        ZarrStore(storage), region={"time": slice(0, 4)}, consolidated=False
    )
    with xr.open_zarr(ZarrStore(storage, read_only=True), consolidated=False) as back:
        assert back.sizes["time"] == 16
        loaded: Any = back.compute()
    np.testing.assert_array_equal(loaded.temperature.values[:4], -1)
    np.testing.assert_array_equal(loaded.temperature.values[8:], first.temperature.values)
    np.testing.assert_array_equal(loaded.rain.values[4:8], first.rain.values[4:])


def test_round_trip_through_a_repository_session() -> None:
    """Write in a writable session, commit, read the snapshot from a read-only session."""
    repository = Repository.create(in_memory_storage())
    session = repository.writable_session("main")
    expected = small_dataset()
    expected.to_zarr(ZarrStore(session.storage), mode="w", consolidated=False)
    snapshot = session.commit("dataset")
    reader = repository.readonly_session(snapshot_id=snapshot)
    with xr.open_zarr(ZarrStore(reader.storage), consolidated=False) as back:
        xr.testing.assert_identical(back.compute(scheduler="threads"), expected.compute())


# --- S3 (moto) ---------------------------------------------------------------------------------


@pytest.mark.s3
@pytest.mark.filterwarnings(CONSOLIDATED_WARNING)
@pytest.mark.parametrize("consolidated", [False, True])
def test_round_trip_s3(
    moto_server: MotoServer, bucket: str, aws_isolated: Path, consolidated: bool
) -> None:
    storage = moto_s3_storage(moto_server.url, bucket)
    with dask.config.set(scheduler="threads"):
        round_trip(storage, consolidated=consolidated)
    sync(storage.aclose())  # zarr's sync API ran every request on zarr's loop thread


class CountingCredentials:
    """A ``get_credentials`` callback that records each call as a file named by the caller's pid.

    Module-level and stateless between processes, so it pickles to dask workers; files are the
    only counter every process can write to.
    """

    def __init__(self, directory: str, lifetime_seconds: float) -> None:
        self.directory = directory
        self.lifetime_seconds = lifetime_seconds

    def __call__(self) -> S3StaticCredentials:
        Path(self.directory, f"{os.getpid()}-{uuid.uuid4().hex}").touch()
        return S3StaticCredentials(
            access_key_id=MOTO_KEY,
            secret_access_key=MOTO_KEY,
            session_token="session-token",
            expires_after=datetime.now(UTC) + timedelta(seconds=self.lifetime_seconds),
        )

    def calls(self) -> Counter[int]:
        """Calls so far, per process id."""
        return Counter(int(name.split("-")[0]) for name in os.listdir(self.directory))


@pytest.mark.s3
@pytest.mark.slow
def test_distributed_workers_call_credentials_once_per_lifetime(
    moto_server: MotoServer, bucket: str, aws_isolated: Path, tmp_path: Path
) -> None:
    """Two worker processes read a pickled store; each calls the callback once per lifetime.

    Every task carries its own pickled copy of the store (about 16 reads per worker here);
    the per-process credential cache makes that one callback call per worker process, and
    one more per worker once the credential has expired, never one per task.
    """
    from distributed import Client, LocalCluster

    expected = small_dataset().chunk({"time": 1, "x": 5})  # 16 chunks per 2-D variable
    writer = moto_s3_storage(moto_server.url, bucket)
    expected.to_zarr(ZarrStore(writer), consolidated=False)
    opened: list[Storage] = [writer]

    long_lived = CountingCredentials(str(tmp_path / "long"), lifetime_seconds=3600)
    short_lived = CountingCredentials(str(tmp_path / "short"), lifetime_seconds=3)
    for callback in (long_lived, short_lived):
        Path(callback.directory).mkdir()

    def open_dataset(callback: CountingCredentials) -> xr.Dataset:
        storage = moto_s3_storage(moto_server.url, bucket, get_credentials=callback)
        opened.append(storage)
        store = ZarrStore(storage, read_only=True)
        assert len(pickle.dumps(store)) < 4096  # configuration only: cheap to ship per task
        dataset: xr.Dataset = xr.open_zarr(store, consolidated=False, chunks={"time": 1, "x": 5})
        return dataset

    with (
        LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,  # type: ignore[no-untyped-call]
    ):
        worker_pids = set(client.run(os.getpid).values())
        assert len(worker_pids) == 2
        assert os.getpid() not in worker_pids

        def compute_on_both_workers(dataset: xr.Dataset) -> None:
            """Load every chunk in the workers, half of the time steps on each worker."""
            workers = list(client.scheduler_info()["workers"])
            halves = [dataset.isel(time=slice(0, 4)), dataset.isel(time=slice(4, 8))]
            for half, worker in zip(halves, workers, strict=True):
                with annotate(workers=[worker], allow_other_workers=False):
                    loaded = client.compute(half.temperature.data).result()
                np.testing.assert_array_equal(loaded, expected.temperature.values[half.time])

        # A long-lived credential: one call per worker process, however many tasks and runs.
        dataset = open_dataset(long_lived)
        compute_on_both_workers(dataset)
        compute_on_both_workers(dataset)
        calls = long_lived.calls()
        assert {pid: calls[pid] for pid in worker_pids} == dict.fromkeys(worker_pids, 1)
        assert calls[os.getpid()] == 1  # open_zarr read the metadata here
        assert set(calls) == {*worker_pids, os.getpid()}

        # A 3 s credential: one call per worker, then one more once it has expired. (A
        # credential is refreshed in the background from half its lifetime on, so a slow run
        # may make one more call; one per task would be 8 per worker and run.)
        dataset = open_dataset(short_lived)
        compute_on_both_workers(dataset)
        first = short_lived.calls()
        assert all(first[pid] in (1, 2) for pid in worker_pids), first
        time.sleep(3.2)
        compute_on_both_workers(dataset)
        second = short_lived.calls()
        for pid in worker_pids:
            assert second[pid] - first[pid] in (1, 2), (first, second)
    for storage in opened:
        sync(storage.aclose())
