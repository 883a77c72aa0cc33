"""The rules every response must meet, written once for every transport.

A transport parses the response head, then asks a plan what to do with the body:
:meth:`BodyPlan.on_head` checks the head against the request and returns a :class:`Sink`
that says where each body byte goes; when the body ends, :meth:`BodyPlan.finish` checks
what arrived and builds the :class:`Response`. The lean transport writes into
``Sink.buffer()`` straight from the socket; the others ``Sink.feed`` what they read.

Rules for reads (:class:`ReadPlan`):

* a 206 must carry a ``Content-Range`` whose first and last byte are the range asked for
  (or its truncation at the object's end), and whose length agrees with Content-Length;
  a 206 to a request without Range, or without Content-Range, is an error;
* a 200 to a ranged request is the whole object: the range is cut out of it (the bytes
  outside are dropped as they arrive, never buffered), and the connection is closed rather
  than drained when more than :data:`DISCARD_LIMIT` bytes would follow;
* no body buffer is larger than what was asked for: a 206 or a sliced 200 fills a buffer of
  the range's size; the whole-object size a server announces is allocated lazily;
* error bodies are read up to :data:`ERROR_BODY_CAP`, then the connection is dropped.

Every failed rule raises :class:`ResponseIntegrityError` (transient: retried within the
budget), naming what was asked for and what arrived.
"""

from __future__ import annotations

import abc
import re
from typing import Final

from .._buffers import allocate_buffer
from .._errors import RangeNotSatisfiableError, ResponseIntegrityError
from .._ranges import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    SuffixByteRequest,
    resolve_range,
)
from ._model import DISCARD_LIMIT, ERROR_BODY_CAP, Request, Response

__all__ = ["BodyPlan", "PlannedTransport", "ReadPlan", "RequestPlan", "Sink", "describe_range"]

NO_BODY_STATUSES: Final = frozenset({204, 304})
_CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19}|\*)\Z")
_DISCARD = memoryview(bytearray(64 * 1024))  # bytes nobody asked for land here


def describe_range(byte_range: ByteRequest | None) -> str:
    """The range as an HTTP Range value, for messages."""
    if byte_range is None:
        return "the whole object"
    if isinstance(byte_range, RangeByteRequest):
        return f"bytes={byte_range.start}-{byte_range.end - 1}"
    if isinstance(byte_range, OffsetByteRequest):
        return f"bytes={byte_range.offset}-"
    assert isinstance(byte_range, SuffixByteRequest)
    return f"bytes=-{byte_range.suffix}"


class Sink:
    """Where one body's bytes go.

    With a known ``length`` (Content-Length), the body is three regions: ``skip`` bytes to
    drop, ``keep`` bytes into ``dest``, the rest to drop; ``stop_after`` ends the body early
    (the transport then closes the connection). With an unknown length (chunked, until
    close), bytes accumulate into a bytearray of at most ``cap`` bytes.
    """

    __slots__ = (
        "_dest",
        "_grow",
        "_keep",
        "_skip",
        "_whole",
        "cap",
        "close_after",
        "length",
        "overflowed",
        "pos",
        "stop_after",
    )

    def __init__(
        self,
        *,
        length: int | None,
        dest: memoryview | None = None,
        skip: int = 0,
        keep: int = 0,
        stop_after: int | None = None,
        cap: int | None = None,
    ) -> None:
        self.length = length
        self._dest = dest
        self._skip = skip
        self._keep = keep
        self.pos = 0
        self.stop_after = length if stop_after is None else stop_after
        self.close_after = (
            self.stop_after is not None and length is not None and (self.stop_after < length)
        )
        self._grow: bytearray | None = bytearray() if length is None else None
        self._whole: bytes | None = None  # the kept bytes, when they came in one piece
        self.cap = cap
        self.overflowed = False

    @property
    def done(self) -> bool:
        """No more bytes are wanted (the whole body, or all we keep of it, has arrived)."""
        if self.stop_after is not None:
            return self.pos >= self.stop_after
        return self.overflowed

    def buffer(self) -> memoryview:
        """Room for the next bytes (known length only): never past the body's end."""
        pos = self.pos
        assert self.stop_after is not None
        left = self.stop_after - pos
        keep_start = self._skip
        keep_end = keep_start + self._keep
        if keep_start <= pos < keep_end:
            if self._dest is None:
                self._dest = allocate_buffer(self._keep)
            offset = pos - keep_start
            room = min(keep_end - pos, left)
            if room == len(self._dest) - offset:
                return self._dest[offset:] if offset else self._dest
            return self._dest[offset : offset + room]
        limit = keep_start - pos if pos < keep_start else left
        return _DISCARD[: min(limit, left, len(_DISCARD))]

    def advance(self, count: int) -> None:
        """``count`` bytes were written into the last :meth:`buffer`."""
        self.pos += count

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` (the next body bytes) where it belongs."""
        if self._grow is not None:
            grow = self._grow
            room = len(data) if self.cap is None else self.cap - len(grow)
            if len(data) > room:
                grow += data[:room]
                self.pos += room
                self.overflowed = True
                return
            grow += data
            self.pos += len(data)
            return
        view = memoryview(data)
        if self._dest is None and self.pos == self._skip == 0 and len(view) >= self._keep > 0:
            self._whole = bytes(view[: self._keep])  # all of it at once: one copy, no buffer
            view = view[self._keep :]
            self.pos = self._keep
        while view and not self.done:
            target = self.buffer()
            count = min(len(target), len(view))
            if target.obj is not _DISCARD.obj:
                target[:count] = view[:count]
            view = view[count:]
            self.pos += count

    def kept(self) -> bytes | bytearray | memoryview:
        """What was kept: the accumulated bytes, or the destination (when no ``into``)."""
        if self._grow is not None:
            return self._grow
        if self._whole is not None:
            return self._whole
        if self._dest is None:
            return b""
        return self._dest


class BodyPlan:
    """What a response to one request may be, and where its body goes."""

    __slots__ = ("method", "what")

    def __init__(self, what: str, method: str) -> None:
        self.what = what
        self.method = method

    def on_head(self, status: int, headers: dict[str, str], length: int | None) -> Sink:
        """Check the head; ``length`` is the framed body length (None: chunked or until
        close). Raises :class:`ResponseIntegrityError` when the head breaks a rule."""
        raise NotImplementedError

    def finish(self, status: int, headers: dict[str, str], sink: Sink) -> Response:
        """The body ended: check it and build the response."""
        raise NotImplementedError

    def _error_sink(self, length: int | None) -> Sink:
        if length is None:
            return Sink(length=None, cap=ERROR_BODY_CAP)
        keep = min(length, ERROR_BODY_CAP)
        return Sink(length=length, dest=memoryview(bytearray(keep)), keep=keep, stop_after=keep)

    def _fail(self, message: str) -> ResponseIntegrityError:
        return ResponseIntegrityError(f"{self.what}: {message}")


def _no_body(method: str, status: int) -> bool:
    return method == "HEAD" or status in NO_BODY_STATUSES or 100 <= status < 200


class RequestPlan(BodyPlan):
    """Any request but an object read: 2xx bodies up to ``max_body``, errors capped."""

    __slots__ = ("max_body",)

    def __init__(self, what: str, method: str, max_body: int) -> None:
        super().__init__(what, method)
        self.max_body = max_body

    def on_head(self, status: int, headers: dict[str, str], length: int | None) -> Sink:
        if _no_body(self.method, status):
            return Sink(length=0, stop_after=0)
        if not 200 <= status < 300:
            return self._error_sink(length)
        if length is None:
            return Sink(length=None, cap=self.max_body)
        if length > self.max_body:
            raise self._fail(
                f"the server announced a {length}-byte response, more than the "
                f"{self.max_body} bytes this request may return."
            )
        return Sink(length=length, keep=length)

    def finish(self, status: int, headers: dict[str, str], sink: Sink) -> Response:
        if sink.overflowed and 200 <= status < 300:
            raise self._fail(f"the response is larger than {self.max_body} bytes.")
        return Response(status, headers, _kept_bytes(sink))


def _kept_bytes(sink: Sink) -> bytes | bytearray | memoryview:
    """The body of a plain (non-read) response: what the sink kept, cut to what arrived."""
    if not sink.pos:
        return b""
    body = sink.kept()
    return body if len(body) == sink.pos else body[: sink.pos]


class ReadPlan(BodyPlan):
    """An object GET for ``byte_range`` (None: the whole object), into ``into`` if given."""

    __slots__ = ("_span", "_total", "byte_range", "into")

    def __init__(
        self,
        what: str,
        byte_range: ByteRequest | None,
        into: memoryview | None,
        method: str = "GET",
    ) -> None:
        super().__init__(what, method)
        self.byte_range = byte_range
        self.into = into
        self._total: int | None = None
        self._span = 0  # bytes that must be kept

    def _asked(self) -> str:
        return describe_range(self.byte_range)

    def _dest(self, size: int) -> memoryview | None:
        """The caller's buffer cut to ``size``; None: the sink allocates when bytes come."""
        into = self.into
        if into is None:
            return None
        if size > len(into):
            raise self._fail(
                f"asked for {self._asked()}, the response carries {size} bytes, more than the "
                f"{len(into)} bytes asked for."
            )
        return into if size == len(into) else into[:size]

    def on_head(self, status: int, headers: dict[str, str], length: int | None) -> Sink:
        if status == 206:
            return self._partial(headers, length)
        if status == 200:
            return self._whole(length)
        if _no_body(self.method, status):
            return Sink(length=0, stop_after=0)
        return self._error_sink(length)

    def _partial(self, headers: dict[str, str], length: int | None) -> Sink:
        asked = self._asked()
        if self.byte_range is None:
            raise self._fail(
                "the server sent a partial response (206) to a request for the whole object."
            )
        value = headers.get("content-range")
        if value is None:
            raise self._fail(f"asked for {asked}, got a 206 without a Content-Range header.")
        match = _CONTENT_RANGE.match(value.strip())
        if match is None:
            raise self._fail(f"asked for {asked}, got a malformed Content-Range {value[:80]!r}.")
        first, last = int(match.group(1)), int(match.group(2))
        total = None if match.group(3) == "*" else int(match.group(3))
        if last < first or (total is not None and last >= total):
            raise self._fail(f"asked for {asked}, got an impossible Content-Range {value!r}.")
        expected = self._expected_span(total)
        if expected is None or expected != (first, last):
            want = f"bytes {expected[0]}-{expected[1]}" if expected else asked
            raise self._fail(
                f"asked for {asked}, the server answered with Content-Range {value!r} "
                f"(expected {want}{'/' + str(total) if total is not None else ''})."
            )
        span = last - first + 1
        if length is not None and length != span:
            raise self._fail(
                f"asked for {asked}, the Content-Range {value!r} covers {span} bytes but "
                f"Content-Length is {length}."
            )
        self._total, self._span = total, span
        if length is None:  # chunked: one byte of room to notice a longer body
            return Sink(length=None, cap=span + 1)
        return Sink(length=length, dest=self._dest(span), keep=span)

    def _expected_span(self, total: int | None) -> tuple[int, int] | None:
        """(first, last) a correct 206 carries; None when it cannot be checked."""
        byte_range = self.byte_range
        if isinstance(byte_range, RangeByteRequest):
            if total is None:
                return byte_range.start, byte_range.end - 1
            return byte_range.start, min(byte_range.end, total) - 1
        if total is None:
            return None  # an open or suffix range needs the total to be checked
        if isinstance(byte_range, OffsetByteRequest):
            return byte_range.offset, total - 1
        assert isinstance(byte_range, SuffixByteRequest)
        return max(total - byte_range.suffix, 0), total - 1

    def _whole(self, length: int | None) -> Sink:
        """A 200: the whole object, sliced to the range asked for (if any)."""
        if length is None:
            cap = None
            if isinstance(self.byte_range, RangeByteRequest):
                cap = self.byte_range.end + DISCARD_LIMIT
            return Sink(length=None, cap=cap)
        try:
            start, end = resolve_range(self.byte_range, length)
        except RangeNotSatisfiableError:
            raise  # the object is shorter than the range's start: the contract's error
        self._total, self._span = length, end - start
        stop = None
        if length - end > DISCARD_LIMIT:
            stop = end  # do not drain the rest: close the connection instead
        return Sink(
            length=length,
            dest=self._dest(end - start),
            skip=start,
            keep=end - start,
            stop_after=stop,
        )

    def finish(self, status: int, headers: dict[str, str], sink: Sink) -> Response:
        if status not in (200, 206):
            return Response(status, headers, _kept_bytes(sink))
        if sink.length is None:
            return self._finish_unframed(status, headers, sink)
        if status == 206 and sink.pos != self._span:
            raise self._fail(
                f"asked for {self._asked()}, got {sink.pos} of the {self._span} bytes announced."
            )
        return self._result(status, headers, sink.kept())

    def _finish_unframed(self, status: int, headers: dict[str, str], sink: Sink) -> Response:
        body = sink.kept()
        if status == 206:
            if sink.pos != self._span:
                raise self._fail(
                    f"asked for {self._asked()}, got {sink.pos} bytes for a Content-Range of "
                    f"{self._span}."
                )
            dest = self._dest(self._span)
            if dest is None:
                return self._result(status, headers, body)
            dest[:] = body
            return self._result(status, headers, dest)
        if sink.overflowed:
            raise self._fail(
                f"asked for {self._asked()}, the server ignored the range and sent an unsized "
                f"body longer than {sink.cap} bytes."
            )
        start, end = resolve_range(self.byte_range, len(body))
        self._total, self._span = len(body), end - start
        dest = self._dest(end - start)
        if dest is None:
            whole = start == 0 and end == len(body)
            return self._result(status, headers, body if whole else memoryview(body)[start:end])
        dest[:] = memoryview(body)[start:end]
        return self._result(status, headers, dest)

    def _result(
        self, status: int, headers: dict[str, str], kept: bytes | bytearray | memoryview
    ) -> Response:
        if self.into is not None:
            return Response(status, headers, b"", written=self._span, total=self._total)
        return Response(status, headers, kept, total=self._total)


class PlannedTransport(abc.ABC):
    """The Transport methods, written once: each builds its plan and the size its deadline
    scales with, and hands both to the implementation's ``_send``."""

    async def request(
        self, request: Request, *, what: str, max_body: int = 64 * 1024 * 1024
    ) -> Response:
        plan = RequestPlan(what, request.method, max_body)
        size = len(request.body) if request.body is not None else 0
        return await self._send(request, plan, what, size)

    async def read(
        self,
        request: Request,
        byte_range: ByteRequest | None,
        *,
        what: str,
        into: memoryview | None = None,
    ) -> Response:
        plan = ReadPlan(what, byte_range, into, request.method)
        if into is not None:
            size = len(into)
        else:  # an open range's size is known when the head arrives: the deadline grows then
            size = byte_range.length if isinstance(byte_range, RangeByteRequest) else 0
        return await self._send(request, plan, what, size)

    @abc.abstractmethod
    async def _send(self, request: Request, plan: BodyPlan, what: str, size: int) -> Response:
        """Send ``request`` and read its response through ``plan``."""
