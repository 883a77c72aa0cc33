"""State that belongs to one event loop in one process: clients, sessions, semaphores.

aiohttp sessions and asyncio primitives bind to the loop they first run on, and nothing
survives a fork. ``LoopLocal`` hands out one value per running loop, rebuilt lazily, and
forgets everything after a fork (a pid change) so a child never reuses its parent's sockets.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["LoopLocal"]

T = TypeVar("T")


class LoopLocal(Generic[T]):
    """One ``factory()`` value per running event loop, per process."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._values: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def get(self) -> T:
        """The value for the running loop; must be called from inside a coroutine."""
        loop = asyncio.get_running_loop()
        if self._pid != os.getpid():
            self._forget_after_fork()
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
        if self._pid != os.getpid():
            self._forget_after_fork()
        return self._values.get(loop)

    def pop(self) -> T | None:
        """Remove and return the running loop's value (for closing it)."""
        value = self.peek()
        if value is not None:
            self._values.pop(asyncio.get_running_loop(), None)
        return value

    def items(self) -> list[tuple[asyncio.AbstractEventLoop, T]]:
        if self._pid != os.getpid():
            self._forget_after_fork()
        return list(self._values.items())

    def clear(self) -> None:
        self._values = weakref.WeakKeyDictionary()

    def _forget_after_fork(self) -> None:
        self._values = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._pid = os.getpid()
