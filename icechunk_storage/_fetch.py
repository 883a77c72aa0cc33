"""The chunk fetch path: many (key, byte range) reads, results in request order.

Design, after zarr's ``_get_partial_values`` but without its two slips (a global limit read
deep inside, and a ``gather`` that leaves siblings running after a failure):

* every request is validated before any I/O, so bad input changes nothing;
* work runs on a bounded pool of worker tasks inside one ``asyncio.TaskGroup``: never more
  tasks than the process-wide request limit, the first error cancels the rest, and no task
  outlives the call (on error or on cancellation);
* results fill a preallocated list by request index, so memory is what is returned plus at
  most one in-flight read per worker;
* backends that can read a batch in one go (memory: no awaits; local: one thread hop per
  batch) get small reads in batches of ``_read_batch_size``; large ranges always go through
  ``Storage.get``, which splits them into concurrent parts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

from ._errors import ConfigurationError, ObjectNotFoundError, RangeNotSatisfiableError, StorageError
from ._keys import validate_key
from ._limits import get_max_concurrent_requests
from ._ranges import ByteRequest, RangeByteRequest, SuffixByteRequest, check_byte_request

if TYPE_CHECKING:
    from ._storage import Data, GetResult

__all__ = ["check_requests", "fetch_many", "first_error", "run_bounded"]

T = TypeVar("T")


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real error of a task group, so callers see e.g. ObjectNotFoundError itself."""
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return first_error(error)
        if not isinstance(error, asyncio.CancelledError):
            return error
    return group.exceptions[0]


async def run_bounded(
    items: Iterable[T], work: Callable[[T], Awaitable[None]], max_workers: int
) -> None:
    """Run ``work(item)`` for every item with at most ``max_workers`` tasks at once.

    The first failure cancels every other task and is raised as itself (not as a group).
    """
    iterator: Iterator[T] = iter(items)

    async def worker() -> None:
        for item in iterator:  # one shared iterator: each item is taken exactly once
            await work(item)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(max(1, max_workers)):
                group.create_task(worker())
    except BaseExceptionGroup as group_error:
        raise (error := first_error(group_error)) from error.__cause__


def check_requests(requests: Sequence[tuple[str, ByteRequest | None]]) -> None:
    """Refuse anything but valid ``(key, byte_range)`` pairs, before any I/O.

    A bare key would otherwise unpack as characters: ``"ab"`` as key ``a``, range ``b``.
    """

    for index, item in enumerate(requests):
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise TypeError(
                f"get_many() expects (key, byte_range) pairs, e.g. [('a/c/0', None)]; item "
                f"{index} is {type(item).__name__} {item!r}. Pass (key, None) to read a whole "
                "object."
            )
        validate_key(item[0])
        check_byte_request(item[1])


async def fetch_many(
    requests: Iterable[tuple[str, ByteRequest | None]],
    *,
    get: Callable[[str, ByteRequest | None], Awaitable[GetResult]],
    get_batch: Callable[
        [list[tuple[str, ByteRequest | None]]], Awaitable[list[GetResult | StorageError]]
    ]
    | None = None,
    batch_size: int = 0,
    split_above: int,
    missing_ok: bool = False,
    max_concurrency: int | None = None,
) -> list[Data | None]:
    """See ``Storage.get_many``. ``get`` is ``Storage.get`` (edge rules, range splitting);
    ``get_batch`` reads up to ``batch_size`` small ranges (no larger than ``split_above``)
    in one backend request, with an error per item."""
    if max_concurrency is not None and (
        isinstance(max_concurrency, bool)
        or not isinstance(max_concurrency, int)
        or max_concurrency < 1
    ):
        raise ConfigurationError(f"max_concurrency must be an int >= 1, got {max_concurrency!r}.")
    listed: Sequence[tuple[str, ByteRequest | None]] = (
        requests if isinstance(requests, Sequence) else list(requests)
    )
    results: list[Data | None] = [None] * len(listed)
    if not listed:
        return results
    check_requests(listed)

    if get_batch is None:
        batch_size = 0
    ideal = split_above
    singles: list[int] = []
    batchable: list[int] = []
    for index, (_, byte_range) in enumerate(listed):
        small = not isinstance(byte_range, RangeByteRequest) or 0 < byte_range.length <= ideal
        zero_suffix = isinstance(byte_range, SuffixByteRequest) and byte_range.suffix == 0
        (batchable if batch_size and small and not zero_suffix else singles).append(index)

    # A work item is (batched?, indices); Storage.get owns the edge rules and range splitting.
    work: list[tuple[bool, list[int]]] = [(False, [i]) for i in singles]
    work += [
        (True, batchable[i : i + batch_size]) for i in range(0, len(batchable), batch_size or 1)
    ]

    async def read_one(index: int) -> None:
        key, byte_range = listed[index]
        try:
            results[index] = (await get(key, byte_range)).data
        except ObjectNotFoundError:
            if not missing_ok:
                raise

    async def read(item: tuple[bool, list[int]]) -> None:
        batched, indices = item
        if not batched:
            await read_one(indices[0])
            return
        assert get_batch is not None
        outcomes = await get_batch([listed[i] for i in indices])
        for index, outcome in zip(indices, outcomes, strict=True):
            if not isinstance(outcome, StorageError):
                results[index] = outcome.data
            elif isinstance(outcome, RangeNotSatisfiableError):
                await read_one(index)  # Storage.get decides: empty result or a clear error
            elif isinstance(outcome, ObjectNotFoundError) and missing_ok:
                results[index] = None
            else:
                raise outcome

    workers = min(get_max_concurrent_requests(), max_concurrency or len(work), len(work))
    await run_bounded(work, read, workers)
    return results
