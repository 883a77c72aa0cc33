"""What a forked child forgets: the one place where process-local state is reset after
``fork``.

Sockets, threads, locks and event loops do not survive a fork: a child that reused its
parent's connection pool would interleave bytes on the parent's sockets, and a lock held by
a parent thread at fork time would never be released. Every module that keeps such state
registers a function here; after a fork, the child runs them all, in registration order,
before it runs any code of ours. Objects (per-storage ``LoopLocal`` values) register weakly,
so registering never keeps one alive.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable

__all__ = ["forget_after_fork"]

_functions: list[Callable[[], None]] = []
_methods: weakref.WeakSet[_Forgets] = weakref.WeakSet()
_lock = threading.Lock()


class _Forgets:
    """An object with a ``_forget_after_fork()`` method."""

    def _forget_after_fork(self) -> None:  # pragma: no cover - protocol
        raise NotImplementedError


def forget_after_fork(target: Callable[[], None] | _Forgets) -> None:
    """Run ``target()`` (a module-level function) or ``target._forget_after_fork()`` (an
    object, held weakly) in the child after every fork."""
    with _lock:
        if callable(target) and not isinstance(target, _Forgets):
            _functions.append(target)
        else:
            _methods.add(target)


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # the parent may have held it at fork time
    for function in list(_functions):
        function()
    for item in list(_methods):
        item._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
