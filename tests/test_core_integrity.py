"""The response rules (``_transport._integrity``) without a socket: each plan is driven the
way the transports drive it (``Sink.feed`` in pieces, or ``Sink.buffer``/``advance`` as the
lean transport reads into it), so every Content-Range check, slice and cap is exercised at
its boundary."""

from __future__ import annotations

from contextlib import AbstractContextManager

import pytest

from icechunk_storage import RangeNotSatisfiableError
from icechunk_storage._errors import ResponseIntegrityError
from icechunk_storage._ranges import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    SuffixByteRequest,
)
from icechunk_storage._transport._integrity import (
    BodyPlan,
    PlannedTransport,
    ReadPlan,
    RequestPlan,
    Sink,
    describe_range,
)
from icechunk_storage._transport._model import DISCARD_LIMIT, ERROR_BODY_CAP, Request, Response

OBJECT = bytes(range(256)) * 4  # 1024 distinct-ish bytes
MODES = ["feed-1", "feed-7", "feed-10", "feed-all", "buffer-1", "buffer-7", "buffer-all"]


def _deliver(
    plan: BodyPlan,
    status: int,
    headers: dict[str, str],
    body: bytes,
    mode: str = "feed-all",
    *,
    length: int | str | None = "auto",
) -> Response:
    """Head, body (as far as the sink wants it), finish: what a transport does."""
    announced = len(body) if length == "auto" else length
    assert not isinstance(announced, str)
    sink = plan.on_head(status, headers, announced)
    how, _, size = mode.partition("-")
    step = len(body) or 1 if size == "all" else int(size)
    view = memoryview(body)
    if how == "buffer" and sink.length is not None:
        while view and not sink.done:
            target = sink.buffer()
            assert len(target) > 0
            count = min(len(target), len(view), step)
            target[:count] = view[:count]
            sink.advance(count)
            view = view[count:]
    else:
        while view and not sink.done:
            sink.feed(view[:step])
            view = view[step:]
    if announced is not None and len(body) >= announced:
        assert sink.done  # every byte counted, however the body was cut into pieces
    response = plan.finish(status, headers, sink)
    assert response.status == status
    assert response.headers is headers
    return response


def _partial(byte_range: ByteRequest | None, first: int, last: int, total: object) -> Response:
    plan = ReadPlan("GET k", byte_range, None)
    headers = {"content-range": f"bytes {first}-{last}/{total}"}
    return _deliver(plan, 206, headers, OBJECT[first : last + 1])


def _integrity_error(
    match: str,
) -> AbstractContextManager[pytest.ExceptionInfo[ResponseIntegrityError]]:
    return pytest.raises(ResponseIntegrityError, match=match)


def test_describe_range() -> None:
    assert describe_range(None) == "the whole object"
    assert describe_range(RangeByteRequest(3, 10)) == "bytes=3-9"
    assert describe_range(OffsetByteRequest(4)) == "bytes=4-"
    assert describe_range(SuffixByteRequest(5)) == "bytes=-5"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("byte_range", "first", "last", "total"),
    [
        (RangeByteRequest(10, 20), 10, 19, 1024),
        (RangeByteRequest(10, 20), 10, 19, "*"),
        (RangeByteRequest(1000, 2000), 1000, 1023, 1024),  # truncated at the end
        (RangeByteRequest(0, 1), 0, 0, 1),
        (OffsetByteRequest(1000), 1000, 1023, 1024),
        (SuffixByteRequest(24), 1000, 1023, 1024),
        (SuffixByteRequest(5000), 0, 1023, 1024),
    ],
)
def test_an_honest_partial_response_gives_exactly_the_bytes(
    byte_range: ByteRequest, first: int, last: int, total: object, mode: str
) -> None:
    plan = ReadPlan("GET k", byte_range, None)
    headers = {"content-range": f"bytes {first}-{last}/{total}"}
    response = _deliver(plan, 206, headers, OBJECT[first : last + 1], mode)
    assert bytes(response.body) == OBJECT[first : last + 1]
    assert response.status == 206
    assert response.total == (None if total == "*" else total)
    assert response.written == -1


@pytest.mark.parametrize(
    ("byte_range", "first", "last", "total", "expected"),
    [
        (RangeByteRequest(10, 20), 11, 19, 1024, "expected bytes 10-19/1024"),
        (RangeByteRequest(10, 20), 10, 20, 1024, "expected bytes 10-19/1024"),
        (RangeByteRequest(10, 20), 10, 18, 1024, "expected bytes 10-19/1024"),
        (RangeByteRequest(10, 20), 9, 19, "*", r"expected bytes 10-19\)"),
        (RangeByteRequest(1000, 2000), 1000, 1022, 1024, "expected bytes 1000-1023/1024"),
        (OffsetByteRequest(1000), 1000, 1022, 1024, "expected bytes 1000-1023/1024"),
        (OffsetByteRequest(1000), 1001, 1023, 1024, "expected bytes 1000-1023/1024"),
        (OffsetByteRequest(1000), 1000, 1023, "*", r"expected bytes=1000-\)"),
        (SuffixByteRequest(24), 999, 1023, 1024, "expected bytes 1000-1023/1024"),
        (SuffixByteRequest(24), 1000, 1022, 1024, "expected bytes 1000-1023/1024"),
        (SuffixByteRequest(24), 1000, 1023, "*", r"expected bytes=-24\)"),
        (SuffixByteRequest(5000), 1, 1023, 1024, "expected bytes 0-1023/1024"),
    ],
)
def test_a_partial_response_for_other_bytes_is_refused(
    byte_range: ByteRequest, first: int, last: int, total: object, expected: str
) -> None:
    with _integrity_error(f"^GET k: asked for .*, the server answered with .*{expected}"):
        _partial(byte_range, first, last, total)


@pytest.mark.parametrize(
    "value",
    ["bytes 10-19", "bytes=10-19/1024", "bytes 10-19/1024 x", "items 10-19/1024", "bytes -19/1"],
)
def test_a_malformed_content_range_is_refused(value: str) -> None:
    plan = ReadPlan("GET k", RangeByteRequest(10, 20), None)
    with _integrity_error(r"^GET k: asked for bytes=10-19, got a malformed Content-Range"):
        plan.on_head(206, {"content-range": value}, 10)


def test_a_long_malformed_content_range_is_quoted_cut_to_80_characters() -> None:
    plan = ReadPlan("GET k", RangeByteRequest(10, 20), None)
    value = "bytes " + "9" * 100
    with pytest.raises(ResponseIntegrityError) as caught:
        plan.on_head(206, {"content-range": value}, 10)
    assert str(caught.value).endswith(f"Content-Range {value[:80]!r}.")


def test_content_range_whitespace_around_is_allowed() -> None:
    plan = ReadPlan("GET k", RangeByteRequest(10, 20), None)
    sink = plan.on_head(206, {"content-range": "  bytes 10-19/1024 "}, 10)
    assert sink.length == 10


@pytest.mark.parametrize("value", ["bytes 19-10/1024", "bytes 10-1024/1024", "bytes 0-0/0"])
def test_an_impossible_content_range_is_refused(value: str) -> None:
    plan = ReadPlan("GET k", RangeByteRequest(10, 20), None)
    with _integrity_error(r"^GET k: asked for bytes=10-19, got an impossible Content-Range"):
        plan.on_head(206, {"content-range": value}, 10)


def test_the_last_byte_of_the_object_is_a_possible_end() -> None:
    response = _partial(RangeByteRequest(1014, 1024), 1014, 1023, 1024)
    assert bytes(response.body) == OBJECT[1014:]


def test_a_partial_response_needs_a_range_and_a_content_range() -> None:
    with _integrity_error(r"^GET k: the server sent a partial response \(206\) to a request"):
        ReadPlan("GET k", None, None).on_head(206, {"content-range": "bytes 0-9/10"}, 10)
    with _integrity_error(r"^GET k: asked for bytes=0-9, got a 206 without a Content-Range"):
        ReadPlan("GET k", RangeByteRequest(0, 10), None).on_head(206, {}, 10)


@pytest.mark.parametrize("length", [9, 11])
def test_content_length_must_agree_with_content_range(length: int) -> None:
    plan = ReadPlan("GET k", RangeByteRequest(10, 20), None)
    with _integrity_error(rf"covers 10 bytes but Content-Length is {length}\.$"):
        plan.on_head(206, {"content-range": "bytes 10-19/1024"}, length)


@pytest.mark.parametrize("mode", MODES)
def test_a_partial_body_cut_short_is_refused(mode: str) -> None:
    plan = ReadPlan("GET k", RangeByteRequest(10, 20), None)
    with _integrity_error(r"^GET k: asked for bytes=10-19, got 9 of the 10 bytes announced\.$"):
        _deliver(plan, 206, {"content-range": "bytes 10-19/1024"}, OBJECT[10:19], mode, length=10)


@pytest.mark.parametrize("mode", ["feed-1", "feed-4", "feed-all"])
def test_an_unsized_partial_body_must_be_exactly_the_range(mode: str) -> None:
    headers = {"content-range": "bytes 10-19/1024"}
    plan = ReadPlan("GET k", RangeByteRequest(10, 20), None)
    response = _deliver(plan, 206, headers, OBJECT[10:20], mode, length=None)
    assert bytes(response.body) == OBJECT[10:20]
    assert response.total == 1024
    for body, got in ((OBJECT[10:21], 11), (OBJECT[10:19], 9)):
        plan = ReadPlan("GET k", RangeByteRequest(10, 20), None)
        with _integrity_error(rf"got {got} bytes for a Content-Range of 10\.$"):
            _deliver(plan, 206, headers, body, mode, length=None)


@pytest.mark.parametrize("mode", MODES)
def test_a_partial_body_lands_in_the_callers_buffer(mode: str) -> None:
    into = memoryview(bytearray(10))
    plan = ReadPlan("GET k", RangeByteRequest(10, 20), into)
    headers = {"content-range": "bytes 10-19/1024"}
    response = _deliver(plan, 206, headers, OBJECT[10:20], mode)
    assert (response.body, response.written, response.total) == (b"", 10, 1024)
    assert bytes(into) == OBJECT[10:20]


def test_an_unsized_partial_body_is_held_to_one_byte_past_the_range() -> None:
    plan = ReadPlan("GET k", RangeByteRequest(10, 20), None)
    sink = plan.on_head(206, {"content-range": "bytes 10-19/1024"}, None)
    sink.feed(bytes(5))
    assert not sink.done
    sink.feed(bytes(1000))
    assert sink.done
    assert len(sink.kept()) == 11


def test_an_unsized_partial_body_lands_in_the_callers_buffer() -> None:
    into = memoryview(bytearray(b"\xff" * 12))
    plan = ReadPlan("GET k", RangeByteRequest(10, 20), into)
    headers = {"content-range": "bytes 10-19/*"}
    response = _deliver(plan, 206, headers, OBJECT[10:20], "feed-3", length=None)
    assert (response.body, response.written, response.total) == (b"", 10, None)
    assert bytes(into) == OBJECT[10:20] + b"\xff\xff"


def test_a_response_larger_than_the_callers_buffer_is_refused() -> None:
    into = memoryview(bytearray(5))
    plan = ReadPlan("GET k", RangeByteRequest(10, 20), into)
    with _integrity_error(r"the response carries 10 bytes, more than the 5 bytes asked for\.$"):
        plan.on_head(206, {"content-range": "bytes 10-19/1024"}, 10)
    plan = ReadPlan("GET k", None, into)
    with _integrity_error(r"^GET k: asked for the whole object, the response carries 6 bytes"):
        plan.on_head(200, {}, 6)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("byte_range", "start", "end"),
    [
        (None, 0, 1024),
        (RangeByteRequest(10, 20), 10, 20),
        (RangeByteRequest(0, 10), 0, 10),
        (RangeByteRequest(1, 2), 1, 2),
        (RangeByteRequest(3, 3), 3, 3),  # empty, mid-object: the rest is still discarded
        (RangeByteRequest(1000, 5000), 1000, 1024),
        (RangeByteRequest(1024, 1030), 1024, 1024),
        (OffsetByteRequest(1), 1, 1024),
        (SuffixByteRequest(7), 1017, 1024),
        (SuffixByteRequest(0), 1024, 1024),
    ],
)
def test_a_whole_object_answer_is_cut_to_the_range(
    byte_range: ByteRequest | None, start: int, end: int, mode: str
) -> None:
    response = _deliver(ReadPlan("GET k", byte_range, None), 200, {}, OBJECT, mode)
    assert bytes(response.body) == OBJECT[start:end]
    assert (response.status, response.total) == (200, 1024)
    into = memoryview(bytearray(end - start))
    response = _deliver(ReadPlan("GET k", byte_range, into), 200, {}, OBJECT, mode)
    assert (response.body, response.written, response.total) == (b"", end - start, 1024)
    assert bytes(into) == OBJECT[start:end]


@pytest.mark.parametrize("mode", ["feed-1", "feed-5", "feed-all"])
@pytest.mark.parametrize(
    ("byte_range", "start", "end"),
    [
        (None, 0, 1024),
        (RangeByteRequest(10, 20), 10, 20),
        (RangeByteRequest(0, 10), 0, 10),
        (OffsetByteRequest(1), 1, 1024),
        (OffsetByteRequest(1000), 1000, 1024),
        (SuffixByteRequest(4), 1020, 1024),
    ],
)
def test_an_unsized_whole_object_answer_is_cut_to_the_range(
    byte_range: ByteRequest | None, start: int, end: int, mode: str
) -> None:
    response = _deliver(ReadPlan("GET k", byte_range, None), 200, {}, OBJECT, mode, length=None)
    assert bytes(response.body) == OBJECT[start:end]
    assert response.total == 1024
    into = memoryview(bytearray(end - start))
    plan = ReadPlan("GET k", byte_range, into)
    response = _deliver(plan, 200, {}, OBJECT, mode, length=None)
    assert (response.body, response.written, response.total) == (b"", end - start, 1024)
    assert bytes(into) == OBJECT[start:end]


def test_a_whole_object_shorter_than_the_range_start_is_not_satisfiable() -> None:
    with pytest.raises(RangeNotSatisfiableError):
        ReadPlan("GET k", RangeByteRequest(1025, 1030), None).on_head(200, {}, 1024)
    with pytest.raises(RangeNotSatisfiableError):
        _deliver(ReadPlan("GET k", OffsetByteRequest(1025), None), 200, {}, OBJECT, length=None)


def test_a_whole_object_far_past_the_range_is_not_drained() -> None:
    plan = ReadPlan("GET k", RangeByteRequest(0, 10), None)
    sink = plan.on_head(200, {}, 10 + DISCARD_LIMIT)  # exactly the limit after the range
    assert (sink.stop_after, sink.close_after) == (10 + DISCARD_LIMIT, False)
    plan = ReadPlan("GET k", RangeByteRequest(0, 10), None)
    sink = plan.on_head(200, {}, 11 + DISCARD_LIMIT)  # one byte more: close instead
    assert (sink.stop_after, sink.close_after) == (10, True)
    sink.feed(OBJECT[:4])
    assert not sink.done
    sink.feed(OBJECT[4:50])
    assert sink.done
    response = plan.finish(200, {}, sink)
    assert bytes(response.body) == OBJECT[:10]
    assert response.total == 11 + DISCARD_LIMIT


def test_an_unsized_whole_object_answer_is_capped_past_the_range() -> None:
    plan = ReadPlan("GET k", RangeByteRequest(5, 10), None)
    sink = plan.on_head(200, {}, None)
    assert sink.cap == 10 + DISCARD_LIMIT
    sink.feed(bytes(10 + DISCARD_LIMIT))
    assert not sink.overflowed
    assert bytes(plan.finish(200, {}, sink).body) == bytes(5)
    plan = ReadPlan("GET k", RangeByteRequest(5, 10), None)
    sink = plan.on_head(200, {}, None)
    sink.feed(bytes(11 + DISCARD_LIMIT))
    assert sink.overflowed
    assert sink.done
    with _integrity_error(
        rf"^GET k: asked for bytes=5-9, the server ignored the range and sent an unsized body "
        rf"longer than {10 + DISCARD_LIMIT} bytes\.$"
    ):
        plan.finish(200, {}, sink)
    assert ReadPlan("GET k", OffsetByteRequest(5), None).on_head(200, {}, None).cap is None


@pytest.mark.parametrize(
    ("status", "method", "read_too"),
    [(204, "GET", True), (304, "GET", True), (404, "HEAD", True), (200, "HEAD", False)],
)
def test_responses_without_a_body(status: int, method: str, read_too: bool) -> None:
    """(Reads are GETs: a HEAD goes through ``RequestPlan``.)"""
    plans: list[BodyPlan] = [RequestPlan("k", method, max_body=10)]
    if read_too:
        plans.append(ReadPlan("k", RangeByteRequest(0, 1), None, method))
    for plan in plans:
        sink = plan.on_head(status, {"content-length": "5"}, 5)
        assert (sink.length, sink.stop_after, sink.done) == (0, 0, True)
        response = plan.finish(status, {}, sink)
        assert response.body == b""


@pytest.mark.parametrize("status", [100, 199])
def test_interim_statuses_have_no_body(status: int) -> None:
    assert RequestPlan("k", "GET", max_body=10).on_head(status, {}, 5).done


@pytest.mark.parametrize("mode", ["feed-1", "feed-all", "buffer-3", "buffer-all"])
@pytest.mark.parametrize("status", [300, 404, 503])
def test_error_bodies_are_kept_up_to_the_cap(status: int, mode: str) -> None:
    body = bytes(range(256)) * (ERROR_BODY_CAP // 256 + 2)
    for plan in (
        ReadPlan("GET k", RangeByteRequest(0, 1), None),
        RequestPlan("PUT k", "PUT", max_body=10),
    ):
        response = _deliver(plan, status, {}, body, mode)
        assert response.status == status
        assert bytes(response.body) == body[:ERROR_BODY_CAP]
        small = _deliver(plan, status, {}, b"<Error/>", mode)
        assert bytes(small.body) == b"<Error/>"
        unsized = _deliver(plan, status, {}, body, "feed-1000", length=None)
        assert bytes(unsized.body) == body[:ERROR_BODY_CAP]


@pytest.mark.parametrize("mode", MODES)
def test_request_bodies_up_to_max_body(mode: str) -> None:
    plan = RequestPlan("LIST", "GET", max_body=100)
    response = _deliver(plan, 200, {}, OBJECT[:100], mode)
    assert bytes(response.body) == OBJECT[:100]
    assert response.status == 200
    response = _deliver(RequestPlan("LIST", "GET", max_body=100), 299, {}, b"", mode)
    assert response.body == b""
    with _integrity_error(
        r"^LIST: the server announced a 101-byte response, more than the 100 bytes this "
        r"request may return\.$"
    ):
        RequestPlan("LIST", "GET", max_body=100).on_head(200, {}, 101)


@pytest.mark.parametrize("mode", ["feed-1", "feed-7", "feed-all"])
def test_unsized_request_bodies_up_to_max_body(mode: str) -> None:
    response = _deliver(RequestPlan("LIST", "GET", 100), 200, {}, OBJECT[:100], mode, length=None)
    assert bytes(response.body) == OBJECT[:100]
    with _integrity_error(r"^LIST: the response is larger than 100 bytes\.$"):
        _deliver(RequestPlan("LIST", "GET", 100), 200, {}, OBJECT[:101], mode, length=None)


@pytest.mark.parametrize("plan", [ReadPlan("GET k", None, None), RequestPlan("PUT", "PUT", 10)])
def test_a_sized_error_body_stops_at_the_cap(plan: BodyPlan) -> None:
    sink = plan.on_head(404, {}, ERROR_BODY_CAP + 1)
    assert (sink.length, sink.stop_after, sink.close_after) == (
        ERROR_BODY_CAP + 1,
        ERROR_BODY_CAP,
        True,
    )
    sink = plan.on_head(404, {}, ERROR_BODY_CAP)
    assert (sink.length, sink.stop_after, sink.close_after) == (
        ERROR_BODY_CAP,
        ERROR_BODY_CAP,
        False,
    )


def test_a_sized_request_body_is_framed() -> None:
    sink = RequestPlan("PUT", "PUT", 10).on_head(200, {}, 7)
    assert (sink.length, sink.stop_after, sink.close_after, sink.cap) == (7, 7, False, None)


def test_a_short_request_body_is_what_arrived() -> None:
    plan = RequestPlan("PUT", "PUT", max_body=100)
    response = _deliver(plan, 200, {}, OBJECT[:4], length=10)
    assert bytes(response.body) == OBJECT[:4]


def test_sink_buffers_never_cross_a_region() -> None:
    sink = Sink(length=30, skip=5, keep=10, stop_after=20)
    assert len(sink.buffer()) == 5  # the skipped bytes
    sink.advance(3)
    assert len(sink.buffer()) == 2
    sink.advance(2)
    assert len(sink.buffer()) == 10  # the kept bytes, allocated on demand
    sink.advance(4)
    assert len(sink.buffer()) == 6
    sink.advance(6)
    assert len(sink.buffer()) == 5  # the rest, up to stop_after only
    assert not sink.done
    sink.advance(5)
    assert sink.done
    assert sink.close_after
    huge = Sink(length=1 << 20, skip=1 << 19, keep=1)
    assert len(huge.buffer()) == 64 * 1024  # the discard buffer's size


def test_a_sink_with_a_destination_fills_it_in_place() -> None:
    dest = memoryview(bytearray(6))
    sink = Sink(length=10, dest=dest, skip=2, keep=6)
    sink.feed(b"ab0123")
    sink.feed(b"45cd")
    assert sink.done
    assert sink.kept() is dest
    assert bytes(dest) == b"012345"
    assert not sink.close_after


def test_a_sink_that_wants_no_body_takes_nothing() -> None:
    sink = Sink(length=0, stop_after=0)
    sink.feed(b"HTTP/1.1 200 OK")  # bytes of whatever follows are not this body's
    assert (sink.pos, sink.kept()) == (0, b"")


def test_sink_kept_before_any_byte() -> None:
    assert Sink(length=4, keep=4).kept() == b""
    assert Sink(length=None).kept() == bytearray()
    assert not Sink(length=None).done


def test_base_plan_is_abstract() -> None:
    plan = BodyPlan("x", "GET")
    with pytest.raises(NotImplementedError):
        plan.on_head(200, {}, 0)
    with pytest.raises(NotImplementedError):
        plan.finish(200, {}, Sink(length=0))


# --- PlannedTransport: the plan and the deadline size each request gets --------------------


class _Recording(PlannedTransport):
    """Records what ``_send`` is handed, and answers through the plan like the mock does."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, type, str, int]] = []

    async def _send(self, request: Request, plan: BodyPlan, what: str, size: int) -> Response:
        self.sent.append((request.method, type(plan), what, size))
        sink = plan.on_head(200, {}, 3)
        sink.feed(b"abc")
        return plan.finish(200, {}, sink)

    async def aclose(self) -> None:
        pass

    @property
    def closed(self) -> bool:
        return False


async def test_planned_transport_hands_each_request_its_plan_and_size() -> None:
    transport = _Recording()
    put = await transport.request(Request("PUT", "/k", {"host": "h"}, b"12345"), what="put")
    assert bytes(put.body) == b"abc"
    await transport.request(Request("GET", "/list", {"host": "h"}), what="list", max_body=9)
    whole = await transport.read(Request("GET", "/k", {"host": "h"}), None, what="get")
    assert bytes(whole.body) == b"abc"
    await transport.read(Request("GET", "/k", {"host": "h"}), RangeByteRequest(0, 3), what="ranged")
    into = memoryview(bytearray(7))
    await transport.read(Request("GET", "/k", {"host": "h"}), None, what="into", into=into)
    await transport.read(Request("GET", "/k", {"host": "h"}), OffsetByteRequest(1), what="open")
    assert transport.sent == [
        ("PUT", RequestPlan, "put", 5),  # a body: its size scales the deadline
        ("GET", RequestPlan, "list", 0),
        ("GET", ReadPlan, "get", 0),  # the size is learnt from the head
        ("GET", ReadPlan, "ranged", 3),
        ("GET", ReadPlan, "into", 7),  # the caller's buffer says how much is expected
        ("GET", ReadPlan, "open", 0),
    ]


async def test_planned_transport_caps_non_read_bodies_at_max_body() -> None:
    class Big(_Recording):
        async def _send(self, request: Request, plan: BodyPlan, what: str, size: int) -> Response:
            plan.on_head(200, {}, 100)
            raise AssertionError("a 100-byte body must be refused when max_body is 9")

    with pytest.raises(ResponseIntegrityError, match="9 bytes"):
        await Big().request(Request("GET", "/x", {"host": "h"}), what="x", max_body=9)
