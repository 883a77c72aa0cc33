"""Byte ranges (``_ranges``): the request kinds' validation, range splitting at its
boundaries, resolution against an object's size, and coalescing."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from icechunk_storage import RangeNotSatisfiableError
from icechunk_storage._ranges import (
    OffsetByteRequest,
    RangeByteRequest,
    SuffixByteRequest,
    check_byte_request,
    coalesce_ranges,
    resolve_range,
    split_for_multipart,
    split_range,
)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: RangeByteRequest(-1, 4), "RangeByteRequest.start must be >= 0, got -1."),
        (lambda: RangeByteRequest(0, -1), "RangeByteRequest.end must be >= 0, got -1."),
        (lambda: OffsetByteRequest(-2), "OffsetByteRequest.offset must be >= 0, got -2."),
        (lambda: SuffixByteRequest(-3), "SuffixByteRequest.suffix must be >= 0, got -3."),
        (lambda: RangeByteRequest(True, 4), "RangeByteRequest.start must be an int, got True."),
        (
            lambda: OffsetByteRequest(1.0),  # type: ignore[arg-type]
            "OffsetByteRequest.offset must be an int, got 1.0.",
        ),
        (
            lambda: SuffixByteRequest("1"),  # type: ignore[arg-type]
            "SuffixByteRequest.suffix must be an int, got '1'.",
        ),
        (
            lambda: RangeByteRequest(5, 4),
            "RangeByteRequest end (4) must be >= start (5); the end is exclusive.",
        ),
    ],
)
def test_bad_requests_are_refused_with_the_field_and_value(
    make: Callable[[], object], message: str
) -> None:
    with pytest.raises(ValueError, match=r"^[A-Za-z]+ByteRequest") as caught:
        make()
    assert str(caught.value) == message


def test_zero_is_a_valid_bound_and_start_equal_to_end_reads_nothing() -> None:
    assert RangeByteRequest(0, 0).length == 0
    assert RangeByteRequest(3, 3).length == 0
    assert RangeByteRequest(3, 10).length == 7
    assert OffsetByteRequest(0).offset == 0
    assert SuffixByteRequest(0).suffix == 0


@pytest.mark.parametrize(
    ("start", "end", "ideal", "max_parts", "expected"),
    [
        (0, 10, 10, 4, [(0, 10)]),  # exactly one ideal part
        (0, 11, 10, 4, [(0, 6), (6, 11)]),  # one byte over: two parts, the first larger
        (0, 9, 10, 4, [(0, 9)]),
        (5, 25, 10, 4, [(5, 15), (15, 25)]),
        (0, 10, 3, 4, [(0, 3), (3, 6), (6, 8), (8, 10)]),  # ceil(10/3)=4 parts
        (0, 100, 1, 3, [(0, 34), (34, 67), (67, 100)]),  # capped at max_parts
        (0, 3, 1, 8, [(0, 1), (1, 2), (2, 3)]),  # never more parts than bytes
        (0, 1, 1, 1, [(0, 1)]),
        (4, 4, 1, 1, []),
        (4, 3, 1, 1, []),
    ],
)
def test_split_range_at_its_boundaries(
    start: int, end: int, ideal: int, max_parts: int, expected: list[tuple[int, int]]
) -> None:
    assert split_range(start, end, ideal, max_parts) == expected


@pytest.mark.parametrize(("ideal", "max_parts"), [(0, 1), (1, 0), (-1, 5)])
def test_split_range_refuses_non_positive_sizes(ideal: int, max_parts: int) -> None:
    with pytest.raises(ValueError, match=r"^ideal_size and max_parts must be >= 1\.$"):
        split_range(0, 10, ideal, max_parts)


@pytest.mark.parametrize(
    ("size", "ideal", "max_parts", "expected"),
    [
        (0, 5, 3, [(0, 0)]),
        (-1, 5, 3, [(0, 0)]),
        (1, 5, 3, [(0, 1)]),
        (5, 5, 3, [(0, 5)]),
        (6, 5, 3, [(0, 3), (3, 6)]),
        (10, 5, 3, [(0, 5), (5, 10)]),
        (11, 5, 3, [(0, 4), (4, 8), (8, 11)]),
        (100, 5, 3, [(0, 34), (34, 68), (68, 100)]),
        (7, 2, 8, [(0, 2), (2, 4), (4, 6), (6, 7)]),
    ],
)
def test_split_for_multipart_equal_parts_but_the_last(
    size: int, ideal: int, max_parts: int, expected: list[tuple[int, int]]
) -> None:
    assert split_for_multipart(size, ideal, max_parts) == expected


def test_only_the_three_request_kinds_or_none_are_accepted() -> None:
    for ok in (None, RangeByteRequest(0, 1), OffsetByteRequest(1), SuffixByteRequest(1)):
        check_byte_request(ok)
    with pytest.raises(TypeError) as caught:
        check_byte_request((0, 4))
    assert str(caught.value) == (
        "Unexpected byte_range, got tuple (0, 4); expected RangeByteRequest, "
        "OffsetByteRequest, SuffixByteRequest or None."
    )


@pytest.mark.parametrize(
    ("byte_range", "size", "expected"),
    [
        (None, 10, (0, 10)),
        (None, 0, (0, 0)),
        (RangeByteRequest(2, 5), 10, (2, 5)),
        (RangeByteRequest(2, 50), 10, (2, 10)),  # truncated at the end
        (RangeByteRequest(10, 12), 10, (10, 10)),  # starts at the end: empty
        (RangeByteRequest(3, 3), 10, (3, 3)),
        (OffsetByteRequest(4), 10, (4, 10)),
        (OffsetByteRequest(10), 10, (10, 10)),
        (SuffixByteRequest(3), 10, (7, 10)),
        (SuffixByteRequest(10), 10, (0, 10)),
        (SuffixByteRequest(11), 10, (0, 10)),  # longer than the object: all of it
        (SuffixByteRequest(0), 10, (10, 10)),
    ],
)
def test_resolve_range(byte_range: object, size: int, expected: tuple[int, int]) -> None:
    assert resolve_range(byte_range, size) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("byte_range", [RangeByteRequest(11, 12), OffsetByteRequest(11)])
def test_a_start_past_the_end_is_not_satisfiable(byte_range: object) -> None:
    with pytest.raises(RangeNotSatisfiableError) as caught:
        resolve_range(byte_range, 10)  # type: ignore[arg-type]
    assert str(caught.value) == (
        f"Byte range {byte_range} starts at byte 11, past the end of the object (10 bytes)."
    )


def test_coalescing_merges_within_the_gap_and_size() -> None:
    ranges = [(20, 30), (0, 10), (12, 15), (31, 40)]
    # sorted by start: (0,10) (12,15) gap 2; (20,30) gap 5; (31,40) gap 1
    assert coalesce_ranges(ranges, max_gap=2, max_size=100) == [
        (0, 15, [1, 2]),
        (20, 40, [0, 3]),
    ]
    assert coalesce_ranges(ranges, max_gap=5, max_size=100) == [(0, 40, [1, 2, 0, 3])]
    assert coalesce_ranges(ranges, max_gap=1, max_size=100) == [
        (0, 10, [1]),
        (12, 15, [2]),
        (20, 40, [0, 3]),
    ]


def test_coalescing_stops_at_max_size_exactly() -> None:
    ranges = [(0, 10), (10, 20), (20, 31)]
    assert coalesce_ranges(ranges, max_gap=0, max_size=20) == [(0, 20, [0, 1]), (20, 31, [2])]
    assert coalesce_ranges(ranges, max_gap=0, max_size=31) == [(0, 31, [0, 1, 2])]
    # the size is measured from the merged read's start, not from byte 0
    assert coalesce_ranges([(100, 110), (110, 120)], max_gap=0, max_size=20) == [(100, 120, [0, 1])]
    # a single range larger than max_size is read alone, whole
    assert coalesce_ranges([(0, 50)], max_gap=0, max_size=10) == [(0, 50, [0])]


def test_coalescing_overlapping_and_contained_ranges() -> None:
    assert coalesce_ranges([(0, 10), (2, 4), (8, 12)], max_gap=0, max_size=100) == [
        (0, 12, [0, 1, 2])
    ]
    assert coalesce_ranges([], max_gap=0, max_size=1) == []
