"""The demo: write a few thousand chunks to the local filesystem, read them back through the
chunk fetch path, and show what happened and how fast. Needs no cloud account.

Run with ``python -m icechunk_storage demo`` (or ``nox -s demo``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence

from ._errors import PreconditionFailedError
from ._local import RESERVED, LocalFileSystemStorage, local_filesystem_storage
from ._ranges import ByteRequest, RangeByteRequest
from ._settings import StorageConcurrencySettings, StorageSettings
from ._storage import Storage
from ._wrappers import InstrumentedStorage


class _Progress:
    """A one-line progress bar on stderr (only when stderr is a terminal or forced)."""

    def __init__(self, label: str, total: int, *, enabled: bool) -> None:
        self.label, self.total, self.done, self.enabled = label, total, 0, enabled
        self.started = self.drawn = time.perf_counter()

    def advance(self, count: int = 1) -> None:
        self.done += count
        now = time.perf_counter()
        if self.enabled and (now - self.drawn > 0.1 or self.done == self.total):
            self.drawn = now
            filled = int(30 * self.done / max(self.total, 1))
            rate = self.done / max(time.perf_counter() - self.started, 1e-9)
            sys.stderr.write(
                f"\r  {self.label:<28} [{'#' * filled}{'.' * (30 - filled)}] "
                f"{self.done}/{self.total} ({rate:,.0f}/s)"
            )
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _size(n: int) -> str:
    """``512 B``, ``16 KiB``, ``1.5 MiB``: sizes as people read them."""
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.{0 if n % scale == 0 else 1}f} {unit}"
    return f"{n} B"


class _Row:
    """One line of the timing table: ``count`` items of ``unit`` in ``seconds``. Only the
    awaited storage calls are timed (``with row.timing():``), never data generation or checks."""

    def __init__(self, label: str, count: int, unit: str) -> None:
        self.label, self.count, self.unit, self.seconds = label, count, unit, 0.0

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - started


async def run_demo(
    root: str,
    chunks: int,
    chunk_size: int,
    *,
    progress: bool,
    large_mib: int = 64,
    increments: int = 50,
) -> InstrumentedStorage[LocalFileSystemStorage]:
    """Run every step on a local storage at ``root``; print the tables; return the storage
    (closed) with its counters, for tests."""
    storage = InstrumentedStorage(local_filesystem_storage(root))
    payloads = [os.urandom(chunk_size) for _ in range(min(chunks, 64))]
    keys = [f"array/c/{i}" for i in range(chunks)]
    digest = {
        key: hashlib.blake2b(payloads[i % len(payloads)]).digest() for i, key in enumerate(keys)
    }
    rows: list[_Row] = []

    # 1. Write every chunk, 16 at a time.
    row = _Row(f"write {chunks} chunks of {_size(chunk_size)}", chunks, "chunks")
    rows.append(row)
    bar = _Progress("write chunks", chunks, enabled=progress)
    semaphore = asyncio.Semaphore(16)

    async def write(i: int) -> None:
        async with semaphore:
            await storage.put(keys[i], payloads[i % len(payloads)])
            bar.advance()

    with row.timing():
        await asyncio.gather(*(write(i) for i in range(chunks)))
    bar.close()

    # 2. Read them back through the fetch path, 500 per get_many; checked outside the timing.
    row = _Row(f"read {chunks} chunks (get_many)", chunks, "chunks")
    rows.append(row)
    bar = _Progress("read back (get_many)", chunks, enabled=progress)
    batches = 0
    for start in range(0, chunks, _BATCH):
        batch: list[tuple[str, ByteRequest | None]] = [
            (key, None) for key in keys[start : start + _BATCH]
        ]
        with row.timing():
            results = await storage.get_many(batch)
        batches += 1
        for (key, _), data in zip(batch, results, strict=True):
            if data is None or hashlib.blake2b(data).digest() != digest[key]:
                raise RuntimeError(f"{key} read back different bytes than were written")
        bar.advance(len(batch))
    bar.close()

    # 3. A range from the middle of every chunk, in one get_many.
    first, length = chunk_size // 4, max(1, chunk_size // 2)
    row = _Row(f"read {chunks} ranges of {_size(length)} (get_many)", chunks, "ranges")
    rows.append(row)
    ranged: list[tuple[str, ByteRequest | None]] = [
        (key, RangeByteRequest(first, first + length)) for key in keys
    ]
    with row.timing():
        results = await storage.get_many(ranged)
    for i, data in enumerate(results):
        if data is None or bytes(data) != payloads[i % len(payloads)][first : first + length]:
            raise RuntimeError(f"{keys[i]} returned the wrong bytes for a range")

    # 4. One large object: written, then read in 16 concurrent parts into one buffer.
    parts = 16
    if large_mib:
        size = large_mib * 2**20
        big = os.urandom(size)
        row = _Row(f"write one {_size(size)} object", large_mib, "MiB")
        rows.append(row)
        with row.timing():
            await storage.put("array/large", big)
        split = storage.with_settings(
            StorageSettings(
                concurrency=StorageConcurrencySettings(
                    ideal_concurrent_request_size=-(-size // parts),
                    max_concurrent_requests_for_object=parts,
                )
            )
        )
        row = _Row(f"read it back in {parts} parts (get)", large_mib, "MiB")
        rows.append(row)
        with row.timing():
            result = await split.get("array/large", RangeByteRequest(0, size))
        if bytes(result.data) != big:
            raise RuntimeError("the large object read back different bytes")
        del big, result

    # 5. Concurrent increments of one counter with compare-and-swap: none may be lost.
    await storage.put("counter", b"0")
    lost_races = 0

    async def increment() -> None:
        nonlocal lost_races
        while True:
            current = await storage.get("counter")
            try:
                value = int(bytes(current.data)) + 1
                await storage.put("counter", str(value).encode(), mode=current.version)
                return
            except PreconditionFailedError:
                lost_races += 1  # another writer got there first: read again, retry

    row = _Row(f"{increments} concurrent increments (CAS)", increments, "increments")
    rows.append(row)
    with row.timing():
        await asyncio.gather(*(increment() for _ in range(increments)))
    final = int(bytes((await storage.get("counter")).data))
    if final != increments:
        raise RuntimeError(f"the counter is {final}, not {increments}: updates were lost")

    # 6. List everything.
    row = _Row("list every object", 0, "objects")
    rows.append(row)
    with row.timing():
        row.count = await _count(storage)

    _report(storage, rows)
    print(
        "\n  What the counts are made of: a call is one method call, a request one request "
        "to the\n  backend (under the process-wide request limit):"
    )
    large_get = f" + 1 large read in {parts} part requests" if large_mib else ""
    large_put = " + 1 large object" if large_mib else ""
    explained = {
        "get": f"{increments} increments + {lost_races} re-reads after a lost race read the "
        f"counter, + 1 final check{large_get}.",
        "put": f"{chunks} chunks{large_put} + 1 counter + {increments} increments + {lost_races} "
        "lost races (errors, then retried). A lost race costs 1 request: refused on its only "
        "send, the write cannot have been our own (a head looks for our write id only after a "
        "retry: lost-response recovery).",
        "get_many": f"{batches} {'batch' if batches == 1 else 'batches'} of up to {_BATCH} "
        "chunks + 1 call for the ranges. The local backend reads up to "
        f"{storage.inner._read_batch_size} small objects per request (one thread hop).",
        "list": "one request per page; the local backend scans one directory per page (the "
        "chunks' directory, the root and the large object's).",
    }
    for name, text in explained.items():
        lines = textwrap.wrap(text, 84)
        print(f"    {name:<10}{lines[0]}")
        for line in lines[1:]:
            print(f"    {'':<10}{line}")
    print(f"\n  every chunk read back matched what was written; {increments} increments, 0 lost.")
    await storage.aclose()
    return storage


_BATCH = 500


def _report(storage: InstrumentedStorage[LocalFileSystemStorage], rows: list[_Row]) -> None:
    print(f"\nicechunk_storage demo on {storage.inner!r}\n")
    print(f"  {'step':<44} {'items':>8} {'seconds':>9} {'rate':>20}")
    for row in rows:
        rate = f"{row.count / row.seconds:,.0f} {row.unit}/s" if row.seconds > 0 else "-"
        print(f"  {row.label:<44} {row.count:>8} {row.seconds:>9.3f} {rate:>20}")
    print(
        f"\n  {'operation':<10} {'calls':>7} {'errors':>7} {'requests':>9} "
        f"{'read':>10} {'written':>10}"
    )
    for name, stats in sorted(storage.stats.items()):
        requests = str(stats.requests)
        print(
            f"  {name:<10} {stats.calls:>7} {stats.errors:>7} {requests:>9} "
            f"{_size(stats.bytes_read):>10} {_size(stats.bytes_written):>10}"
        )


async def _count(storage: Storage) -> int:
    return len([info async for info in storage.list()])


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except where the help text says what None or a flag's absence means."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m icechunk_storage demo",
        description="Write chunks to the local filesystem, read them back through the chunk "
        "fetch path, and show what happened and how fast. Needs no cloud account.",
        formatter_class=_Help,
    )
    parser.add_argument(
        "--path",
        help="directory to write into; the demo's objects are deleted afterwards unless "
        "--keep (default: a new temporary directory)",
    )
    parser.add_argument("--chunks", type=_at_least(1), default=4000, help="number of chunks")
    parser.add_argument(
        "--chunk-size", type=_at_least(1), default=16 * 1024, help="bytes per chunk"
    )
    parser.add_argument(
        "--large-mib",
        type=_at_least(0),
        default=64,
        help="size in MiB of the one large object read in 16 parts (0: skip that step)",
    )
    parser.add_argument(
        "--increments",
        type=_at_least(1),
        default=50,
        help="concurrent compare-and-swap increments of one counter",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the data afterwards (default: delete it)"
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars on stderr (default: when stderr is a terminal)",
    )
    args = parser.parse_args(argv)
    root = args.path or tempfile.mkdtemp(prefix="icechunk-storage-demo-")
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        asyncio.run(
            run_demo(
                root,
                args.chunks,
                args.chunk_size,
                progress=progress,
                large_mib=args.large_mib,
                increments=args.increments,
            )
        )
    finally:
        if not args.keep:
            _remove(root, created=not args.path)
    if args.keep:
        print(f"\n  the data is kept in {root}")
    return 0


def _remove(root: str, *, created: bool) -> None:
    """Delete what the demo wrote: a directory it created, whole; in a ``--path`` directory,
    only the demo's own objects (and directories they leave empty)."""
    if created:
        shutil.rmtree(root, ignore_errors=True)
        return
    for name in ("array", "counter", RESERVED):
        target = os.path.join(root, name)
        if os.path.isdir(target):
            shutil.rmtree(target, ignore_errors=True)
        elif os.path.exists(target):
            os.unlink(target)
    with contextlib.suppress(OSError):
        os.rmdir(root)  # only if now empty
