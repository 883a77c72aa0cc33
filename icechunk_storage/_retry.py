"""The one retry loop: exponential backoff with full jitter, retrying only TransientError."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import attrs

from ._errors import EndpointUnreachableError, RetriesExhaustedError, TransientError
from ._observe import current_observer
from ._settings import StorageSettings

__all__ = ["REFUSED_MAX_TRIES", "RetryPolicy", "call_with_retries"]

REFUSED_MAX_TRIES = 3
"""Attempts at most for a refused connection (EndpointUnreachableError): with the default
backoff, a wrong endpoint fails in well under a second, naming it."""

T = TypeVar("T")


@attrs.frozen
class RetryPolicy:
    """Effective retry values, in seconds. Built from :class:`StorageRetriesSettings`."""

    max_tries: int
    initial_backoff: float
    max_backoff: float

    @classmethod
    def from_settings(cls, settings: StorageSettings) -> RetryPolicy:
        tries, initial_ms, max_ms = settings.effective_retries
        return cls(max_tries=tries, initial_backoff=initial_ms / 1000, max_backoff=max_ms / 1000)

    def backoff(self, failed_attempts: int, rng: random.Random | None = None) -> float:
        """Full jitter: uniform in [0, min(max, initial * 2**(failed_attempts-1))]."""
        ceiling = min(self.max_backoff, self.initial_backoff * 2 ** max(failed_attempts - 1, 0))
        return (rng or random).uniform(0, ceiling)


async def call_with_retries(
    operation: str,
    key: str,
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> T:
    """Run ``attempt`` until it returns, retrying TransientError up to ``policy.max_tries``.

    Anything that is not a TransientError propagates at once; a refused connection is tried
    at most :data:`REFUSED_MAX_TRIES` times. When the budget is spent,
    RetriesExhaustedError (carrying the number of attempts) chains the last failure.
    """
    failures = 0
    while True:
        try:
            return await attempt()
        except TransientError as exc:
            failures += 1
            limit = policy.max_tries
            if isinstance(exc, EndpointUnreachableError):
                limit = min(limit, REFUSED_MAX_TRIES)
            if failures >= limit:
                raise RetriesExhaustedError(operation, key, failures, exc) from exc
            observer = current_observer.get()
            if observer is not None:
                observer.on_retry(operation, failures, exc)
            await sleep(policy.backoff(failures))
