"""The credential refresher: one per process, shared by every storage that uses a callback.

Why it exists: long jobs outlive short-lived credentials, and a cache per storage (or per
unpickled copy) makes one callback call per dask task. Here every ``Refreshable`` with the
same ``pickled_function`` shares one cache entry in the process, whatever storage, event loop
or thread asks for it.

How a credential is kept fresh (decided by the pure :func:`decide`, over :func:`schedule`):

* A fetched credential gets a *refresh point*, a jittered few minutes before expiry (180-300
  s, at most a tenth of its lifetime, so a 2 s credential refreshes after 1.8 s: about one
  call per lifetime), and a *must refresh point*, a safety margin before expiry (30 s, at
  most a twentieth of its lifetime).
* ``get()`` before the refresh point returns the cached credential (no lock, no await).
  Between the two points it still returns it at once and starts a background refresh, so a
  request only waits when the credential is (nearly) expired. Past the must-refresh point,
  or with nothing cached, it waits for a refresh.
* Single flight: at most one refresh per entry is in flight; everyone needing one awaits it.
* A failed background refresh leaves the cached credential in use and is retried with
  exponential backoff (1 s doubling to 60 s, jittered). A failed refresh that someone waits
  on raises :class:`CredentialsRefreshError` chaining the callback's exception; a callback
  returning the wrong type raises ``TypeError`` naming the expected type.
* ``expires_after=None`` never expires: no further calls.
* Refreshes are driven by ``get()``, not by timers (as in botocore and gcloud-aio): an idle
  storage costs no calls, and its next request waits only if the credential expired while
  it was idle.
* A credential the waiters just fetched is returned even if it is already (nearly) expired:
  it is the newest there is; the next ``get()`` calls again (as Icechunk does).

Threads and loops: refreshes run on one private event-loop thread per refresher, started on
the first refresh. Waiters on any loop (a user's loop, zarr's I/O thread, a dask worker) await
the same ``concurrent.futures.Future`` through ``asyncio.wrap_future``; the cache itself is
guarded by a ``threading.Lock`` per entry. A refresh therefore survives the loop that asked
for it closing (``asyncio.run`` per call), and ``async def`` callbacks run on the private loop
(so they must not use objects bound to the caller's loop). Sync callbacks run in a worker
thread, never on any event loop. Each call is limited to ``timeout`` seconds.

Lifetime: a :class:`CredentialHandle` holds a lease on its entry; when the last lease goes
(``aclose()``, or the handle is garbage-collected) the in-flight refresh is cancelled. The
entry keeps its credential and statistics, so the next storage unpickled in this process
(the next dask task) reuses them instead of calling again; entries are never dropped (one
small entry per distinct callback per process). After ``fork`` the child forgets
the private loop, the worker threads, the locks and any in-flight refresh
(``_forks.forget_after_fork``), keeps the cached credentials, and starts its own thread on demand.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import inspect
import logging
import pickle
import random
import threading
import weakref
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, cast

import attrs

from ._credentials import C, RefreshableCredentials, callable_name, type_name
from ._errors import ConfigurationError, CredentialsRefreshError
from ._forks import forget_after_fork
from ._redact import remember_secrets_of

__all__ = [
    "CredentialHandle",
    "Decision",
    "RefreshStats",
    "Refresher",
    "Scheduled",
    "backoff_delay",
    "credential_handle",
    "decide",
    "default_refresher",
    "refresh_stats",
    "schedule",
]

logger = logging.getLogger("icechunk_storage.credentials")

DEFAULT_REFRESH_MARGIN = (180.0, 300.0)
"""Seconds before expiry at which a background refresh starts: uniform in this range."""
DEFAULT_SAFETY_MARGIN = 30.0
"""Seconds before expiry after which a credential is no longer handed out without a refresh."""
DEFAULT_BACKOFF = (1.0, 60.0)
"""First and largest delay, in seconds, between failed background refreshes."""
DEFAULT_TIMEOUT = 120.0
"""Seconds one callback call may take before it counts as failed."""

_MAX_ERROR_TEXT = 300


# --- the decision, free of I/O -------------------------------------------------------------


class Decision(enum.Enum):
    USE = "use the cached credential"
    REFRESH_IN_BACKGROUND = "use the cached credential and refresh in the background"
    REFRESH_NOW = "wait for a refresh"


@attrs.frozen
class Scheduled(Generic[C]):
    """A cached credential and when to refresh it (None: never)."""

    credential: C
    refresh_at: datetime | None
    must_refresh_at: datetime | None


def schedule(credential: C, now: datetime, margin: float, safety: float) -> Scheduled[C]:
    """Refresh ``margin`` s before expiry, must refresh ``safety`` s before, capped at a tenth
    and a twentieth of the lifetime left at ``now``: a short-lived credential serves 90 % of
    its life before the background refresh (about one call per lifetime, never a stampede),
    and requests only wait in its last 5 %, which a refresh started at 90 % has to overrun."""
    expires = credential.expires_after
    if expires is None:
        return Scheduled(credential, None, None)
    lifetime = max(expires - now, timedelta(0))
    return Scheduled(
        credential,
        refresh_at=expires - min(timedelta(seconds=margin), lifetime / 10),
        must_refresh_at=expires - min(timedelta(seconds=safety), lifetime / 20),
    )


def decide(now: datetime, cached: Scheduled[Any] | None, retry_at: datetime | None) -> Decision:
    """What ``get()`` does at ``now``; ``retry_at`` holds background refreshes off after a
    failure (it never delays a refresh somebody has to wait for)."""
    if cached is None or (cached.must_refresh_at is not None and now >= cached.must_refresh_at):
        return Decision.REFRESH_NOW
    if cached.refresh_at is None or now < cached.refresh_at:
        return Decision.USE
    if retry_at is not None and now < retry_at:
        return Decision.USE
    return Decision.REFRESH_IN_BACKGROUND


def backoff_delay(failures: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Seconds to wait after ``failures`` consecutive failures: doubling, capped, jittered
    down by up to half so that many processes do not retry in step."""
    return float(min(maximum, initial * 2 ** max(failures - 1, 0)) * rng.uniform(0.5, 1.0))


# --- statistics ----------------------------------------------------------------------------


@attrs.frozen
class RefreshStats:
    """What the refresher did for one callback in this process.

    ``calls``: callback calls (failed ones too; inherited across ``fork``).
    ``last_refresh``: when the last successful call returned.
    ``last_error``: why the latest call failed, or None if it succeeded (never a secret: the
    exception's type and message, or the wrong type returned).
    """

    calls: int = 0
    last_refresh: datetime | None = None
    last_error: str | None = None


# --- the shared cache ----------------------------------------------------------------------


class _Entry(Generic[C]):
    """One callback's cache and state; every field is guarded by ``lock``."""

    def __init__(self, refreshable: RefreshableCredentials[C]) -> None:
        self.callback = refreshable.get_credentials
        self.credential_type = type(refreshable).credential_type
        self.name = callable_name(self.callback)
        self.lock = threading.Lock()
        self.cached: Scheduled[C] | None = None
        self.flight: concurrent.futures.Future[C] | None = None
        self.retry_at: datetime | None = None
        self.failures = 0
        self.leases = 0
        self.calls = 0
        self.last_refresh: datetime | None = None
        self.last_error: str | None = None

    def stats(self) -> RefreshStats:
        with self.lock:
            return RefreshStats(self.calls, self.last_refresh, self.last_error)


class _Lease:
    """A handle's claim on an entry; the last release cancels the in-flight refresh."""

    __slots__ = ("entry", "held")

    def __init__(self, entry: _Entry[Any]) -> None:
        self.entry = entry
        self.held = False

    def acquire(self) -> None:
        if self.held:
            return
        with self.entry.lock:
            if not self.held:
                self.held = True
                self.entry.leases += 1

    def release(self) -> None:
        entry = self.entry
        with entry.lock:
            if not self.held:
                return
            self.held = False
            entry.leases -= 1
            if entry.leases == 0 and entry.flight is not None:
                entry.flight.cancel()


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _is_async(fn: object) -> bool:
    """``async def`` functions, partials of them, and instances with ``async def __call__``."""
    method = getattr(type(fn), "__call__", None)  # noqa: B004 (fn is known to be callable)
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(method)


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _MAX_ERROR_TEXT else text[: _MAX_ERROR_TEXT - 3] + "..."


def _copy(exc: BaseException) -> BaseException:
    """A fresh exception per waiter (raised ``from`` the original cause), so many waiters do
    not share one exception object and its ever-growing traceback."""
    return type(exc)(*exc.args)


class Refresher:
    """Refreshes credentials for every handle it gives out. One per process is the norm
    (:func:`default_refresher`); tests make their own with a fake ``clock``."""

    def __init__(
        self,
        *,
        clock: Callable[[], datetime] = _utcnow,
        rng: random.Random | None = None,
        refresh_margin: tuple[float, float] = DEFAULT_REFRESH_MARGIN,
        safety_margin: float = DEFAULT_SAFETY_MARGIN,
        backoff: tuple[float, float] = DEFAULT_BACKOFF,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._clock = clock
        self._rng = rng or random.Random()
        self._margin = refresh_margin
        self._safety = safety_margin
        self._backoff = backoff
        self._timeout = timeout
        self._entries: dict[bytes, _Entry[Any]] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        _live.add(self)

    # --- public ----------------------------------------------------------------------------

    def handle(self, refreshable: RefreshableCredentials[C]) -> CredentialHandle[C]:
        """A handle on the shared cache for ``refreshable``'s callback. No I/O."""
        return CredentialHandle(self, self._entry(refreshable))

    def stats(self, callback: object) -> RefreshStats:
        """Statistics for a callback, or for a ``Refreshable``'s callback."""
        if isinstance(callback, RefreshableCredentials):
            key = callback.pickled_function
        else:
            try:
                key = pickle.dumps(callback)
            except Exception as exc:
                raise ConfigurationError(
                    f"{callable_name(callback)} cannot be pickled, so no refresher uses it."
                ) from exc
        with self._lock:
            entry = self._entries.get(key)
        return RefreshStats() if entry is None else entry.stats()

    def get_blocking(self, refreshable: RefreshableCredentials[C]) -> C:
        """A fresh credential for sync code (``scatter_initial_credentials``): the cached one
        if it is not due for refresh, else the result of a refresh, waited for."""
        entry = self._entry(refreshable)
        if threading.current_thread() is self._thread:
            raise RuntimeError("get_credentials callbacks cannot scatter credentials themselves.")
        while True:
            decision, cached, flight = self._next(entry, self._clock())
            if flight is None:
                assert cached is not None
                return cached.credential
            try:
                return flight.result()
            except concurrent.futures.CancelledError:
                continue
            except (CredentialsRefreshError, TypeError) as exc:
                if decision is Decision.REFRESH_IN_BACKGROUND and cached is not None:
                    return cached.credential
                raise _copy(exc) from exc.__cause__

    def active_refreshes(self) -> int:
        """Refreshes in flight now (for tests and leak checks)."""
        with self._lock:
            entries = list(self._entries.values())
        return sum(1 for e in entries if e.flight is not None and not e.flight.done())

    def close(self) -> None:
        """Cancel refreshes and stop the private loop thread (it restarts on demand)."""
        with self._lock:
            loop, thread, executor = self._loop, self._thread, self._executor
            self._loop = self._thread = self._executor = None
            entries = list(self._entries.values())
        for entry in entries:
            with entry.lock:
                if entry.flight is not None:
                    entry.flight.cancel()
        if loop is not None and thread is not None:
            asyncio.run_coroutine_threadsafe(_cancel_other_tasks(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    # --- internals -------------------------------------------------------------------------

    def _entry(self, refreshable: RefreshableCredentials[C]) -> _Entry[C]:
        if not isinstance(refreshable, RefreshableCredentials):
            raise ConfigurationError(
                "credential_handle() needs an S3Credentials.Refreshable, "
                "GcsCredentials.Refreshable or AzureCredentials.Refreshable, "
                f"got {type(refreshable).__name__}."
            )
        with self._lock:
            entry = self._entries.get(refreshable.pickled_function)
            if entry is None:
                entry = self._entries[refreshable.pickled_function] = _Entry(refreshable)
        if entry.credential_type != type(refreshable).credential_type:
            raise ConfigurationError(
                f"The callback {entry.name} is already used for "
                f"{type_name(entry.credential_type)}; one callback cannot also return "
                f"{type_name(type(refreshable).credential_type)}."
            )
        if refreshable.current is not None:
            self._offer(entry, refreshable.current)
        return entry

    def _offer(self, entry: _Entry[C], credential: C) -> None:
        """Adopt a credential carried in a pickle if it outlives the cached one."""
        new = credential.expires_after
        with entry.lock:
            if entry.cached is not None:
                old = entry.cached.credential.expires_after
                if old is None or (new is not None and new <= old):
                    return
            entry.cached = self._schedule(credential)

    def _schedule(self, credential: C) -> Scheduled[C]:
        return schedule(credential, self._clock(), self._rng.uniform(*self._margin), self._safety)

    def _next(
        self, entry: _Entry[C], now: datetime
    ) -> tuple[Decision, Scheduled[C] | None, concurrent.futures.Future[C] | None]:
        """Decide under the entry's lock, starting a refresh if one is needed and none is in
        flight, so that deciding and adopting a result never interleave."""
        with entry.lock:
            decision = decide(now, entry.cached, entry.retry_at)
            if decision is Decision.USE:
                return decision, entry.cached, None
            if entry.flight is None or entry.flight.done():
                entry.flight = asyncio.run_coroutine_threadsafe(
                    self._refresh(entry), self._private_loop()
                )
            return decision, entry.cached, entry.flight

    def _private_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="icechunk_storage-credentials", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=4, thread_name_prefix="icechunk_storage-credentials"
                )
            return self._loop

    async def _call(self, fn: Callable[[], object]) -> object:
        if _is_async(fn):
            result = fn()
        else:
            result = await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _refresh(self, entry: _Entry[C]) -> C:
        """One callback call, on the private loop; records the outcome in the entry."""
        with entry.lock:
            entry.calls += 1
        task = asyncio.ensure_future(self._call(entry.callback))
        try:
            done, _ = await asyncio.wait({task}, timeout=self._timeout)
        finally:
            if not task.done():
                task.cancel()
        if not done:
            error = f"did not return within {self._timeout:g} s"
            self._failed(entry, error)
            raise CredentialsRefreshError(
                f"The get_credentials callback {entry.name} {error}, and no unexpired "
                "credential is cached."
            )
        exc = task.exception()
        if exc is not None:
            self._failed(entry, _error_text(exc))
            raise CredentialsRefreshError(
                f"The get_credentials callback {entry.name} failed ({_error_text(exc)}), and "
                "no unexpired credential is cached."
            ) from exc
        result = task.result()
        if not isinstance(result, entry.credential_type):
            error = f"returned {type(result).__name__}; expected {type_name(entry.credential_type)}"
            self._failed(entry, error)
            raise TypeError(f"The get_credentials callback {entry.name} {error}.")
        credential = cast(C, result)
        remember_secrets_of(credential)  # redacted from logs and errors (issue 15)
        scheduled = self._schedule(credential)
        with entry.lock:
            entry.cached = scheduled
            entry.failures, entry.retry_at = 0, None
            entry.last_refresh, entry.last_error = self._clock(), None
        return credential

    def _failed(self, entry: _Entry[Any], error: str) -> None:
        now = self._clock()
        with entry.lock:
            entry.failures += 1
            delay = backoff_delay(entry.failures, *self._backoff, self._rng)
            entry.retry_at = now + timedelta(seconds=delay)
            entry.last_error = error
            usable = decide(now, entry.cached, None) is not Decision.REFRESH_NOW
        if usable:
            logger.warning(
                "Refreshing credentials with %s failed (%s); still using the cached credential, "
                "next try in %.1f s.",
                entry.name,
                error,
                delay,
            )

    def _forget_after_fork(self) -> None:
        """In a forked child the loop thread and workers do not exist and locks may be held:
        start afresh, keeping cached credentials and statistics."""
        self._lock = threading.Lock()
        self._loop = self._thread = self._executor = None
        for entry in self._entries.values():
            entry.lock = threading.Lock()
            entry.flight = None


async def _cancel_other_tasks() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class CredentialHandle(Generic[C]):
    """One storage's access to the shared credential for its callback.

    ``await get()`` before every request attempt; ``stats`` for observability; ``aclose()``
    when the storage is done (a later ``get()`` takes the lease again). A handle that is
    garbage-collected releases its lease too.
    """

    __slots__ = ("__weakref__", "_entry", "_lease", "_refresher")

    def __init__(self, refresher: Refresher, entry: _Entry[C]) -> None:
        self._refresher = refresher
        self._entry = entry
        self._lease = _Lease(entry)
        self._lease.acquire()
        weakref.finalize(self, self._lease.release)

    async def get(self) -> C:
        """A credential that is not within its safety margin of expiry (unless the callback
        just returned one that is); see the module docstring."""
        entry, refresher = self._entry, self._refresher
        while True:
            self._lease.acquire()  # a get() after aclose() (or racing it) takes the lease back
            now = refresher._clock()
            cached = entry.cached
            if cached is not None and decide(now, cached, entry.retry_at) is Decision.USE:
                return cached.credential
            decision, cached, flight = refresher._next(entry, now)
            if flight is None or decision is Decision.REFRESH_IN_BACKGROUND:
                assert cached is not None
                return cached.credential
            try:
                return await asyncio.shield(asyncio.wrap_future(flight))
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if flight.cancelled() and (task is None or not task.cancelling()):
                    continue  # the refresh was cancelled under us (last lease went): retry
                raise
            except (CredentialsRefreshError, TypeError) as exc:
                raise _copy(exc) from exc.__cause__

    @property
    def stats(self) -> RefreshStats:
        return self._entry.stats()

    @property
    def name(self) -> str:
        """The callback's qualified name."""
        return self._entry.name

    def close(self) -> None:
        """Release this handle's lease (sync form of :meth:`aclose`)."""
        self._lease.release()

    async def aclose(self) -> None:
        self._lease.release()

    def __repr__(self) -> str:
        return f"CredentialHandle({self._entry.name})"


_live: weakref.WeakSet[Refresher] = weakref.WeakSet()
_default: Refresher | None = None
_default_lock = threading.Lock()


def default_refresher() -> Refresher:
    """The process-wide refresher (created on first use, no thread until a refresh)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Refresher()
        return _default


def credential_handle(
    refreshable: RefreshableCredentials[C], *, refresher: Refresher | None = None
) -> CredentialHandle[C]:
    """A handle on the process-wide cache for ``refreshable``'s callback. No I/O; callable
    from sync code, any thread, and after fork or unpickling."""
    return (refresher or default_refresher()).handle(refreshable)


def refresh_stats(callback: object, *, refresher: Refresher | None = None) -> RefreshStats:
    """What the refresher did in this process for ``callback`` (a ``get_credentials``
    function, or a ``*Credentials.Refreshable``): calls, last refresh, last error."""
    return (refresher or default_refresher()).stats(callback)


def _after_fork_in_child() -> None:
    global _default_lock
    _default_lock = threading.Lock()
    for refresher in list(_live):
        refresher._forget_after_fork()


forget_after_fork(_after_fork_in_child)
