"""Random bytes for ids, read from the OS in batches.

Every ``os.urandom`` call is a system call that releases the GIL; where threads are busy (a
local store's file writes) getting it back cost ~50 us per id, and even on an idle loop a
``uuid.uuid4()`` per conditional write is a measurable part of its client CPU. Ids draw
from a per-process batch instead; each byte is handed out once (a lock), and a forked child
drops its parent's batch so parent and child never hand out the same id.
"""

from __future__ import annotations

import os
import threading

from ._forks import forget_after_fork

__all__ = ["random_bytes", "random_hex"]

_BATCH = 4096
_lock = threading.Lock()
_pool = b""
_used = 0


def _forget() -> None:
    global _lock, _pool, _used
    _lock, _pool, _used = threading.Lock(), b"", 0


forget_after_fork(_forget)


def random_bytes(count: int) -> bytes:
    """``count`` (at most 4,096) bytes from the OS's random source, never handed out twice."""
    global _pool, _used
    if not 0 < count <= _BATCH:
        raise ValueError(f"count must be between 1 and {_BATCH}, not {count}")
    with _lock:
        start = _used
        if start + count > len(_pool):
            _pool, start = os.urandom(_BATCH), 0
        _used = start + count
        return _pool[start : start + count]


def random_hex(count: int) -> str:
    """``count`` random bytes as ``2 * count`` lowercase hex digits (a 16-byte one is as
    unique as a ``uuid4().hex``, with 6 more random bits)."""
    return random_bytes(count).hex()
