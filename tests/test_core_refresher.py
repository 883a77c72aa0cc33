"""The credential refresher's helpers and bookkeeping (``_refresher``), without threads where
possible: error text, exception copies, what counts as an async callback, statistics lookup,
refusals, and which carried credential is adopted."""

from __future__ import annotations

import asyncio
import functools
import random
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from icechunk_storage import CredentialsRefreshError, RefreshStats, _refresher
from icechunk_storage._credentials import S3Credentials, S3StaticCredentials, callable_name
from icechunk_storage._errors import ConfigurationError
from icechunk_storage._refresher import (
    Decision,
    Refresher,
    _copy,
    _error_text,
    _is_async,
    backoff_delay,
    decide,
    schedule,
)

from ._credential_helpers import (
    SCRIPTS,
    START,
    FakeClock,
    Script,
    Scripted,
    async_wait_until,
    failing_callback,
    static_s3_credential,
    wait_until,
)


def cred(expires: datetime | None, n: int = 0) -> S3StaticCredentials:
    return S3StaticCredentials(f"AKID{n}", f"SECRET{n}", expires_after=expires)


def never_called() -> S3StaticCredentials:
    raise AssertionError("the callback was called")


async def async_callback() -> S3StaticCredentials:
    return cred(None)


class SyncCallable:
    def __call__(self) -> S3StaticCredentials:
        return cred(None)


class AsyncCallable:
    async def __call__(self) -> S3StaticCredentials:
        return cred(None)


@pytest.fixture
def refresher() -> Iterator[Refresher]:
    r = Refresher(clock=FakeClock(), rng=random.Random(1))
    yield r
    r.close()


def test_error_text_is_type_and_message_cut_to_300_characters() -> None:
    prefix = "ValueError: "
    fits = ValueError("x" * (300 - len(prefix)))
    assert _error_text(fits) == prefix + "x" * (300 - len(prefix))
    long = ValueError("y" * (301 - len(prefix)))
    text = _error_text(long)
    assert len(text) == 300
    assert text == (prefix + "y" * 300)[:297] + "..."


def test_each_waiter_gets_its_own_copy_of_the_error() -> None:
    original = ConfigurationError("boom", 2)
    copy = _copy(original)
    assert copy is not original
    assert type(copy) is ConfigurationError
    assert copy.args == ("boom", 2)


def test_async_callbacks_are_recognised_in_every_form() -> None:
    assert _is_async(async_callback)
    assert _is_async(functools.partial(async_callback))
    assert _is_async(AsyncCallable())
    assert not _is_async(never_called)
    assert not _is_async(SyncCallable())
    assert not _is_async(functools.partial(never_called))


def test_stats_of_an_unused_callback_are_empty(refresher: Refresher) -> None:
    assert refresher.stats(never_called) == RefreshStats(0, None, None)
    assert refresher.stats(S3Credentials.Refreshable(never_called)) == RefreshStats()


def test_stats_of_an_unpicklable_callback_say_why(refresher: Refresher) -> None:
    def local() -> None:
        pass

    with pytest.raises(ConfigurationError) as caught:
        refresher.stats(local)
    assert str(caught.value) == (
        "tests.test_core_refresher.test_stats_of_an_unpicklable_callback_say_why.<locals>."
        "local cannot be pickled, so no refresher uses it."
    )
    assert caught.value.__cause__ is not None


def test_stats_count_calls_and_errors(refresher: Refresher) -> None:
    good = S3Credentials.Refreshable(static_s3_credential)
    assert refresher.get_blocking(good) == static_s3_credential()
    stats = refresher.stats(static_s3_credential)
    assert stats.calls == 1
    assert stats.last_refresh == START
    assert stats.last_error is None
    assert refresher.stats(good) == stats
    bad = S3Credentials.Refreshable(failing_callback)
    with pytest.raises(CredentialsRefreshError, match="failing_callback"):
        refresher.get_blocking(bad)
    failed = refresher.stats(failing_callback)
    assert (failed.calls, failed.last_refresh) == (1, None)
    assert failed.last_error is not None


def test_a_handle_needs_a_refreshable(refresher: Refresher) -> None:
    with pytest.raises(ConfigurationError) as caught:
        refresher.handle(never_called)  # type: ignore[arg-type]
    assert str(caught.value) == (
        "credential_handle() needs an S3Credentials.Refreshable, GcsCredentials.Refreshable "
        "or AzureCredentials.Refreshable, got function."
    )


def test_a_carried_credential_is_adopted_only_if_it_outlives_the_cached_one(
    refresher: Refresher,
) -> None:
    def offered(current: S3StaticCredentials) -> S3StaticCredentials:
        refreshable = S3Credentials.Refreshable(never_called, current=current)
        return refresher.get_blocking(refreshable)

    day = timedelta(days=1)
    assert offered(cred(START + day, 1)) == cred(START + day, 1)
    assert offered(cred(START + 2 * day, 2)) == cred(START + 2 * day, 2)  # lives longer
    assert offered(cred(START + 2 * day, 3)) == cred(START + 2 * day, 2)  # as long: kept
    assert offered(cred(START + day, 4)) == cred(START + 2 * day, 2)  # shorter: kept
    assert offered(cred(None, 5)) == cred(None, 5)  # never expires: adopted
    assert offered(cred(START + 9 * day, 6)) == cred(None, 5)  # and never replaced
    assert refresher.stats(never_called).calls == 0


def test_backoff_delay_at_both_ends_of_the_jitter() -> None:
    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            assert (a, b) == (0.5, 1.0)
            return b

    class Bottom(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return a

    assert [backoff_delay(n, 1.0, 60.0, Top()) for n in (0, 1, 2, 3, 6, 7, 30)] == [
        1.0,
        1.0,
        2.0,
        4.0,
        32.0,
        60.0,
        60.0,
    ]
    assert [backoff_delay(n, 2.0, 5.0, Bottom()) for n in (1, 2, 3)] == [1.0, 2.0, 2.5]


# --- the driver, under a fake clock -------------------------------------------------------


class Top(random.Random):
    """Jitter at the top of its range: backoff delays of exactly 1, 2, 4 ... seconds."""

    def uniform(self, a: float, b: float) -> float:
        return b


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fixed(clock: FakeClock) -> Iterator[Refresher]:
    r = Refresher(
        clock=clock, rng=Top(), refresh_margin=(300.0, 300.0), safety_margin=30.0, timeout=5.0
    )
    yield r
    r.close()


@pytest.fixture
def scripted(clock: FakeClock) -> Iterator[Callable[..., tuple[Script, Scripted]]]:
    names: list[str] = []

    def make(**kwargs: Any) -> tuple[Script, Scripted]:
        name = f"core-{uuid.uuid4().hex}"
        SCRIPTS[name] = Script(clock=clock, **kwargs)
        names.append(name)
        return SCRIPTS[name], Scripted(name)

    yield make
    for name in names:
        gate = SCRIPTS.pop(name).gate
        if gate is not None:
            gate.set()


def test_failed_background_refreshes_back_off_and_keep_the_cached_credential(
    fixed: Refresher, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    current = cred(START + timedelta(hours=1))
    refreshable = S3Credentials.Refreshable(failing_callback, current=current)

    def get() -> int:
        assert fixed.get_blocking(refreshable) == current
        return fixed.stats(failing_callback).calls

    assert get() == 0  # adopted, fresh
    clock.advance(3600 - 200)  # inside the refresh window, outside the safety margin
    with caplog.at_level("WARNING", logger="icechunk_storage.credentials"):
        assert get() == 1  # failed: next try in 1 s
    assert [r.getMessage() for r in caplog.records] == [
        "Refreshing credentials with tests._credential_helpers.failing_callback failed "
        "(RuntimeError: bad creds); still using the cached credential, next try in 1.0 s."
    ]
    clock.advance(0.9)
    assert get() == 1
    clock.advance(0.2)
    assert get() == 2  # failed again: next try in 2 s
    clock.advance(1.5)
    assert get() == 2
    clock.advance(0.6)
    assert get() == 3  # and then in 4 s
    clock.advance(3.9)
    assert get() == 3
    assert fixed.stats(failing_callback).last_error == "RuntimeError: bad creds"


def test_a_failed_refresh_of_an_expired_credential_raises(
    fixed: Refresher, clock: FakeClock
) -> None:
    refreshable = S3Credentials.Refreshable(failing_callback, current=cred(START))
    with pytest.raises(CredentialsRefreshError) as caught:
        fixed.get_blocking(refreshable)
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert str(caught.value) == (
        "The get_credentials callback tests._credential_helpers.failing_callback failed "
        "(RuntimeError: bad creds), and no unexpired credential is cached."
    )
    with pytest.raises(CredentialsRefreshError):  # a copy per waiter, every time
        fixed.get_blocking(refreshable)
    assert fixed.stats(failing_callback).calls == 2


class ScatterFromTheCallback:
    """An async callback (run on the refresher's loop) that tries to scatter credentials."""

    async def __call__(self) -> S3StaticCredentials:
        return _INNER[0].get_blocking(S3Credentials.Refreshable(static_s3_credential))


_INNER: list[Refresher] = []


def test_a_callback_cannot_scatter_credentials_itself(fixed: Refresher) -> None:
    _INNER[:] = [fixed]
    try:
        with pytest.raises(CredentialsRefreshError) as caught:
            fixed.get_blocking(S3Credentials.Refreshable(ScatterFromTheCallback()))
    finally:
        _INNER.clear()
    cause = caught.value.__cause__
    assert isinstance(cause, RuntimeError)
    assert str(cause) == "get_credentials callbacks cannot scatter credentials themselves."


def test_a_blocking_get_whose_refresh_is_cancelled_refreshes_again(
    fixed: Refresher, scripted: Callable[..., tuple[Script, Scripted]]
) -> None:
    script, callback = scripted(gate=threading.Event())
    refreshable = S3Credentials.Refreshable(callback)
    handle = fixed.handle(refreshable)
    got: list[S3StaticCredentials] = []
    waiter = threading.Thread(target=lambda: got.append(fixed.get_blocking(refreshable)))
    waiter.start()
    wait_until(lambda: script.calls == 1)
    handle.close()  # the last lease: the refresh in flight is cancelled
    wait_until(lambda: script.calls == 2)  # the waiter started another one
    assert script.gate is not None
    script.gate.set()
    waiter.join(timeout=10)
    assert len(got) == 1
    assert got[0].access_key_id == "AKID2"


async def test_a_get_cancelled_as_its_refresh_is_cancelled_stays_cancelled(
    fixed: Refresher, scripted: Callable[..., tuple[Script, Scripted]]
) -> None:
    script, callback = scripted(gate=threading.Event())
    handle = fixed.handle(S3Credentials.Refreshable(callback))
    task = asyncio.create_task(handle.get())
    await async_wait_until(lambda: script.calls == 1)
    handle.close()  # cancels the refresh ...
    task.cancel()  # ... while the caller is cancelled too: the caller wins
    assert script.gate is not None
    script.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)


def _loop_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "icechunk_storage-credentials"}


def test_close_stops_the_loop_thread_without_waiting_for_a_callback(
    fixed: Refresher, clock: FakeClock, scripted: Callable[..., tuple[Script, Scripted]]
) -> None:
    before = _loop_threads()
    script, callback = scripted(gate=threading.Event())
    current = cred(START + timedelta(hours=1))
    handle = fixed.handle(S3Credentials.Refreshable(callback, current=current))
    clock.advance(3600 - 200)
    assert asyncio.run(handle.get()) == current  # and a refresh starts in the background
    wait_until(lambda: script.calls == 1)
    started = _loop_threads() - before
    assert started
    assert all(t.daemon for t in started)  # a refresher never keeps a process alive
    closer = threading.Thread(target=fixed.close)
    closer.start()
    closer.join(timeout=5)
    assert not closer.is_alive()  # a callback stuck in a worker thread does not hold it up
    assert not _loop_threads() - before
    assert fixed.active_refreshes() == 0
    handle.close()


def test_a_hanging_callback_fails_after_the_timeout(
    clock: FakeClock, scripted: Callable[..., tuple[Script, Scripted]]
) -> None:
    refresher = Refresher(clock=clock, timeout=0.2)
    try:
        _, callback = scripted(gate=threading.Event())
        with pytest.raises(CredentialsRefreshError) as caught:
            refresher.get_blocking(S3Credentials.Refreshable(callback))
        assert str(caught.value) == (
            f"The get_credentials callback {callable_name(callback)} did not return within "
            "0.2 s, and no unexpired credential is cached."
        )
        assert refresher.stats(callback).last_error == "did not return within 0.2 s"
    finally:
        refresher.close()


def test_a_success_resets_the_backoff(
    fixed: Refresher, clock: FakeClock, scripted: Callable[..., tuple[Script, Scripted]]
) -> None:
    script, callback = scripted(fail=RuntimeError("down"))
    current = cred(START + timedelta(hours=1))
    refreshable = S3Credentials.Refreshable(callback, current=current)
    assert fixed.get_blocking(refreshable) == current
    clock.advance(3600 - 200)
    assert fixed.get_blocking(refreshable) == current  # failed: next try in 1 s
    script.fail = None
    clock.advance(1.1)
    fresh = fixed.get_blocking(refreshable)
    assert fresh.access_key_id == "AKID2"
    assert script.calls == 2
    clock.advance(3600 - 200)
    script.fail = RuntimeError("down again")
    assert fixed.get_blocking(refreshable) == fresh  # failed: next try in 1 s, not 2
    clock.advance(1.1)
    assert fixed.get_blocking(refreshable) == fresh
    assert script.calls == 4


def test_at_most_four_sync_callbacks_run_at_once_and_close_drops_queued_ones(
    fixed: Refresher, clock: FakeClock, scripted: Callable[..., tuple[Script, Scripted]]
) -> None:
    gate = threading.Event()
    current = cred(START + timedelta(hours=1))
    made = [scripted(gate=gate) for _ in range(5)]
    handles = [fixed.handle(S3Credentials.Refreshable(c, current=current)) for _, c in made]
    clock.advance(3600 - 200)

    async def start_all() -> None:
        for handle in handles:
            assert await handle.get() == current  # each starts a background refresh

    asyncio.run(start_all())
    wait_until(lambda: sum(script.calls for script, _ in made) == 4)
    assert fixed.active_refreshes() == 5
    fixed.close()  # the fifth, still queued, never runs
    gate.set()
    wait_until(lambda: fixed.active_refreshes() == 0)
    assert sum(script.calls for script, _ in made) == 4
    for handle in handles:
        handle.close()


def test_a_background_refresh_may_start_exactly_when_the_backoff_ends() -> None:
    cached = schedule(cred(START + timedelta(hours=1)), START, 300, 30)
    now = START + timedelta(seconds=3600 - 200)
    assert decide(now, cached, now + timedelta(microseconds=1)) is Decision.USE
    assert decide(now, cached, now) is Decision.REFRESH_IN_BACKGROUND


def test_a_closed_refresher_starts_again_on_demand(
    fixed: Refresher, clock: FakeClock, scripted: Callable[..., tuple[Script, Scripted]]
) -> None:
    script, callback = scripted(lifetime=1.0)
    refreshable = S3Credentials.Refreshable(callback)
    assert fixed.get_blocking(refreshable).access_key_id == "AKID1"
    fixed.close()
    clock.advance(1.0)  # expired: the next get refreshes
    assert fixed.get_blocking(refreshable).access_key_id == "AKID2"
    assert script.calls == 2


def test_after_fork_the_child_starts_afresh(
    fixed: Refresher,
    clock: FakeClock,
    scripted: Callable[..., tuple[Script, Scripted]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the ``os.register_at_fork`` hook does in a child, run here on one refresher (the
    fork itself is tested in test_refresher.py, out of the mutation run's sight)."""
    script, callback = scripted(lifetime=1.0)
    refreshable = S3Credentials.Refreshable(callback)
    fixed.get_blocking(refreshable)
    parent_loop, parent_thread = fixed._loop, fixed._thread
    assert parent_loop is not None
    assert parent_thread is not None
    monkeypatch.setattr(_refresher, "_live", weakref.WeakSet([fixed]))
    monkeypatch.setattr(_refresher, "_default_lock", threading.Lock())
    old_lock = _refresher._default_lock
    try:
        _refresher._after_fork_in_child()
        assert _refresher._default_lock is not old_lock
        with _refresher._default_lock:
            pass
        clock.advance(1.0)
        # the "child" keeps its statistics and refreshes on a loop of its own
        assert fixed.get_blocking(refreshable).access_key_id == "AKID2"
        assert fixed._thread is not parent_thread
        assert fixed.stats(callback).calls == 2 == script.calls
    finally:  # the parent's loop, forgotten by the "child", is still ours to stop
        parent_loop.call_soon_threadsafe(parent_loop.stop)
        parent_thread.join(timeout=10)
        parent_loop.close()
