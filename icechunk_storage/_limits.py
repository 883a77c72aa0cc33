"""One limit on backend requests in flight, shared by every storage in the process.

Every backend request (one attempt of one HTTP request, one file read) takes a slot; a
logical read split into 18 parts takes 18 slots, one at a time each, so the limit counts real
requests and nesting can never deadlock. asyncio primitives belong to one loop, so each
running loop gets its own semaphore of the same size: zarr's I/O thread and a user's loop
are each limited, not limited together.
"""

from __future__ import annotations

import asyncio

from ._errors import ConfigurationError
from ._loops import LoopLocal

__all__ = [
    "DEFAULT_MAX_CONCURRENT_REQUESTS",
    "get_max_concurrent_requests",
    "request_slots",
    "set_max_concurrent_requests",
]

DEFAULT_MAX_CONCURRENT_REQUESTS = 256

_limit = DEFAULT_MAX_CONCURRENT_REQUESTS
_semaphores: LoopLocal[asyncio.Semaphore] = LoopLocal(lambda: asyncio.Semaphore(_limit))


def set_max_concurrent_requests(limit: int) -> None:
    """Set the process-wide limit on backend requests in flight (default 256).

    Takes effect for loops that have not made a request yet, and for every loop at once if
    called before the first request.
    """
    global _limit
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigurationError(f"max_concurrent_requests must be an int >= 1, got {limit!r}.")
    _limit = limit
    _semaphores.clear()


def get_max_concurrent_requests() -> int:
    return _limit


def request_slots() -> asyncio.Semaphore:
    """The running loop's semaphore; ``async with request_slots():`` around one request."""
    return _semaphores.get()
