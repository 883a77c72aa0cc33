"""The one sync bridge: run a coroutine on a private event-loop thread, from sync code.

Every synchronous form in the package (``Repository.create``, ``session.commit``, the Zarr
adapter's sync calls ...) is a one-line ``sync(self.x_async(...), name="Class.x")``, after
``zarr/core/sync.py``:

* one background loop thread per process, created lazily under a lock on first use (importing
  the package starts nothing), and forgotten in a forked child (``_forks.forget_after_fork``), which
  builds its own on first use; at interpreter exit the loop finalizes its async generators
  (so storages close the connection pools they hold for it) and stops;
* ``sync()`` runs the coroutine there and returns its result, or re-raises its exception, in
  the caller's thread; if the caller is interrupted, the coroutine is cancelled;
* called while an event loop is running in the caller's thread (a coroutine, a Jupyter cell,
  the bridge loop itself) it refuses with :class:`SyncError` naming the async form, instead of
  blocking that loop or deadlocking.

Live clients are per event loop (``_loops.LoopLocal``), so objects used through the bridge and
through the caller's own loop never share a connection pool.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from ._errors import StorageError
from ._forks import forget_after_fork

__all__ = ["SyncError", "get_loop", "sync"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_EXIT_TIMEOUT = 5.0


class SyncError(StorageError, RuntimeError):
    """A synchronous form was called where it cannot block: inside a running event loop."""


def get_loop() -> asyncio.AbstractEventLoop:
    """The bridge's event loop, started on first use in this process."""
    global _loop, _thread
    loop = _loop
    if loop is not None:
        return loop
    with _lock:
        if _loop is None:
            new_loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=new_loop.run_forever, name="icechunk_storage-sync", daemon=True
            )
            thread.start()
            _loop, _thread = new_loop, thread
            atexit.register(_shutdown, new_loop, thread)
        return _loop


def _shutdown(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    """At exit: let the loop finalize its async generators (which is how storages close the
    connection pools they hold for it), then stop it."""
    if loop is not _loop or not loop.is_running():
        return  # a forked child's copy, or already stopped
    with contextlib.suppress(Exception):  # best effort at interpreter exit
        asyncio.run_coroutine_threadsafe(loop.shutdown_asyncgens(), loop).result(_EXIT_TIMEOUT)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(_EXIT_TIMEOUT)


def _forget_after_fork() -> None:
    """In a forked child the loop thread does not exist: start afresh on first use."""
    global _loop, _thread, _lock
    _loop, _thread, _lock = None, None, threading.Lock()


forget_after_fork(_forget_after_fork)


def sync(
    coroutine: Coroutine[Any, Any, T],
    *,
    name: str | None = None,
    async_name: str | None = None,
) -> T:
    """Run ``coroutine`` on the bridge loop and return its result in the calling thread.

    ``name`` is the sync form's name for the error message (``"Repository.create"``);
    ``async_name`` defaults to ``name + "_async"``.

    Raises SyncError if an event loop is running in this thread; otherwise whatever the
    coroutine raises.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        coroutine.close()  # never started: close it so no "was never awaited" warning
        raise SyncError(_in_loop_message(name, async_name))
    future = asyncio.run_coroutine_threadsafe(coroutine, get_loop())
    try:
        return future.result()
    except BaseException:
        future.cancel()  # e.g. KeyboardInterrupt in the caller: stop the work too
        raise


def _in_loop_message(name: str | None, async_name: str | None) -> str:
    if name is None:
        return (
            "A synchronous icechunk_storage call was made from a running event loop, where it "
            "would block the loop; await the matching `..._async` method instead."
        )
    async_name = async_name or f"{name}_async"
    return (
        f"{name}() was called from a running event loop, where it would block the loop; "
        f"use `await {async_name}(...)` instead."
    )
