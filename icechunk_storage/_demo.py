"""The demo: write a few thousand chunks to the local filesystem, read them back through the
chunk fetch path, and show what happened and how fast. Needs no cloud account.

Run with ``python -m icechunk_storage demo`` (or ``nox -s demo``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence

from ._errors import PreconditionFailedError
from ._local import local_filesystem_storage
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


async def _timed(label: str, work: Callable[[], Awaitable[int]]) -> tuple[str, int, float]:
    started = time.perf_counter()
    count = await work()
    return label, count, time.perf_counter() - started


async def run_demo(root: str, chunks: int, chunk_size: int, *, progress: bool) -> None:
    storage = InstrumentedStorage(local_filesystem_storage(root))
    payloads = [os.urandom(chunk_size) for _ in range(min(chunks, 64))]
    digest = {
        f"array/c/{i}": hashlib.blake2b(payloads[i % len(payloads)]).digest() for i in range(chunks)
    }
    rows: list[tuple[str, int, float]] = []

    async def write_chunks() -> int:
        bar = _Progress("write chunks", chunks, enabled=progress)
        semaphore = asyncio.Semaphore(16)

        async def write(i: int) -> None:
            async with semaphore:
                await storage.put(f"array/c/{i}", payloads[i % len(payloads)])
                bar.advance()

        await asyncio.gather(*(write(i) for i in range(chunks)))
        bar.close()
        return chunks

    async def read_chunks() -> int:
        bar = _Progress("read back (get_many)", chunks, enabled=progress)
        keys = list(digest)
        for start in range(0, chunks, 500):
            batch: Sequence[tuple[str, ByteRequest | None]] = [
                (key, None) for key in keys[start : start + 500]
            ]
            for (key, _), data in zip(batch, await storage.get_many(batch), strict=True):
                assert data is not None
                if hashlib.blake2b(data).digest() != digest[key]:
                    raise RuntimeError(f"{key} read back different bytes than were written")
            bar.advance(len(batch))
        bar.close()
        return chunks

    async def ranged_reads() -> int:
        requests: list[tuple[str, ByteRequest | None]] = [
            (f"array/c/{i}", RangeByteRequest(100, 1124)) for i in range(chunks)
        ]
        results = await storage.get_many(requests)
        assert all(r is not None and len(r) == 1024 for r in results)
        return chunks

    async def large_object() -> int:
        size = 64 * 1024 * 1024
        big = os.urandom(size)
        await storage.put("array/large", big)
        split = storage.with_settings(
            StorageSettings(
                concurrency=StorageConcurrencySettings(
                    ideal_concurrent_request_size=4 * 1024 * 1024,
                    max_concurrent_requests_for_object=16,
                )
            )
        )
        result = await split.get("array/large", RangeByteRequest(0, size))
        if bytes(result.data) != big:
            raise RuntimeError("the large object read back different bytes")
        return size // 2**20

    async def compare_and_swap() -> int:
        await storage.put("counter", b"0")

        async def increment() -> None:
            while True:
                current = await storage.get("counter")
                try:
                    value = int(bytes(current.data)) + 1
                    await storage.put("counter", str(value).encode(), mode=current.version)
                    return
                except PreconditionFailedError:
                    continue

        await asyncio.gather(*(increment() for _ in range(50)))
        assert bytes((await storage.get("counter")).data) == b"50"
        return 50

    rows.append(await _timed(f"write {chunks} x {chunk_size // 1024} KiB", write_chunks))
    rows.append(await _timed(f"read {chunks} chunks (get_many)", read_chunks))
    rows.append(await _timed(f"read {chunks} 1 KiB ranges", ranged_reads))
    rows.append(await _timed("MiB of one object, in 16 parts", large_object))
    rows.append(await _timed("50 concurrent CAS increments", compare_and_swap))
    listed = await _timed("list every object", lambda: _count(storage))
    rows.append(listed)

    print(f"\nicechunk_storage demo on {storage.inner!r}\n")
    print(f"  {'step':<34} {'items':>7} {'seconds':>9} {'items/s':>10}")
    for label, count, seconds in rows:
        print(f"  {label:<34} {count:>7} {seconds:>9.3f} {count / seconds:>10,.0f}")
    print(f"\n  {'operation':<14} {'calls':>7} {'requests':>9} {'MiB read':>9} {'MiB written':>12}")
    for name, stats in sorted(storage.stats.items()):
        print(
            f"  {name:<14} {stats.calls:>7} {stats.requests:>9} "
            f"{stats.bytes_read / 2**20:>9.1f} {stats.bytes_written / 2**20:>12.1f}"
        )
    print("\n  every chunk read back matched what was written; 0 updates lost.")
    await storage.aclose()


async def _count(storage: Storage) -> int:
    return len([info async for info in storage.list()])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m icechunk_storage demo")
    parser.add_argument("--path", help="directory to use (default: a temporary directory)")
    parser.add_argument("--chunks", type=int, default=4000)
    parser.add_argument("--chunk-size", type=int, default=16 * 1024)
    parser.add_argument("--keep", action="store_true", help="keep the data afterwards")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args(argv)
    if args.chunks < 1 or args.chunk_size < 1:
        parser.error("--chunks and --chunk-size must be at least 1")
    root = args.path or tempfile.mkdtemp(prefix="icechunk-storage-demo-")
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        asyncio.run(run_demo(root, args.chunks, args.chunk_size, progress=progress))
    finally:
        if not args.keep and not args.path:
            shutil.rmtree(root, ignore_errors=True)
    return 0
