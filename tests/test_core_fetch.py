"""The fetch path (``_fetch``) with recording ``get``/``get_batch`` stand-ins: which reads
are batched, how many workers run, what a batch's per-item errors become, and which error
a failed task group surfaces."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from icechunk_storage import (
    ConfigurationError,
    ObjectNotFoundError,
    RangeByteRequest,
    RangeNotSatisfiableError,
    StorageError,
    VersionInfo,
    set_max_concurrent_requests,
)
from icechunk_storage._fetch import fetch_many, first_error, run_bounded
from icechunk_storage._limits import get_max_concurrent_requests
from icechunk_storage._ranges import ByteRequest, OffsetByteRequest, SuffixByteRequest
from icechunk_storage._storage import GetResult

Request = tuple[str, ByteRequest | None]


class _Backend:
    """Objects ``k<i>`` hold ``b"<i>"``; ``missing`` holds nothing. Records every call and
    the most reads in flight at once."""

    def __init__(self, batch_errors: dict[str, StorageError] | None = None) -> None:
        self.singles: list[Request] = []
        self.batches: list[list[Request]] = []
        self.batch_errors = batch_errors or {}
        self.in_flight = 0
        self.most_in_flight = 0

    async def get(self, key: str, byte_range: ByteRequest | None) -> GetResult:
        self.singles.append((key, byte_range))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.001)
        finally:
            self.in_flight -= 1
        if key == "missing":
            raise ObjectNotFoundError(key)
        return GetResult(key.encode(), VersionInfo(etag=None))

    async def get_batch(self, batch: list[Request]) -> list[GetResult | StorageError]:
        self.batches.append(batch)
        out: list[GetResult | StorageError] = []
        for key, _ in batch:
            if key in self.batch_errors:
                out.append(self.batch_errors[key])
            elif key == "missing":
                out.append(ObjectNotFoundError(key))
            else:
                out.append(GetResult(b"batched " + key.encode(), VersionInfo(etag=None)))
        return out


@pytest.fixture
def limit() -> Iterator[None]:
    before = get_max_concurrent_requests()
    yield
    set_max_concurrent_requests(before)


async def test_a_bare_key_is_refused_with_the_fix() -> None:
    backend = _Backend()
    with pytest.raises(TypeError) as caught:
        await fetch_many(["ab"], get=backend.get, split_above=10)  # type: ignore[list-item]
    assert str(caught.value) == (
        "get_many() expects (key, byte_range) pairs, e.g. [('a/c/0', None)]; item 0 is str "
        "'ab'. Pass (key, None) to read a whole object."
    )
    assert backend.singles == []


async def test_a_bad_byte_range_is_refused_before_any_read() -> None:
    backend = _Backend()
    with pytest.raises(TypeError, match=r"^Unexpected byte_range, got tuple"):
        await fetch_many(
            [("k1", None), ("k2", (0, 4))],  # type: ignore[list-item]
            get=backend.get,
            split_above=10,
        )
    assert backend.singles == []


async def test_requests_may_be_any_iterable() -> None:
    backend = _Backend()
    requests = ((f"k{i}", None) for i in range(3))
    assert await fetch_many(requests, get=backend.get, split_above=10) == [b"k0", b"k1", b"k2"]


async def test_missing_objects_raise_unless_missing_ok() -> None:
    backend = _Backend()
    with pytest.raises(ObjectNotFoundError):
        await fetch_many([("k1", None), ("missing", None)], get=backend.get, split_above=10)
    got = await fetch_many(
        [("k1", None), ("missing", None)], get=backend.get, split_above=10, missing_ok=True
    )
    assert got == [b"k1", None]


async def test_without_a_batch_size_nothing_is_batched() -> None:
    backend = _Backend()
    await fetch_many([("k1", None)], get=backend.get, get_batch=backend.get_batch, split_above=10)
    assert backend.batches == []
    assert backend.singles == [("k1", None)]


async def test_a_batch_size_without_a_batch_reader_reads_one_by_one() -> None:
    backend = _Backend()
    got = await fetch_many(
        [("k1", None), ("k2", None)], get=backend.get, batch_size=8, split_above=10
    )
    assert got == [b"k1", b"k2"]


async def test_small_reads_are_batched_and_the_rest_read_alone() -> None:
    backend = _Backend()
    batched: list[Request] = [
        ("k0", None),
        ("k1", RangeByteRequest(0, 1)),  # one byte: small
        ("k2", RangeByteRequest(5, 15)),  # exactly split_above: still small
        ("k3", OffsetByteRequest(4)),
        ("k4", SuffixByteRequest(1)),
        ("k5", SuffixByteRequest(3)),
    ]
    alone: list[Request] = [
        ("k6", RangeByteRequest(5, 16)),  # one byte over split_above
        ("k7", RangeByteRequest(2, 2)),  # empty: Storage.get owns the edge rules
        ("k8", SuffixByteRequest(0)),  # likewise
    ]
    got = await fetch_many(
        batched + alone,
        get=backend.get,
        get_batch=backend.get_batch,
        batch_size=4,
        split_above=10,
    )
    assert got == [b"batched k%d" % i for i in range(6)] + [b"k6", b"k7", b"k8"]
    assert backend.batches == [batched[:4], batched[4:]]  # batches of batch_size, in order
    assert sorted(backend.singles, key=lambda r: r[0]) == alone


async def test_a_batch_item_not_satisfiable_is_read_again_alone() -> None:
    backend = _Backend(batch_errors={"k2": RangeNotSatisfiableError("past the end")})
    got = await fetch_many(
        [("k1", None), ("k2", OffsetByteRequest(1))],
        get=backend.get,
        get_batch=backend.get_batch,
        batch_size=8,
        split_above=10,
    )
    assert got == [b"batched k1", b"k2"]
    assert backend.singles == [("k2", OffsetByteRequest(1))]


async def test_a_batch_item_missing_or_failed() -> None:
    backend = _Backend()
    requests: list[Request] = [("missing", None), ("k1", None)]
    kwargs = {"get": backend.get, "get_batch": backend.get_batch, "split_above": 10}
    assert await fetch_many(requests, batch_size=8, missing_ok=True, **kwargs) == [  # type: ignore[arg-type]
        None,
        b"batched k1",
    ]
    with pytest.raises(ObjectNotFoundError):
        await fetch_many(requests, batch_size=8, **kwargs)  # type: ignore[arg-type]
    failing = _Backend(batch_errors={"k1": StorageError("boom")})
    with pytest.raises(StorageError, match="boom"):
        await fetch_many(
            [("k1", None)],
            get=failing.get,
            get_batch=failing.get_batch,
            batch_size=8,
            split_above=10,
            missing_ok=True,
        )


async def test_a_batch_answering_too_few_items_is_an_error() -> None:
    backend = _Backend()

    async def short(batch: list[Request]) -> list[GetResult | StorageError]:
        return (await backend.get_batch(batch))[:-1]

    with pytest.raises(ValueError, match="zip"):
        await fetch_many(
            [("k1", None), ("k2", None)],
            get=backend.get,
            get_batch=short,
            batch_size=8,
            split_above=10,
        )


@pytest.mark.parametrize("bad", [0, -1, True, 2.0, "3"])
async def test_max_concurrency_must_be_a_positive_int(bad: object) -> None:
    backend = _Backend()
    with pytest.raises(ConfigurationError, match="max_concurrency must be an int >= 1"):
        await fetch_many(
            [("k1", None)],
            get=backend.get,
            split_above=10,
            max_concurrency=bad,  # type: ignore[arg-type]
        )


async def test_max_concurrency_one_reads_one_at_a_time() -> None:
    backend = _Backend()
    requests: list[Request] = [(f"k{i}", None) for i in range(6)]
    got = await fetch_many(requests, get=backend.get, split_above=10, max_concurrency=1)
    assert got == [f"k{i}".encode() for i in range(6)]
    assert backend.most_in_flight == 1
    await fetch_many(requests, get=backend.get, split_above=10, max_concurrency=3)
    assert backend.most_in_flight == 3


@pytest.mark.usefixtures("limit")
async def test_the_process_wide_limit_bounds_the_workers() -> None:
    set_max_concurrent_requests(2)
    backend = _Backend()
    requests: list[Request] = [(f"k{i}", None) for i in range(8)]
    await fetch_many(requests, get=backend.get, split_above=10)
    assert backend.most_in_flight == 2


async def test_no_requests_no_reads() -> None:
    backend = _Backend()
    assert await fetch_many([], get=backend.get, split_above=10) == []
    assert backend.singles == []


@pytest.mark.parametrize("max_workers", [0, 1])
async def test_run_bounded_with_one_worker_runs_one_item_at_a_time(max_workers: int) -> None:
    running = 0
    most = 0
    done: list[int] = []

    async def work(item: int) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.001)
        running -= 1
        done.append(item)

    await run_bounded(range(5), work, max_workers)
    assert done == [0, 1, 2, 3, 4]
    assert most == 1


async def test_run_bounded_raises_the_first_failure_itself() -> None:
    async def work(item: int) -> None:
        if item == 2:
            raise ObjectNotFoundError("k2")
        await asyncio.sleep(0.01)

    with pytest.raises(ObjectNotFoundError):
        await run_bounded(range(4), work, 4)


def test_first_error_skips_cancellations_and_unnests_groups() -> None:
    real = ValueError("real")
    cancelled = asyncio.CancelledError()
    assert first_error(BaseExceptionGroup("g", [cancelled, real])) is real
    nested = BaseExceptionGroup("outer", [BaseExceptionGroup("inner", [cancelled, real])])
    assert first_error(nested) is real
    other = asyncio.CancelledError()
    assert first_error(BaseExceptionGroup("g", [cancelled, other])) is cancelled
