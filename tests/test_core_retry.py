"""The retry loop (``_retry``): the backoff ceiling at each attempt, the budget counted
exactly, what is retried, what the observer hears, and what the final error carries."""

from __future__ import annotations

import random

import pytest

from icechunk_storage import (
    ConnectionLostError,
    ObjectNotFoundError,
    RetriesExhaustedError,
    StorageRetriesSettings,
    StorageSettings,
    ThrottledError,
)
from icechunk_storage._observe import current_observer
from icechunk_storage._retry import RetryPolicy, call_with_retries


class _Ceiling(random.Random):
    """Returns the top of every ``uniform`` range: the backoff's ceiling."""

    def uniform(self, a: float, b: float) -> float:
        assert a == 0
        return b


def test_policy_from_settings_is_in_seconds() -> None:
    settings = StorageSettings(
        retries=StorageRetriesSettings(max_tries=4, initial_backoff_ms=250, max_backoff_ms=3000)
    )
    assert RetryPolicy.from_settings(settings) == RetryPolicy(4, 0.25, 3.0)


def test_backoff_ceiling_doubles_from_the_first_failure_and_is_capped() -> None:
    policy = RetryPolicy(max_tries=10, initial_backoff=0.1, max_backoff=1.0)
    ceilings = [policy.backoff(n, _Ceiling()) for n in range(0, 7)]
    assert ceilings == pytest.approx([0.1, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_backoff_is_uniform_between_zero_and_the_ceiling() -> None:
    policy = RetryPolicy(max_tries=10, initial_backoff=1.0, max_backoff=100.0)
    draws = [policy.backoff(3, random.Random(seed)) for seed in range(200)]
    assert all(0 <= d <= 4.0 for d in draws)
    assert min(draws) < 0.5
    assert max(draws) > 3.5
    # without an rng the module's random is used, within the same bounds
    assert 0 <= policy.backoff(3) <= 4.0


class _Recorder:
    def __init__(self) -> None:
        self.retries: list[tuple[str, int, BaseException]] = []

    def on_request(self, operation: str) -> None:
        pass

    def on_retry(self, operation: str, failed_attempts: int, error: BaseException) -> None:
        self.retries.append((operation, failed_attempts, error))


class _Attempts:
    """An attempt that raises ``errors`` in turn, then returns ``"ok"``; counts its calls."""

    def __init__(self, errors: list[BaseException]) -> None:
        self.errors = errors
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def test_transient_failures_are_retried_with_backoff_and_reported() -> None:
    first, second = ThrottledError("slow down"), ConnectionLostError("reset")
    attempt = _Attempts([first, second])
    sleeps: list[float] = []

    async def sleep(delay: float) -> None:
        sleeps.append(delay)

    recorder = _Recorder()
    token = current_observer.set(recorder)
    try:
        policy = RetryPolicy(max_tries=3, initial_backoff=0.5, max_backoff=10.0)
        result = await call_with_retries("get", "a/b", attempt, policy, sleep=sleep)
    finally:
        current_observer.reset(token)
    assert result == "ok"
    assert attempt.calls == 3
    assert recorder.retries == [("get", 1, first), ("get", 2, second)]
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= 0.5
    assert 0 <= sleeps[1] <= 1.0


async def test_the_budget_counts_the_first_attempt() -> None:
    errors: list[BaseException] = [ThrottledError(f"t{i}") for i in range(5)]
    last = errors[2]
    attempt = _Attempts(errors)
    sleeps: list[float] = []

    async def sleep(delay: float) -> None:
        sleeps.append(delay)

    policy = RetryPolicy(max_tries=3, initial_backoff=0.0, max_backoff=0.0)
    with pytest.raises(RetriesExhaustedError) as caught:
        await call_with_retries("put", "k", attempt, policy, sleep=sleep)
    assert attempt.calls == 3
    assert len(sleeps) == 2  # no sleep after the last attempt
    error = caught.value
    assert (error.operation, error.key, error.attempts) == ("put", "k", 3)
    assert error.last_error is last
    assert error.__cause__ is last


async def test_one_try_means_no_retry_and_no_observer_call() -> None:
    recorder = _Recorder()
    token = current_observer.set(recorder)
    try:
        attempt = _Attempts([ThrottledError("once")])
        policy = RetryPolicy(max_tries=1, initial_backoff=1.0, max_backoff=1.0)
        with pytest.raises(RetriesExhaustedError) as caught:
            await call_with_retries("get", "k", attempt, policy)
    finally:
        current_observer.reset(token)
    assert caught.value.attempts == 1
    assert recorder.retries == []


async def test_non_transient_errors_propagate_at_once() -> None:
    missing = ObjectNotFoundError("k")
    attempt = _Attempts([missing])
    policy = RetryPolicy(max_tries=5, initial_backoff=0.0, max_backoff=0.0)
    with pytest.raises(ObjectNotFoundError) as caught:
        await call_with_retries("get", "k", attempt, policy)
    assert caught.value is missing
    assert attempt.calls == 1


async def test_retries_without_an_observer_use_the_real_sleep() -> None:
    assert current_observer.get() is None
    attempt = _Attempts([ThrottledError("a")])
    policy = RetryPolicy(max_tries=2, initial_backoff=0.001, max_backoff=0.001)
    assert await call_with_retries("get", "k", attempt, policy) == "ok"
