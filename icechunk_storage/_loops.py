"""State that belongs to one event loop in one process: clients, sessions, semaphores.

aiohttp sessions and asyncio primitives bind to the loop they first run on, and nothing
survives a fork. ``LoopLocal`` hands out one value per running loop, rebuilt lazily, and
forgets everything after a fork (a pid change) so a child never reuses its parent's sockets.

Live clients close themselves from a suspended async generator when their loop shuts its
async generators down (``asyncio.run`` does). A loop running in another thread may instead be
stopped and closed at exit without that step: zarr's ``zarr_io`` loop is (its atexit
``cleanup_resources``), leaving an aiohttp session for the garbage collector to complain
about ("Unclosed client session"). :func:`shut_down_at_exit` covers those loops.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

from ._forks import _Forgets, forget_after_fork

__all__ = ["LoopLocal", "shut_down_at_exit"]

T = TypeVar("T")


class LoopLocal(_Forgets, Generic[T]):
    """One ``factory()`` value per running event loop, per process (``_forks`` empties it in
    a forked child)."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._values: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        forget_after_fork(self)

    def get(self) -> T:
        """The value for the running loop; must be called from inside a coroutine."""
        loop = asyncio.get_running_loop()
        try:
            return self._values[loop]
        except KeyError:
            with self._lock:
                if loop not in self._values:
                    self._values[loop] = self._factory()
                return self._values[loop]

    def peek(self) -> T | None:
        """The value for the running loop if one was built, without building it."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        return self._values.get(loop)

    def pop(self) -> T | None:
        """Remove and return the running loop's value (for closing it)."""
        value = self.peek()
        if value is not None:
            self._values.pop(asyncio.get_running_loop(), None)
        return value

    def items(self) -> list[tuple[asyncio.AbstractEventLoop, T]]:
        return list(self._values.items())

    def clear(self) -> None:
        self._values = weakref.WeakKeyDictionary()

    def _forget_after_fork(self) -> None:
        self._values = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()


_EXIT_TIMEOUT = 5.0
_exit_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
_exit_lock = threading.Lock()


def shut_down_at_exit(loop: asyncio.AbstractEventLoop) -> None:
    """At interpreter exit, if ``loop`` still runs in another thread, let it finalize its
    async generators (closing the clients they guard) before anything stops it.

    Registered on first use, after zarr registered its own handler: atexit runs handlers in
    reverse order, so this one runs while zarr's loop still runs.
    """
    with _exit_lock:
        if loop in _exit_loops:
            return
        _exit_loops.add(loop)
        atexit.register(_shut_down, weakref.ref(loop), os.getpid())


def _shut_down(loop_ref: weakref.ReferenceType[asyncio.AbstractEventLoop], pid: int) -> None:
    loop = loop_ref()
    if loop is None or pid != os.getpid() or loop.is_closed() or not loop.is_running():
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return  # at exit inside a running loop (cannot wait for another loop here)
    with contextlib.suppress(Exception):  # best effort at interpreter exit
        future = asyncio.run_coroutine_threadsafe(loop.shutdown_asyncgens(), loop)
        future.result(_EXIT_TIMEOUT)
