"""``MockTransport``: scripted responses without sockets, for tests of what providers do
with a given response. The body goes through the same integrity plans as on the wire, so
a scripted response is judged exactly as a real one would be."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from .._errors import ConnectionLostError
from ._integrity import BodyPlan, PlannedTransport
from ._model import Request, Response

__all__ = ["MockResponse", "MockTransport"]


class MockResponse:
    """What the scripted server answers. ``length`` is the framed length (-1, the default:
    the body's); a body shorter than it is a connection cut short; None: chunked."""

    __slots__ = ("body", "headers", "length", "status")

    def __init__(
        self,
        status: int,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        *,
        length: int | None = -1,
    ) -> None:
        self.status = status
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}
        self.body = body
        self.length = len(body) if length == -1 else length


Handler = Callable[[Request], MockResponse | Awaitable[MockResponse]]


class MockTransport(PlannedTransport):
    """Calls ``handler(request)`` for every request; records the requests in ``requests``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []

    async def _send(self, request: Request, plan: BodyPlan, what: str, size: int) -> Response:
        self.requests.append(request)
        answer = self.handler(request)
        if inspect.isawaitable(answer):
            answer = await answer
        assert isinstance(answer, MockResponse)
        length = answer.length
        if request.method == "HEAD" or answer.status in (204, 304):
            length = 0
        sink = plan.on_head(answer.status, dict(answer.headers), length)
        body = answer.body if length is None else answer.body[:length]
        sink.feed(body)
        if length is not None and sink.pos < (sink.stop_after or 0):
            raise ConnectionLostError(
                f"{plan.what} failed: the body was cut short after {sink.pos} of {length} bytes."
            )
        return plan.finish(answer.status, dict(answer.headers), sink)

    closed = False

    async def aclose(self) -> None:
        self.closed = True
