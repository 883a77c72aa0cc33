"""``ls``, ``cat`` and ``stat``: look at what is there, without changing anything."""

from __future__ import annotations

import base64
import re
import sys
from typing import Any

from .._errors import ObjectNotFoundError, StorageError
from .._ranges import ByteRequest, OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from .._storage import ObjectInfo
from ._common import Context, emit_json, info_json, time_text, version_text
from ._urls import UsageError

__all__ = ["cat", "ls", "parse_range", "stat"]

_CAT_PART = 16 * 1024 * 1024
"""``cat`` of a whole object reads it in parts of this size, so memory stays bounded."""


async def ls(context: Context) -> int:
    args = context.args
    (location,) = context.locations([args.url])
    if location.is_local_file:
        # A local path naming a file is one object (a storage cannot be rooted at a file).
        return _print_rows(context, await _single(context, location))
    scope = context.scope(location, location.path)
    rows: list[tuple[str, ObjectInfo | None]] = []
    if args.recursive:
        async for found in scope.storage.list(scope.base):
            rows.append((scope.relative(found.key), found))
    else:
        listing = await scope.storage.list_dir(scope.base)
        rows += [(scope.relative(p).rstrip("/") + "/", None) for p in listing.prefixes]
        rows += [(scope.relative(info.key), info) for info in listing.objects]
    if not rows and location.path and not location.url.endswith("/"):
        rows = await _single(context, location)
    return _print_rows(context, rows)


def _print_rows(context: Context, rows: list[tuple[str, ObjectInfo | None]]) -> int:
    args = context.args
    rows.sort(key=lambda row: row[0])
    if context.json:
        emit_json(
            [info_json(name, info) if info is not None else {"prefix": name} for name, info in rows]
        )
        return 0
    for name, info in rows:
        if not args.long:
            print(name)
        elif info is None:
            print(f"{'PREFIX':>12}  {'':19}  {name}")
        else:
            print(
                f"{info.size:>12}  {time_text(info.last_modified)}  {name}  "
                f"({version_text(info.version)})"
            )
    return 0


async def _single(context: Context, location: Any) -> list[tuple[str, ObjectInfo | None]]:
    """``ls`` of a URL that lists nothing: the object it names, or an error if there is none
    (an empty directory on the local filesystem is not an error)."""
    parent, name = location.split()
    scope = context.scope(location, parent)
    try:
        return [(name, await scope.storage.head(scope.key(name)))]
    except ObjectNotFoundError:
        if location.is_local_directory:
            return []
        raise ObjectNotFoundError(
            name, f"{location.url}: no object and nothing under it as a prefix."
        ) from None


_RANGE = re.compile(r"(?:bytes=)?(\d*)-(\d*)")


def parse_range(text: str) -> ByteRequest:
    """HTTP's spelling, end inclusive: ``0-99`` (the first 100 bytes), ``100-`` (from byte
    100 on), ``-100`` (the last 100 bytes)."""
    match = _RANGE.fullmatch(text.strip())
    if match is None or match.groups() == ("", ""):
        raise UsageError(
            f"--range {text!r}: expected START-END (END included, as in HTTP), START- or -N."
        )
    start, end = match.groups()
    if not start:
        return SuffixByteRequest(int(end))
    if not end:
        return OffsetByteRequest(int(start))
    if int(end) < int(start):
        raise UsageError(f"--range {text!r}: END must not be before START.")
    return RangeByteRequest(int(start), int(end) + 1)


async def cat(context: Context) -> int:
    args = context.args
    (location,) = context.locations([args.url])
    parent, name = location.split()
    scope = context.scope(location, parent)
    key = scope.key(name)
    if args.range is not None or context.json:
        byte_range = parse_range(args.range) if args.range is not None else None
        result = await scope.storage.get(key, byte_range)
        if context.json:
            emit_json(
                {
                    "key": name,
                    "size": len(result.data),
                    "etag": result.version.etag,
                    "generation": result.version.generation,
                    "data_base64": base64.b64encode(result.data).decode(),
                }
            )
        else:
            _write(result.data)
        return 0
    # A whole object, in parts, each checked to come from the same version as the first.
    first = await scope.storage.get(key, RangeByteRequest(0, _CAT_PART))
    _write(first.data)
    offset, part = len(first.data), first
    while len(part.data) == _CAT_PART:
        part = await scope.storage.get(key, RangeByteRequest(offset, offset + _CAT_PART))
        if part.version != first.version:
            raise StorageError(f"{location.url} changed while it was being read; run cat again.")
        _write(part.data)
        offset += len(part.data)
    return 0


def _write(data: bytes | bytearray | memoryview) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


async def stat(context: Context) -> int:
    (location,) = context.locations([context.args.url])
    parent, name = location.split()
    scope = context.scope(location, parent)
    info = await scope.storage.head(scope.key(name))
    if context.json:
        emit_json(info_json(name, info, full=True))
        return 0
    print(f"url            {location.url}")
    print(f"size           {info.size}")
    print(f"last modified  {time_text(info.last_modified)}")
    print(f"etag           {info.version.etag or '-'}")
    if info.version.generation is not None:
        print(f"generation     {info.version.generation}")
    print(f"content type   {info.content_type or '-'}")
    for item, value in sorted(info.metadata.items()):
        print(f"metadata       {item}={value}")
    return 0
