"""``cp SRC DST``: copy one object or a whole prefix between any two storages.

Reads go through the chunk fetch path (``get_many``) in batches of at most ``--buffer-mib / 2``
bytes (an object larger than that is a batch of its own), and the next batch is read while
the current one is written: at most two batches are held in memory. Writes are ``put`` (with
``--if-absent``: conditional create, and an object already at the destination is skipped).

Every copy is verified: the bytes read must be as many as the source listed; when source
and destination are both S3 and the source's etag is the MD5 of the bytes read, the
destination's etag must be that MD5 too; objects of 8 MiB or more are read back with
``head`` and must have the size and version the write reported. Only the bytes are copied:
content type and user metadata are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import time
from collections.abc import Iterator

import attrs

from .._errors import AlreadyExistsError, ObjectNotFoundError, StorageError
from .._fetch import run_bounded
from .._local import RESERVED
from .._ranges import ByteRequest
from .._storage import Data, ObjectInfo
from ._common import Context, emit_json, human_size
from ._progress import Progress
from ._urls import Location, Scope, UsageError

__all__ = ["cp"]

LARGE = 8 * 1024 * 1024
"""Objects at least this large are read back (``head``) after the write."""
_MD5 = re.compile(r'"?([0-9a-f]{32})"?')


class VerificationError(StorageError):
    """A copied object does not match its source."""


@attrs.define
class _Item:
    source: str  # key in the source scope's storage
    info: ObjectInfo
    destination: str  # key in the destination scope's storage
    label: str  # for messages: the source URL of the object


@attrs.define
class _Totals:
    copied: int = 0
    skipped: int = 0
    bytes: int = 0
    etag_verified: int = 0
    read_back: int = 0


async def _plan(context: Context, src: Location, dst: Location) -> tuple[Scope, Scope, list[_Item]]:
    """What to copy where: one object, or everything under a prefix."""
    if src.path and not src.url.endswith("/"):
        parent, name = src.split()
        scope = context.scope(src, parent)
        try:
            info = await scope.storage.head(scope.key(name))
        except ObjectNotFoundError:
            pass
        else:
            into = dst.url.endswith("/") or not dst.path
            into = into or dst.is_local_directory
            if into:
                target = context.scope(dst, dst.path)
                destination = target.key(name)
            else:
                dst_parent, dst_name = dst.split()
                target = context.scope(dst, dst_parent)
                destination = target.key(dst_name)
            return scope, target, [_Item(scope.key(name), info, destination, src.url)]
    scope = context.scope(src, src.path)
    target = context.scope(dst, dst.path)
    items = []
    async for info in scope.storage.list(scope.base):
        relative = scope.relative(info.key)
        items.append(_Item(info.key, info, target.key(relative), src.describe(relative)))
    if not items:
        raise ObjectNotFoundError(src.path, f"{src.url}: no object, and nothing under it.")
    items.sort(key=lambda item: item.source)
    return scope, target, items


def _batches(items: list[_Item], limit: int) -> Iterator[list[_Item]]:
    batch: list[_Item] = []
    size = 0
    for item in items:
        if batch and size + item.info.size > limit:
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += item.info.size
    if batch:
        yield batch


class _Copier:
    def __init__(
        self, context: Context, source: Scope, target: Scope, kinds: tuple[str, str]
    ) -> None:
        args = context.args
        self.source, self.target = source, target
        self.concurrency: int = args.concurrency
        self.if_absent: bool = args.if_absent
        self.compare_etags = kinds == ("s3", "s3")
        self.totals = _Totals()
        self.progress: Progress | None = None

    async def read(self, batch: list[_Item]) -> list[Data | None]:
        requests: list[tuple[str, ByteRequest | None]] = [(item.source, None) for item in batch]
        return await self.source.storage.get_many(requests, max_concurrency=self.concurrency)

    async def write(self, batch: list[_Item], data: list[Data | None]) -> None:
        async def one(index: int) -> None:
            item, payload = batch[index], data[index]
            assert payload is not None  # get_many raises for a missing key
            data[index] = None  # the batch's memory goes as its objects are written
            await self.put(item, payload)

        await run_bounded(range(len(batch)), one, self.concurrency)

    async def put(self, item: _Item, payload: Data) -> None:
        if len(payload) != item.info.size:
            raise VerificationError(
                f"{item.label}: read {len(payload)} bytes, but it was listed with "
                f"{item.info.size}; did it change during the copy? Run cp again."
            )
        md5 = None
        source_etag = _MD5.fullmatch(item.info.version.etag or "")
        if self.compare_etags and source_etag is not None:
            md5 = hashlib.md5(payload, usedforsecurity=False).hexdigest()
            if md5 != source_etag.group(1):
                md5 = None  # not an MD5 etag (SSE-KMS, multipart): nothing to compare
        storage = self.target.storage
        try:
            version = await storage.put(
                item.destination, payload, mode="create" if self.if_absent else "overwrite"
            )
        except AlreadyExistsError:
            self.totals.skipped += 1
            self._advance(len(payload))
            return
        if md5 is not None:
            written = _MD5.fullmatch(version.etag or "")
            if written is None or written.group(1) != md5:
                raise VerificationError(
                    f"{item.label}: the destination's etag {version.etag} is not the MD5 of "
                    f"the bytes copied ({md5}). If the destination bucket encrypts with "
                    "SSE-KMS its etags are not MD5s: pass --no-verify-etag."
                )
            self.totals.etag_verified += 1
        if len(payload) >= LARGE:
            info = await storage.head(item.destination)
            if info.size != len(payload) or info.version.etag != version.etag:
                raise VerificationError(
                    f"{item.label}: read back {info.size} bytes at {info.version} at the "
                    f"destination, after writing {len(payload)} bytes at {version}."
                )
            self.totals.read_back += 1
        self.totals.copied += 1
        self.totals.bytes += len(payload)
        self._advance(len(payload))

    def _advance(self, size: int) -> None:
        if self.progress is not None:
            self.progress.advance(size)

    async def run(self, items: list[_Item], batch_bytes: int) -> None:
        batches = list(_batches(items, batch_bytes))
        pending: asyncio.Task[list[Data | None]] | None = None
        try:
            pending = asyncio.ensure_future(self.read(batches[0]))
            for index, batch in enumerate(batches):
                assert pending is not None
                data = await pending
                pending = None
                if index + 1 < len(batches):
                    pending = asyncio.ensure_future(self.read(batches[index + 1]))
                await self.write(batch, data)
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending


def _tidy_local(location: Location, scope: Scope) -> None:
    """The local storage keeps temporary files in ``<root>/.icechunk-storage``: remove the
    directories it leaves empty, so a copy into a directory adds only the copied files."""
    root = getattr(scope.storage, "root", None)
    if location.kind != "local" or not isinstance(root, str):
        return
    reserved = os.path.join(root, RESERVED)
    for directory in (os.path.join(reserved, "tmp"), reserved):
        with contextlib.suppress(OSError):
            os.rmdir(directory)  # only if empty


async def cp(context: Context) -> int:
    args = context.args
    src, dst = context.locations([args.src, args.dst])
    if args.buffer_mib < 2:
        raise UsageError(f"--buffer-mib must be at least 2, got {args.buffer_mib}.")
    started = time.perf_counter()
    source, target, items = await _plan(context, src, dst)
    copier = _Copier(context, source, target, (src.kind, dst.kind))
    copier.compare_etags = copier.compare_etags and args.verify_etag
    total = sum(item.info.size for item in items)
    show = args.progress if args.progress is not None else context.stderr_is_terminal
    copier.progress = Progress(total, len(items), enabled=show and not context.json)
    try:
        with copier.progress:
            await copier.run(items, args.buffer_mib * 1024 * 1024 // 2)
    finally:
        _tidy_local(dst, target)
    seconds = time.perf_counter() - started
    totals = copier.totals
    if context.json:
        emit_json({**attrs.asdict(totals), "objects": len(items), "seconds": round(seconds, 3)})
        return 0
    rate = human_size(totals.bytes / seconds) + "/s" if seconds > 0 else "-"
    line = (
        f"copied {totals.copied} object{'s' * (totals.copied != 1)} "
        f"({human_size(totals.bytes)}) in {seconds:.2f} s ({rate})"
    )
    if totals.skipped:
        line += f"; {totals.skipped} skipped: already at the destination (--if-absent)"
    print(line)
    checks = [f"sizes of {totals.copied}"]
    if totals.etag_verified:
        checks.append(f"MD5 etags of {totals.etag_verified}")
    if totals.read_back:
        checks.append(f"{totals.read_back} large ones read back")
    print("verified: " + ", ".join(checks))
    return 0
