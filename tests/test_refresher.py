"""The shared credential refresher: the pure decision, then the driver under a fake clock,
real concurrency, several loops and threads, fork and spawned processes."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import pickle
import random
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from icechunk_storage import CredentialsRefreshError, RefreshStats, refresh_stats
from icechunk_storage._credentials import (
    AzureCredentials,
    GcsCredentials,
    S3Credentials,
    S3StaticCredentials,
    s3_refreshable_credentials,
)
from icechunk_storage._errors import ConfigurationError
from icechunk_storage._refresher import (
    Decision,
    Refresher,
    Scheduled,
    backoff_delay,
    credential_handle,
    decide,
    schedule,
)

from ._credential_helpers import (
    GATES,
    SCRIPTS,
    START,
    AsyncScripted,
    BlockInPid,
    FakeClock,
    FileCounted,
    Script,
    Scripted,
    async_wait_until,
    child_after_fork,
    child_get_many,
    count_calls,
    failing_callback,
    wait_until,
)

H = timedelta(hours=1)


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def cred(expires: datetime | None, n: int = 0) -> S3StaticCredentials:
    return S3StaticCredentials(f"AKID{n}", f"SECRET{n}", expires_after=expires)


# --- the pure decision ---------------------------------------------------------------------


def test_schedule_long_lived_refreshes_margin_before_expiry() -> None:
    got = schedule(cred(START + H), START, margin=300, safety=30)
    assert got.refresh_at == START + H - s(300)
    assert got.must_refresh_at == START + H - s(30)


def test_schedule_short_lived_refreshes_at_nine_tenths_of_its_life() -> None:
    got = schedule(cred(START + s(2)), START, margin=300, safety=30)
    assert got.refresh_at == START + s(1.8)
    assert got.must_refresh_at == START + s(1.9)


def test_schedule_never_expiring_and_already_expired() -> None:
    assert schedule(cred(None), START, 300, 30) == Scheduled(cred(None), None, None)
    past = schedule(cred(START - s(5)), START, 300, 30)
    assert past.refresh_at == past.must_refresh_at == START - s(5)


@pytest.mark.parametrize(
    ("offset", "retry_in", "expected"),
    [
        (0, None, Decision.USE),
        (3600 - 301, None, Decision.USE),
        (3600 - 300, None, Decision.REFRESH_IN_BACKGROUND),
        (3600 - 31, None, Decision.REFRESH_IN_BACKGROUND),
        (3600 - 200, 10, Decision.USE),  # backing off after a failure
        (3600 - 200, -1, Decision.REFRESH_IN_BACKGROUND),  # backoff over
        (3600 - 30, None, Decision.REFRESH_NOW),
        (3600 - 30, 10, Decision.REFRESH_NOW),  # backoff never delays a needed refresh
        (3600 + 5, None, Decision.REFRESH_NOW),
    ],
)
def test_decide(offset: float, retry_in: float | None, expected: Decision) -> None:
    now = START + s(offset)
    cached = schedule(cred(START + H), START, 300, 30)
    retry_at = None if retry_in is None else now + s(retry_in)
    assert decide(now, cached, retry_at) is expected


def test_decide_without_credential_or_expiry() -> None:
    assert decide(START, None, None) is Decision.REFRESH_NOW
    forever = schedule(cred(None), START, 300, 30)
    assert decide(START + timedelta(days=3650), forever, None) is Decision.USE


@given(
    lifetime=st.floats(0.001, 86400 * 7),
    margin=st.floats(0, 600),
    safety=st.floats(0, 60),
    offset=st.floats(0, 86400 * 8),
)
def test_schedule_properties(lifetime: float, margin: float, safety: float, offset: float) -> None:
    expires = START + s(lifetime)
    got = schedule(cred(expires), START, max(margin, safety), safety)
    assert got.refresh_at is not None
    assert got.must_refresh_at is not None
    assert START <= got.refresh_at <= got.must_refresh_at <= expires
    # Never refresh before nine tenths of the lifetime: about one call per lifetime.
    assert got.refresh_at >= START + s(lifetime) * 9 / 10 - s(1e-6)
    # Once expired, a refresh is always waited for.
    if offset >= lifetime:
        assert decide(START + s(offset), got, None) is Decision.REFRESH_NOW


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    rng = random.Random(3)
    for failures in range(1, 12):
        ceiling = min(60.0, 2.0 ** (failures - 1))
        delays = [backoff_delay(failures, 1.0, 60.0, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1


def test_margin_is_jittered_between_bounds() -> None:
    clock = FakeClock()
    refresher = Refresher(clock=clock, rng=random.Random(0), refresh_margin=(180, 300))
    points = {refresher._schedule(cred(START + H)).refresh_at for _ in range(100)}
    assert len(points) > 50
    assert all(p is not None and START + H - s(300) <= p <= START + H - s(180) for p in points)


# --- the driver ----------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def refresher(clock: FakeClock) -> Iterator[Refresher]:
    r = Refresher(
        clock=clock,
        rng=random.Random(1),
        refresh_margin=(300.0, 300.0),
        safety_margin=30.0,
        backoff=(1.0, 60.0),
        timeout=5.0,
    )
    yield r
    r.close()


MakeScript = Callable[..., tuple[Script, Scripted]]


@pytest.fixture
def script(clock: FakeClock) -> Iterator[MakeScript]:
    names: list[str] = []

    def make(**kwargs: Any) -> tuple[Script, Scripted]:
        name = f"script-{uuid.uuid4().hex}"
        SCRIPTS[name] = Script(clock=kwargs.pop("clock", clock), **kwargs)
        names.append(name)
        return SCRIPTS[name], Scripted(name)

    yield make
    for name in names:
        gate = SCRIPTS.pop(name).gate
        if gate is not None:
            gate.set()


def settle(refresher: Refresher) -> None:
    """Wait until no refresh is in flight."""
    wait_until(lambda: refresher.active_refreshes() == 0)


async def test_first_get_fetches_once_then_serves_the_cache(
    refresher: Refresher, script: MakeScript, clock: FakeClock
) -> None:
    state, callback = script()
    handle = refresher.handle(S3Credentials.Refreshable(callback))
    assert handle.stats == RefreshStats(calls=0, last_refresh=None, last_error=None)
    first = await handle.get()
    assert first.access_key_id == "AKID1"
    for _ in range(100):
        assert await handle.get() is first
    clock.advance(3600 - 301)
    assert await handle.get() is first
    assert state.calls == 1
    assert handle.stats == RefreshStats(calls=1, last_refresh=START, last_error=None)


async def test_never_expiring_credential_is_never_refreshed(
    refresher: Refresher, script: MakeScript, clock: FakeClock
) -> None:
    state, callback = script(lifetime=None)
    handle = refresher.handle(S3Credentials.Refreshable(callback))
    await handle.get()
    clock.advance(86400 * 3650)
    await handle.get()
    settle(refresher)
    assert state.calls == 1


async def test_refreshes_in_background_before_expiry_without_waiting(
    refresher: Refresher, script: MakeScript, clock: FakeClock
) -> None:
    state, callback = script()
    handle = refresher.handle(S3Credentials.Refreshable(callback))
    old = await handle.get()
    state.gate = threading.Event()  # the next call blocks until released
    clock.advance(3600 - 299)
    # Inside the margin: served at once from the cache while the refresh is blocked.
    assert await asyncio.wait_for(handle.get(), 1) is old
    await async_wait_until(lambda: state.calls == 2)
    assert await handle.get() is old
    state.gate.set()
    await async_wait_until(lambda: refresher.active_refreshes() == 0)
    new = await handle.get()
    assert new.access_key_id == "AKID2"
    assert new.expires_after == clock() + H
    assert handle.stats.calls == 2
    assert handle.stats.last_refresh == clock()


async def test_short_lived_credential_refreshes_after_nine_tenths_of_its_life(
    refresher: Refresher, script: MakeScript, clock: FakeClock
) -> None:
    state, callback = script(lifetime=2.0)
    handle = refresher.handle(S3Credentials.Refreshable(callback))
    await handle.get()
    clock.advance(1.75)
    assert (await handle.get()).access_key_id == "AKID1"
    settle(refresher)
    assert state.calls == 1
    clock.advance(0.1)  # 1.85 s into a 2 s life
    assert (await handle.get()).access_key_id == "AKID1"  # still served, refresh started
    await async_wait_until(lambda: state.calls == 2 and refresher.active_refreshes() == 0)
    assert (await handle.get()).access_key_id == "AKID2"


async def test_expired_credential_is_refreshed_before_use(
    refresher: Refresher, script: MakeScript, clock: FakeClock
) -> None:
    state, callback = script()
    handle = refresher.handle(S3Credentials.Refreshable(callback))
    await handle.get()
    clock.advance(3600 - 20)  # inside the 30 s safety margin: must wait
    assert (await handle.get()).access_key_id == "AKID2"
    assert state.calls == 2


async def test_one_thousand_concurrent_gets_make_one_call(
    refresher: Refresher, script: MakeScript
) -> None:
    state, callback = script(gate=threading.Event())
    handle = refresher.handle(S3Credentials.Refreshable(callback))
    tasks = [asyncio.create_task(handle.get()) for _ in range(1000)]
    await async_wait_until(lambda: state.calls == 1)
    await asyncio.sleep(0.02)
    assert state.gate is not None
    state.gate.set()
    results = await asyncio.gather(*tasks)
    assert {id(r) for r in results} == {id(results[0])}
    assert state.calls == 1
    assert handle.stats.calls == 1


async def test_one_thousand_gets_in_the_refresh_window_make_one_background_call(
    refresher: Refresher, script: MakeScript, clock: FakeClock
) -> None:
    state, callback = script()
    handles = [refresher.handle(S3Credentials.Refreshable(callback)) for _ in range(10)]
    old = await handles[0].get()
    state.gate = threading.Event()
    clock.advance(3600 - 100)
    results = await asyncio.gather(*(h.get() for h in handles for _ in range(100)))
    assert all(r is old for r in results)
    await async_wait_until(lambda: state.calls == 2)
    state.gate.set()
    await async_wait_until(lambda: refresher.active_refreshes() == 0)
    assert state.calls == 2


async def test_sync_callback_runs_in_a_worker_thread_off_every_loop(
    refresher: Refresher, script: MakeScript
) -> None:
    blocked, slow = script(gate=threading.Event())
    fast, quick = script()
    slow_task = asyncio.create_task(refresher.handle(S3Credentials.Refreshable(slow)).get())
    await async_wait_until(lambda: blocked.calls == 1)
    # While one sync callback blocks, this loop and the refresher's loop both keep going.
    await asyncio.wait_for(refresher.handle(S3Credentials.Refreshable(quick)).get(), 2)
    assert blocked.gate is not None
    blocked.gate.set()
    await slow_task
    names = blocked.threads + fast.threads
    assert all(n.startswith("icechunk_storage-credentials_") for n in names), names
    assert threading.current_thread().name not in names


async def test_async_callback_is_awaited_on_the_refresher_loop(
    refresher: Refresher, script: MakeScript
) -> None:
    state, _ = script(kind="gcs")
    name = next(n for n, v in SCRIPTS.items() if v is state)
    handle = refresher.handle(GcsCredentials.Refreshable(AsyncScripted(name)))
    got = await handle.get()
    assert got.bearer == "BEARER1"
    assert state.threads == ["icechunk_storage-credentials"]


async def test_failed_background_refresh_keeps_serving_and_backs_off(
    refresher: Refresher, script: MakeScript, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    state, callback = script()
    handle = refresher.handle(S3Credentials.Refreshable(callback))
    old = await handle.get()
    state.fail = RuntimeError("bad creds")
    clock.advance(3600 - 250)
    assert await handle.get() is old
    settle(refresher)
    assert state.calls == 2
    assert handle.stats.last_error == "RuntimeError: bad creds"
    assert "still using the cached credential" in caplog.text
    # Backing off: more gets right away make no call.
    for _ in range(10):
        assert await handle.get() is old
    settle(refresher)
    assert state.calls == 2
    clock.advance(2)  # past the first backoff (at most 1 s)
    assert await handle.get() is old
    settle(refresher)
    assert state.calls == 3
    state.fail = None
    clock.advance(4)
    assert await handle.get() is old
    settle(refresher)
    assert state.calls == 4
    assert (await handle.get()).access_key_id == "AKID4"
    assert handle.stats.last_error is None


async def test_failed_refresh_of_expired_credential_raises_with_cause_and_name(
    refresher: Refresher, script: MakeScript, clock: FakeClock
) -> None:
    state, callback = script()
    handle = refresher.handle(S3Credentials.Refreshable(callback))
    await handle.get()
    state.fail = RuntimeError("bad creds")
    clock.advance(3600)
    with pytest.raises(CredentialsRefreshError) as info:
        await handle.get()
    assert isinstance(info.value.__cause__, RuntimeError)
    assert str(info.value.__cause__) == "bad creds"
    message = str(info.value)
    assert "tests._credential_helpers.Scripted" in message
    assert "bad creds" in message
    assert "SECRET" not in message
    assert "AKID" not in message
    # Every request that needs the credential tries again (no cached fallback left).
    with pytest.raises(CredentialsRefreshError):
        await handle.get()
    assert state.calls == 3


async def test_first_fetch_failure_names_a_function_callback(refresher: Refresher) -> None:
    handle = refresher.handle(S3Credentials.Refreshable(failing_callback))
    results = await asyncio.gather(*(handle.get() for _ in range(50)), return_exceptions=True)
    assert all(isinstance(r, CredentialsRefreshError) for r in results)
    assert "tests._credential_helpers.failing_callback" in str(results[0])
    assert handle.stats.calls == 1
    assert handle.stats.last_error == "RuntimeError: bad creds"


@pytest.mark.parametrize(
    ("credentials_cls", "expected"),
    [
        (S3Credentials.Refreshable, "S3StaticCredentials"),
        (GcsCredentials.Refreshable, "GcsBearerCredential"),
        (AzureCredentials.Refreshable, "AzureRefreshableCredential.SasToken"),
    ],
)
async def test_wrong_return_type_raises_type_error_naming_expected_type(
    refresher: Refresher, script: MakeScript, credentials_cls: Any, expected: str
) -> None:
    _, callback = script(result={"access_key_id": "AKIDLEAK", "secret": "SECRETLEAK"})
    handle = refresher.handle(credentials_cls(callback))
    with pytest.raises(TypeError, match=expected) as info:
        await handle.get()
    assert "returned dict" in str(info.value)
    assert "LEAK" not in str(info.value)
    assert handle.stats.last_error is not None
    assert "LEAK" not in handle.stats.last_error


async def test_hanging_callback_times_out(clock: FakeClock, script: MakeScript) -> None:
    refresher = Refresher(clock=clock, timeout=0.05)
    try:
        state, callback = script(gate=threading.Event())
        handle = refresher.handle(S3Credentials.Refreshable(callback))
        with pytest.raises(CredentialsRefreshError, match=r"did not return within 0\.05 s"):
            await handle.get()
        assert state.gate is not None
        state.gate.set()
    finally:
        refresher.close()


async def test_handles_for_the_same_callback_share_one_credential(
    refresher: Refresher, script: MakeScript
) -> None:
    state, callback = script()
    other_state, other = script()
    a = refresher.handle(S3Credentials.Refreshable(callback))
    b = refresher.handle(S3Credentials.Refreshable(Scripted(callback.name)))  # equal pickle
    c = refresher.handle(S3Credentials.Refreshable(other))
    got = await asyncio.gather(a.get(), b.get(), c.get())
    assert got[0] is got[1]
    assert got[2] is not got[0]
    assert (state.calls, other_state.calls) == (1, 1)
    assert a.stats == b.stats == refresh_stats(callback, refresher=refresher)
    assert refresh_stats(S3Credentials.Refreshable(callback), refresher=refresher).calls == 1
    assert refresh_stats(Scripted("never-used"), refresher=refresher) == RefreshStats()


async def test_one_callback_cannot_serve_two_credential_types(
    refresher: Refresher, script: MakeScript
) -> None:
    _, callback = script()
    refresher.handle(S3Credentials.Refreshable(callback))
    with pytest.raises(ConfigurationError, match="already used for S3StaticCredentials"):
        refresher.handle(GcsCredentials.Refreshable(callback))
    with pytest.raises(ConfigurationError, match="Refreshable"):
        refresher.handle(S3Credentials.FromEnv())  # type: ignore[arg-type]


async def test_shared_across_event_loops_and_threads(
    refresher: Refresher, script: MakeScript
) -> None:
    state, callback = script(gate=threading.Event())
    handle = refresher.handle(S3Credentials.Refreshable(callback))

    async def many(n: int) -> list[S3StaticCredentials]:
        return await asyncio.gather(*(handle.get() for _ in range(n)))

    # A second loop in another thread, like zarr's I/O thread, plus this test's loop.
    other_loop = asyncio.create_task(asyncio.to_thread(asyncio.run, many(300)))
    here = asyncio.create_task(many(300))
    await async_wait_until(lambda: state.calls == 1)
    await asyncio.sleep(0.02)
    assert state.gate is not None
    state.gate.set()
    results = (await other_loop) + (await here)
    assert len({id(r) for r in results}) == 1
    assert state.calls == 1


async def test_background_refresh_survives_the_loop_that_started_it(
    refresher: Refresher, script: MakeScript, clock: FakeClock
) -> None:
    state, callback = script()
    handle = refresher.handle(S3Credentials.Refreshable(callback))
    await handle.get()
    state.gate = threading.Event()
    clock.advance(3600 - 100)
    # asyncio.run closes its loop as soon as get() returned the cached credential.
    got = await asyncio.to_thread(asyncio.run, handle.get())
    assert got.access_key_id == "AKID1"
    state.gate.set()
    await async_wait_until(lambda: state.calls == 2 and refresher.active_refreshes() == 0)
    assert (await handle.get()).access_key_id == "AKID2"


async def test_scattered_credential_is_used_until_it_nears_expiry(
    refresher: Refresher, script: MakeScript, clock: FakeClock
) -> None:
    state, callback = script()
    scattered = cred(START + H, n=99)
    handle = refresher.handle(S3Credentials.Refreshable(callback, current=scattered))
    assert await handle.get() is scattered
    clock.advance(1000)
    assert await handle.get() is scattered
    settle(refresher)
    assert state.calls == 0
    clock.advance(3600 - 1000 - 200)
    assert await handle.get() is scattered  # background refresh starts
    await async_wait_until(lambda: state.calls == 1 and refresher.active_refreshes() == 0)
    assert (await handle.get()).access_key_id == "AKID1"
    # An older scattered copy arriving later does not replace the newer credential.
    late = refresher.handle(S3Credentials.Refreshable(callback, current=scattered))
    assert (await late.get()).access_key_id == "AKID1"


async def test_expired_scattered_credential_is_not_used(
    refresher: Refresher, script: MakeScript, clock: FakeClock
) -> None:
    state, callback = script()
    stale = cred(START - s(1), n=99)
    handle = refresher.handle(S3Credentials.Refreshable(callback, current=stale))
    assert (await handle.get()).access_key_id == "AKID1"
    assert state.calls == 1


async def test_pickled_refreshable_with_current_makes_no_call(
    refresher: Refresher, script: MakeScript, clock: FakeClock
) -> None:
    state, callback = script()
    value = S3Credentials.Refreshable(callback, current=cred(START + H, n=7))
    copy = pickle.loads(pickle.dumps(value))
    assert copy == value
    assert copy.current == value.current
    assert (await refresher.handle(copy).get()).access_key_id == "AKID7"
    assert state.calls == 0


async def test_callback_returning_expired_credentials_is_called_per_request(
    refresher: Refresher, script: MakeScript
) -> None:
    """Icechunk's test: expires_after=now three times gives three calls, then None gives
    no more."""
    state, callback = script(lifetime=0.0)
    handle = refresher.handle(S3Credentials.Refreshable(callback))
    for n in range(1, 4):
        assert (await handle.get()).access_key_id == f"AKID{n}"
    state.lifetime = None
    for _ in range(3):
        assert (await handle.get()).access_key_id == "AKID4"
    assert state.calls == 4


async def test_closing_the_last_handle_stops_its_refresh(
    refresher: Refresher, script: MakeScript, clock: FakeClock
) -> None:
    state, _ = script()
    name = next(n for n, v in SCRIPTS.items() if v is state)
    value = S3Credentials.Refreshable(AsyncScripted(name))
    first, second = refresher.handle(value), refresher.handle(value)
    await first.get()
    state.gate = threading.Event()  # never set: the refresh hangs until cancelled
    clock.advance(3600 - 100)
    await first.get()
    await async_wait_until(lambda: state.calls == 2)
    assert refresher.active_refreshes() == 1
    await first.aclose()
    await asyncio.sleep(0.02)
    assert refresher.active_refreshes() == 1  # the second handle still uses it
    await second.aclose()
    await async_wait_until(lambda: refresher.active_refreshes() == 0 and state.cancelled == 1)
    # The cache outlives its handles: a new storage in this process reuses it.
    assert (await refresher.handle(value).get()).access_key_id == "AKID1"


async def test_garbage_collected_handle_releases_its_lease(
    refresher: Refresher, script: MakeScript, clock: FakeClock
) -> None:
    state, _ = script()
    name = next(n for n, v in SCRIPTS.items() if v is state)
    handle = refresher.handle(S3Credentials.Refreshable(AsyncScripted(name)))
    await handle.get()
    state.gate = threading.Event()
    clock.advance(3600 - 100)
    await handle.get()
    await async_wait_until(lambda: refresher.active_refreshes() == 1)
    del handle
    gc.collect()
    await async_wait_until(lambda: refresher.active_refreshes() == 0 and state.cancelled == 1)


async def test_get_waiting_while_its_handle_closes_retries_instead_of_failing(
    refresher: Refresher, script: MakeScript
) -> None:
    state, _ = script(gate=threading.Event())
    name = next(n for n, v in SCRIPTS.items() if v is state)
    handle = refresher.handle(S3Credentials.Refreshable(AsyncScripted(name)))
    waiting = asyncio.create_task(handle.get())
    await async_wait_until(lambda: state.calls == 1)
    await handle.aclose()  # last lease: the refresh the task waits on is cancelled
    await async_wait_until(lambda: state.cancelled == 1 and state.calls == 2)
    assert state.gate is not None
    state.gate.set()
    assert (await asyncio.wait_for(waiting, 5)).access_key_id == "AKID2"
    assert handle._entry.leases == 1  # the get() took the lease back


async def test_get_after_aclose_takes_the_lease_again(
    refresher: Refresher, script: MakeScript, clock: FakeClock
) -> None:
    state, callback = script()
    handle = refresher.handle(S3Credentials.Refreshable(callback))
    await handle.get()
    await handle.aclose()
    await handle.aclose()  # idempotent
    assert not handle._lease.held
    assert handle._entry.leases == 0
    clock.advance(3600)
    assert (await handle.get()).access_key_id == "AKID2"
    assert handle._entry.leases == 1
    assert state.calls == 2
    assert repr(handle) == "CredentialHandle(tests._credential_helpers.Scripted instance)"


def test_default_refresher_and_credential_handle(tmp_path: Path) -> None:
    path = str(tmp_path / "calls")
    value = s3_refreshable_credentials(FileCounted(path))
    handles = [credential_handle(value) for _ in range(5)]
    got = [asyncio.run(h.get()) for h in handles]
    assert {c.access_key_id for c in got} == {"AKIDFILE"}
    assert count_calls(path) == 1
    assert refresh_stats(FileCounted(path)).calls == 1
    for h in handles:
        h.close()


# --- processes -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spawn_pool() -> Iterator[ProcessPoolExecutor]:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


def test_unpickled_in_a_spawned_process_refreshes_there_once(
    spawn_pool: ProcessPoolExecutor, tmp_path: Path
) -> None:
    path = str(tmp_path / "calls")
    value = S3Credentials.Refreshable(FileCounted(path))
    pid, ids, calls = spawn_pool.submit(child_get_many, value, 5, 40).result(timeout=60)
    assert pid != os.getpid()
    assert ids == ["AKIDFILE"] * 200
    assert calls == 1
    assert count_calls(path) == 1


def test_scattered_credential_travels_to_a_spawned_process(
    spawn_pool: ProcessPoolExecutor, tmp_path: Path
) -> None:
    path = str(tmp_path / "calls")
    value = s3_refreshable_credentials(FileCounted(path), scatter_initial_credentials=True)
    assert count_calls(path) == 1
    assert value.current is not None
    _, ids, calls = spawn_pool.submit(child_get_many, value, 3, 10).result(timeout=60)
    assert ids == ["AKIDFILE"] * 30
    assert calls == 0
    assert count_calls(path) == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_rebuilds_instead_of_reusing_parent_state() -> None:
    """Fork while the parent has a refresh in flight on its private thread and holds the
    entry's lock: the child must use neither, and refresh on its own."""
    refresher = Refresher()
    gate = f"gate-{uuid.uuid4().hex}"
    GATES[gate] = threading.Event()
    try:
        handle = refresher.handle(S3Credentials.Refreshable(BlockInPid(os.getpid(), gate)))
        parent_get = threading.Thread(target=asyncio.run, args=(handle.get(),))
        parent_get.start()
        wait_until(lambda: refresher.active_refreshes() == 1)
        lock = handle._entry.lock
        ctx = multiprocessing.get_context("fork")
        receive, send = ctx.Pipe(duplex=False)
        with lock:
            child = ctx.Process(target=child_after_fork, args=(handle, send))
            child.start()
        send.close()
        assert receive.poll(20), "the forked child hung"
        status, detail, child_pid = receive.recv()
        child.join(10)
        assert (status, detail) == ("ok", f"AKID{child_pid}")
        assert child.exitcode == 0
        GATES[gate].set()
        parent_get.join(10)
        assert handle.stats.calls == 1  # the child's call did not count here
    finally:
        GATES.pop(gate).set()
        refresher.close()
