"""Byte ranges: the three request kinds, and how large ranges are split into parts."""

from __future__ import annotations

import math

import attrs

from ._errors import RangeNotSatisfiableError

__all__ = [
    "ByteRequest",
    "OffsetByteRequest",
    "RangeByteRequest",
    "SuffixByteRequest",
    "coalesce_ranges",
    "resolve_range",
    "split_for_multipart",
    "split_range",
]


def _non_negative(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"{type(instance).__name__}.{attribute.name} must be an int, got {value!r}."
        )
    if value < 0:
        raise ValueError(f"{type(instance).__name__}.{attribute.name} must be >= 0, got {value}.")


@attrs.frozen
class RangeByteRequest:
    """Bytes ``start`` (inclusive) to ``end`` (exclusive): HTTP ``Range: bytes=start-(end-1)``.

    A range running past the end of the object is truncated; one starting past the end raises
    RangeNotSatisfiableError; ``start == end`` reads nothing.
    """

    start: int = attrs.field(validator=_non_negative)
    end: int = attrs.field(validator=_non_negative)

    def __attrs_post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(
                f"RangeByteRequest end ({self.end}) must be >= start ({self.start}); "
                "the end is exclusive."
            )

    @property
    def length(self) -> int:
        return self.end - self.start


@attrs.frozen
class OffsetByteRequest:
    """Every byte from ``offset`` to the end: HTTP ``Range: bytes=offset-``."""

    offset: int = attrs.field(validator=_non_negative)


@attrs.frozen
class SuffixByteRequest:
    """The last ``suffix`` bytes (the whole object if it is shorter): ``Range: bytes=-suffix``."""

    suffix: int = attrs.field(validator=_non_negative)


ByteRequest = RangeByteRequest | OffsetByteRequest | SuffixByteRequest


def split_range(start: int, end: int, ideal_size: int, max_parts: int) -> list[tuple[int, int]]:
    """Split ``[start, end)`` into ``n = clamp(ceil(size/ideal_size), 1, max_parts)`` parts.

    Parts are as equal as possible (the first ``size % n`` parts get one more byte), never
    empty, with no gaps or overlaps. An empty range gives no parts.
    """
    if ideal_size < 1 or max_parts < 1:
        raise ValueError("ideal_size and max_parts must be >= 1.")
    size = end - start
    if size <= 0:
        return []
    n = min(max(math.ceil(size / ideal_size), 1), max_parts, size)
    base, extra = divmod(size, n)
    parts = []
    position = start
    for index in range(n):
        length = base + (1 if index < extra else 0)
        parts.append((position, position + length))
        position += length
    return parts


def split_for_multipart(size: int, ideal_size: int, max_parts: int) -> list[tuple[int, int]]:
    """Parts for a multipart upload: all equal but the last, which is never empty or larger.

    Some S3-compatible stores (R2) require every part but the last to have the same size.
    Unlike Icechunk's split, this never emits an empty last part.
    """
    if size <= 0:
        return [(0, 0)]
    n = min(max(math.ceil(size / ideal_size), 1), max_parts)
    part = math.ceil(size / n)
    return [(offset, min(offset + part, size)) for offset in range(0, size, part)]


def check_byte_request(byte_range: object) -> None:
    """Refuse anything but the three request kinds (or None), with a TypeError."""
    if byte_range is not None and not isinstance(
        byte_range, RangeByteRequest | OffsetByteRequest | SuffixByteRequest
    ):
        raise TypeError(
            "Unexpected byte_range, got "
            f"{type(byte_range).__name__} {byte_range!r}; expected RangeByteRequest, "
            "OffsetByteRequest, SuffixByteRequest or None."
        )


def resolve_range(byte_range: ByteRequest | None, size: int) -> tuple[int, int]:
    """``(start, end)`` of a byte request on an object of ``size`` bytes, per the contract.

    Past-the-end ranges are truncated, a long suffix is the whole object, and a start past
    the end raises RangeNotSatisfiableError. For backends that hold the size already.
    """
    if byte_range is None:
        return 0, size
    if isinstance(byte_range, RangeByteRequest):
        start, end = byte_range.start, min(byte_range.end, size)
    elif isinstance(byte_range, OffsetByteRequest):
        start, end = byte_range.offset, size
    else:
        start, end = max(size - byte_range.suffix, 0), size
    if start > size:
        raise RangeNotSatisfiableError(
            f"Byte range {byte_range} starts at byte {start}, past the end of the object "
            f"({size} bytes)."
        )
    return start, max(start, end)


def coalesce_ranges(
    ranges: list[tuple[int, int]], max_gap: int, max_size: int
) -> list[tuple[int, int, list[int]]]:
    """Merge nearby ``(start, end)`` ranges of one object into fewer reads.

    Returns ``(start, end, indices)`` per merged read, ``indices`` pointing into ``ranges``.
    Ranges merge, in order of start, while the gap to the merged read's end is at most
    ``max_gap`` and the merged read stays at most ``max_size`` bytes: zarr's policy for
    ``Store.get_ranges`` (``max_gap_bytes``, ``max_coalesced_bytes``). A single range larger
    than ``max_size`` is read alone, whole.
    """
    merged: list[tuple[int, int, list[int]]] = []
    for index in sorted(range(len(ranges)), key=lambda i: ranges[i][0]):
        start, end = ranges[index]
        if merged:
            first, last, members = merged[-1]
            if start - last <= max_gap and max(last, end) - first <= max_size:
                members.append(index)
                merged[-1] = (first, max(last, end), members)
                continue
        merged.append((start, end, [index]))
    return merged
