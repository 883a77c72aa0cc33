"""``check URL``: does this endpoint read, write, list and delete, and does it really honour
conditional create and conditional update? With latency percentiles per operation, and the
``StorageSettings`` to use with it.

Everything happens under a scratch prefix ``.icechunk-storage-check-<random>/`` below the URL,
which is removed completely afterwards, whatever happened (and checked to be empty).

A condition is *honoured* when the store refuses what it must refuse: a second create of one
key, and an update naming a version the object is no longer at. It is *ignored* when the
store lets those writes through (they overwrite), and *rejected* when the store refuses the
conditional request itself (an error other than the condition failing). Either way the store
is usable only with the matching ``unsafe_use_conditional_*=False`` setting, which drops the
condition and accepts that concurrent writers can overwrite each other.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from .._errors import AlreadyExistsError, PreconditionFailedError, StorageError
from .._ranges import RangeByteRequest
from .._storage import Storage
from ._common import Context, emit_json
from ._urls import Location, join

__all__ = ["check", "percentile"]

SCRATCH = ".icechunk-storage-check-"
PAYLOAD = 4096


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least ``fraction`` of all samples
    at or below it (so with few samples, p99 is the largest)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


class _Check:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.samples: dict[str, list[float]] = {}
        self.results: dict[str, bool] = {}
        self.details: dict[str, str] = {}

    @contextlib.asynccontextmanager
    async def timed(self, operation: str) -> AsyncIterator[None]:
        started = time.perf_counter()
        yield
        self.samples.setdefault(operation, []).append((time.perf_counter() - started) * 1000)

    def record(self, name: str, ok: bool, detail: str) -> None:
        self.results[name] = ok
        self.details[name] = detail

    async def step(self, name: str, coroutine: Any) -> bool:
        """Run one step; a storage error marks it (and only it) failed, with the reason."""
        try:
            await coroutine
        except StorageError as exc:
            self.record(name, False, f"failed: {exc}")
            return False
        return True

    async def write(self, keys: list[str], payloads: list[bytes]) -> None:
        for key, payload in zip(keys, payloads, strict=True):
            async with self.timed("put"):
                await self.storage.put(key, payload)
        self.record("write", True, f"{len(keys)} objects of {PAYLOAD} bytes written")

    async def read(self, keys: list[str], payloads: list[bytes]) -> None:
        for key, payload in zip(keys, payloads, strict=True):
            async with self.timed("get"):
                result = await self.storage.get(key)
            if bytes(result.data) != payload:
                self.record("read", False, f"{key} read back other bytes than were written")
                return
        async with self.timed("get_range"):
            part = await self.storage.get(keys[0], RangeByteRequest(100, 200))
        if bytes(part.data) != payloads[0][100:200]:
            self.record("read", False, "a byte range read back other bytes than were written")
            return
        for key in keys:
            async with self.timed("head"):
                info = await self.storage.head(key)
            if info.size != PAYLOAD:
                self.record("read", False, f"head of {key} gave size {info.size}, not {PAYLOAD}")
                return
        self.record("read", True, "whole objects, a byte range and head match what was written")

    async def list_objects(self, keys: list[str], rounds: int) -> None:
        for _ in range(rounds):
            async with self.timed("list"):
                found = {info.key async for info in self.storage.list("data")}
            if found != set(keys):
                missing = sorted(set(keys) - found)
                self.record("list", False, f"listed {len(found)} objects; missing {missing}")
                return
        self.record("list", True, f"every written object listed, {rounds} times")

    async def conditional_create(self) -> None:
        key = "create"
        try:
            async with self.timed("put_create"):
                await self.storage.put(key, b"first", mode="create")
        except StorageError as exc:
            self.record("conditional_create", False, f"rejected: a create of a new key: {exc}")
            return
        try:
            async with self.timed("put_create"):
                await self.storage.put(key, b"second", mode="create")
        except AlreadyExistsError:
            self.record("conditional_create", True, "honoured: a second create was refused")
            return
        except StorageError as exc:
            self.record("conditional_create", False, f"rejected: the second create: {exc}")
            return
        now = bytes((await self.storage.get(key)).data)
        self.record(
            "conditional_create",
            False,
            "IGNORED: a second create of one key "
            + ("overwrote the object" if now == b"second" else "was accepted"),
        )

    async def conditional_update(self) -> None:
        key = "update"
        first = await self.storage.put(key, b"v1")
        try:
            async with self.timed("put_update"):
                await self.storage.put(key, b"v2", mode=first)
        except PreconditionFailedError as exc:
            self.record(
                "conditional_update", False, f"broken: an update at the current version: {exc}"
            )
            return
        except StorageError as exc:
            self.record("conditional_update", False, f"rejected: an update: {exc}")
            return
        try:
            async with self.timed("put_update"):
                await self.storage.put(key, b"v3", mode=first)
        except PreconditionFailedError:
            self.record(
                "conditional_update", True, "honoured: an update at a stale version was refused"
            )
            return
        except StorageError as exc:
            self.record("conditional_update", False, f"rejected: a stale update: {exc}")
            return
        self.record(
            "conditional_update",
            False,
            "IGNORED: an update at a stale version overwrote the object",
        )

    async def delete(self, keys: list[str]) -> None:
        for key in keys:
            async with self.timed("delete"):
                await self.storage.delete(key)
        left = [info.key async for info in self.storage.list("data")]
        if left:
            self.record("delete", False, f"still listed after delete: {sorted(left)}")
        else:
            self.record("delete", True, "deleted objects are gone from the listing")


async def _clean(
    storage: Storage, location: Location, scratch: str, *, parent_existed: bool
) -> tuple[bool, str]:
    """Remove everything under the scratch prefix, and check that nothing is left."""
    try:
        result = await storage.delete_many(storage.list())
        left = [info.key async for info in storage.list()]
    except StorageError as exc:
        return False, f"could not clean up: {exc}"
    if result.errors or left:
        return False, f"could not delete {sorted(left) or sorted(result.errors)}"
    if location.kind == "local":
        # The local storage keeps temporary files and locks in a reserved directory under
        # its root, which is the scratch directory: remove it (no objects are left in it).
        shutil.rmtree("/" + join(location.path, scratch), ignore_errors=True)
        if not parent_existed:  # the directory the writes created, unless something is in it
            with contextlib.suppress(OSError):
                os.rmdir("/" + location.path)
    return True, "removed"


def _settings_advice(results: dict[str, bool], details: dict[str, str]) -> dict[str, bool]:
    advice: dict[str, bool] = {}
    for name in ("conditional_create", "conditional_update"):
        detail = details.get(name, "")
        if not results.get(name, False) and detail.startswith(("IGNORED", "rejected")):
            advice[f"unsafe_use_{name}"] = False
    return advice


async def check(context: Context) -> int:
    args = context.args
    (location,) = context.locations([args.url])
    scratch = SCRATCH + uuid.uuid4().hex[:12]
    scope = context.scope(location, join(location.path, scratch))
    if scope.base:  # memory: no storage prefix, so a prefixed view is not available
        from .._memory import in_memory_storage

        storage: Storage = in_memory_storage()
    else:
        storage = scope.storage
    rounds = args.rounds
    keys = [f"data/{i}" for i in range(rounds)]
    payloads = [os.urandom(PAYLOAD) for _ in keys]
    run = _Check(storage)
    parent_existed = location.is_local_directory
    started = time.perf_counter()
    try:
        if await run.step("write", run.write(keys, payloads)):
            await run.step("read", run.read(keys, payloads))
            await run.step("list", run.list_objects(keys, rounds))
            await run.step("conditional_create", run.conditional_create())
            await run.step("conditional_update", run.conditional_update())
            await run.step("delete", run.delete(keys))
    finally:
        cleaned, cleanup_detail = await _clean(
            storage, location, scratch, parent_existed=parent_existed
        )
    for name in ("write", "read", "list", "conditional_create", "conditional_update", "delete"):
        run.results.setdefault(name, False)
        run.details.setdefault(name, "not tested: writing failed")
    advice = _settings_advice(run.results, run.details)
    latency = {
        operation: {
            "count": len(samples),
            "p50": round(percentile(samples, 0.50), 2),
            "p90": round(percentile(samples, 0.90), 2),
            "p99": round(percentile(samples, 0.99), 2),
            "max": round(max(samples), 2),
        }
        for operation, samples in run.samples.items()
    }
    settings_text = (
        "StorageSettings(" + ", ".join(f"{name}={value}" for name, value in advice.items()) + ")"
    )
    basics = all(run.results[name] for name in ("read", "write", "list", "delete"))
    conditions = run.results["conditional_create"] and run.results["conditional_update"]
    if context.json:
        emit_json(
            {
                "url": location.url,
                "scratch_prefix": scratch + "/",
                **{name: run.results[name] for name in ("read", "write", "list", "delete")},
                "conditional_create": run.results["conditional_create"],
                "conditional_update": run.results["conditional_update"],
                "details": run.details,
                "latency_ms": latency,
                "settings": advice,
                "settings_python": settings_text,
                "cleaned_up": cleaned,
                "seconds": round(time.perf_counter() - started, 3),
            }
        )
    else:
        _print_report(location, scratch, run, latency, cleanup_detail, settings_text, advice)
    return 0 if basics and conditions and cleaned else 1


def _print_report(
    location: Location,
    scratch: str,
    run: _Check,
    latency: dict[str, dict[str, float]],
    cleanup: str,
    settings_text: str,
    advice: dict[str, bool],
) -> None:
    print(f"check of {location.url} (scratch prefix {scratch}/)\n")
    for name in ("write", "read", "list", "delete", "conditional_create", "conditional_update"):
        mark = "ok  " if run.results[name] else "FAIL"
        print(f"  {mark} {name.replace('_', ' '):<20} {run.details[name]}")
    print(f"       {'clean up':<20} {cleanup}")
    print(f"\n  latency (ms)  {'count':>6} {'p50':>9} {'p90':>9} {'p99':>9} {'max':>9}")
    for operation, row in latency.items():
        print(
            f"  {operation:<12}  {row['count']:>6} {row['p50']:>9.2f} {row['p90']:>9.2f} "
            f"{row['p99']:>9.2f} {row['max']:>9.2f}"
        )
    print("\n  Settings to use with this store:")
    print(f"    {settings_text}")
    if advice:
        print(
            "    The store does not honour every conditional write: these settings drop the "
            "condition,\n    so concurrent writers can overwrite each other (at most one writer "
            "at a time)."
        )
    else:
        print("    (the defaults: conditional create and update are honoured)")
