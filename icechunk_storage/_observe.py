"""A context-local observer that the shared machinery reports requests and retries to.

Wrappers such as :class:`InstrumentedStorage` set it for the duration of a call, so retries
and backend requests made deep inside that call are attributed to it, without flags.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Protocol

__all__ = ["StorageObserver", "current_observer"]


class StorageObserver(Protocol):
    def on_request(self, operation: str) -> None:
        """One request (one attempt) is about to go to the backend."""

    def on_retry(self, operation: str, failed_attempts: int, error: BaseException) -> None:
        """A transient failure will be retried."""


current_observer: ContextVar[StorageObserver | None] = ContextVar(
    "icechunk_storage_observer", default=None
)
