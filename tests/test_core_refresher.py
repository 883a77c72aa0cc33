"""The credential refresher's helpers and bookkeeping (``_refresher``), without threads where
possible: error text, exception copies, what counts as an async callback, statistics lookup,
refusals, and which carried credential is adopted."""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from icechunk_storage import CredentialsRefreshError, RefreshStats
from icechunk_storage._credentials import S3Credentials, S3StaticCredentials
from icechunk_storage._errors import ConfigurationError
from icechunk_storage._refresher import (
    Refresher,
    _copy,
    _error_text,
    _is_async,
    backoff_delay,
)

from ._credential_helpers import START, FakeClock, failing_callback, static_s3_credential


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
