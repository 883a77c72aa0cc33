"""Cross-cutting behaviour by wrapping a storage, never by flags.

:class:`WrappedStorage` forwards every method of the contract to ``inner``; a wrapper
subclass overrides only what it changes. A test checks that it forwards *every* abstract
method, so a wrapper can never silently fall back to a slower default.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Generic, Self, TypeVar

import attrs

from ._errors import ReadOnlyStorageError
from ._observe import StorageObserver, current_observer
from ._ranges import ByteRequest
from ._settings import StorageSettings
from ._storage import (
    Capabilities,
    Data,
    DeleteResult,
    GetResult,
    ListResult,
    ObjectInfo,
    PutMode,
    Storage,
    VersionInfo,
)

__all__ = [
    "InstrumentedStorage",
    "LatencyStorage",
    "OperationStats",
    "ReadOnlyStorage",
    "WrappedStorage",
]

S = TypeVar("S", bound=Storage)


class WrappedStorage(Storage, Generic[S]):
    """Forwards everything to ``inner``. Override ``_with_inner`` if the wrapper has state."""

    def __init__(self, inner: S) -> None:
        if not isinstance(inner, Storage):
            raise TypeError(f"WrappedStorage needs a Storage, got {type(inner).__name__}.")
        self.inner = inner

    def _with_inner(self, inner: S) -> Self:
        """A wrapper like this one around another inner storage."""
        return type(self)(inner)

    @property
    def prefix(self) -> str:
        return self.inner.prefix

    @property
    def settings(self) -> StorageSettings:
        return self.inner.settings

    def default_settings(self) -> StorageSettings:
        return self.inner.default_settings()

    @property
    def user_settings(self) -> StorageSettings | None:
        return self.inner.user_settings

    def with_settings(self, settings: StorageSettings | None) -> Self:
        return self._with_inner(self.inner.with_settings(settings))

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    async def get(self, key: str, byte_range: ByteRequest | None = None) -> GetResult:
        return await self.inner.get(key, byte_range)

    async def get_if_changed(self, key: str, version: VersionInfo) -> GetResult | None:
        return await self.inner.get_if_changed(key, version)

    async def head(self, key: str) -> ObjectInfo:
        return await self.inner.head(key)

    async def exists(self, key: str) -> bool:
        return await self.inner.exists(key)

    async def get_many(
        self,
        requests: Iterable[tuple[str, ByteRequest | None]],
        *,
        missing_ok: bool = False,
        max_concurrency: int | None = None,
    ) -> list[Data | None]:
        return await self.inner.get_many(
            requests, missing_ok=missing_ok, max_concurrency=max_concurrency
        )

    async def put(
        self,
        key: str,
        data: Data,
        *,
        mode: PutMode = "overwrite",
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> VersionInfo:
        return await self.inner.put(
            key, data, mode=mode, content_type=content_type, metadata=metadata
        )

    async def copy(
        self, source: str, destination: str, *, if_version: VersionInfo | None = None
    ) -> VersionInfo:
        return await self.inner.copy(source, destination, if_version=if_version)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def delete_many(
        self, items: Iterable[str | ObjectInfo] | AsyncIterable[str | ObjectInfo]
    ) -> DeleteResult:
        return await self.inner.delete_many(items)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        async for info in self.inner.list(prefix):
            yield info

    async def list_dir(self, prefix: str = "") -> ListResult:
        return await self.inner.list_dir(prefix)

    async def flush(self, keys: Iterable[str]) -> None:
        await self.inner.flush(keys)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, WrappedStorage)
        return bool(self.inner == other.inner)

    def __hash__(self) -> int:
        return hash((type(self), self.inner))


class LatencyStorage(WrappedStorage[S]):
    """Sleeps ``latency`` seconds before every call: slow networks in tests."""

    def __init__(self, inner: S, latency: float) -> None:
        super().__init__(inner)
        if latency < 0:
            raise ValueError(f"latency must be >= 0 seconds, got {latency}.")
        self.latency = latency

    def _with_inner(self, inner: S) -> Self:
        return type(self)(inner, self.latency)

    async def get(self, key: str, byte_range: ByteRequest | None = None) -> GetResult:
        await asyncio.sleep(self.latency)
        return await super().get(key, byte_range)

    async def head(self, key: str) -> ObjectInfo:
        await asyncio.sleep(self.latency)
        return await super().head(key)

    async def put(
        self,
        key: str,
        data: Data,
        *,
        mode: PutMode = "overwrite",
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> VersionInfo:
        await asyncio.sleep(self.latency)
        return await super().put(key, data, mode=mode, content_type=content_type, metadata=metadata)

    async def get_many(
        self,
        requests: Iterable[tuple[str, ByteRequest | None]],
        *,
        missing_ok: bool = False,
        max_concurrency: int | None = None,
    ) -> list[Data | None]:
        await asyncio.sleep(self.latency)
        return await super().get_many(
            requests, missing_ok=missing_ok, max_concurrency=max_concurrency
        )


class ReadOnlyStorage(WrappedStorage[S]):
    """Reads pass through; every write is refused with ReadOnlyStorageError before any I/O.

    For handing a storage to code that must not change it (readers, dashboards, a dask
    graph that only loads): a guarantee of this process, not of the credentials."""

    @property
    def capabilities(self) -> Capabilities:
        return attrs.evolve(
            self.inner.capabilities,
            can_write=False,
            conditional_create=False,
            conditional_update=False,
        )

    def _refuse(self, what: str) -> ReadOnlyStorageError:
        return ReadOnlyStorageError(f"{self!r} is read-only; {what} was refused.")

    async def put(
        self,
        key: str,
        data: Data,
        *,
        mode: PutMode = "overwrite",
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> VersionInfo:
        raise self._refuse(f"put of {key!r}")

    async def copy(
        self, source: str, destination: str, *, if_version: VersionInfo | None = None
    ) -> VersionInfo:
        raise self._refuse(f"copy of {source!r} to {destination!r}")

    async def delete(self, key: str) -> None:
        raise self._refuse(f"delete of {key!r}")

    async def delete_many(
        self, items: Iterable[str | ObjectInfo] | AsyncIterable[str | ObjectInfo]
    ) -> DeleteResult:
        raise self._refuse("delete_many")


@attrs.define
class OperationStats:
    """Counters for one operation name."""

    calls: int = 0
    errors: int = 0
    requests: int = 0
    retries: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    total_seconds: float = 0.0
    max_seconds: float = 0.0

    @property
    def mean_seconds(self) -> float:
        return self.total_seconds / self.calls if self.calls else 0.0


class InstrumentedStorage(WrappedStorage[S]):
    """Counts calls, backend requests, retries, errors and bytes, and times each operation.

    ``stats`` maps an operation name (``get``, ``get_many``, ``put`` ...) to its
    :class:`OperationStats`. Backend requests and retries made inside a call (range parts,
    retried attempts) are attributed to it. Read ``stats`` to see what a loader really does.
    """

    def __init__(self, inner: S) -> None:
        super().__init__(inner)
        self.stats: defaultdict[str, OperationStats] = defaultdict(OperationStats)

    def _with_inner(self, inner: S) -> Self:
        """``with_settings`` copies count into the same ``stats``."""
        wrapper = type(self)(inner)
        wrapper.stats = self.stats
        return wrapper

    def reset(self) -> None:
        self.stats.clear()

    def totals(self) -> OperationStats:
        total = OperationStats()
        for stats in self.stats.values():
            for field in attrs.fields(OperationStats):
                if field.name != "max_seconds":
                    setattr(
                        total, field.name, getattr(total, field.name) + getattr(stats, field.name)
                    )
            total.max_seconds = max(total.max_seconds, stats.max_seconds)
        return total

    @contextmanager
    def _measure(self, operation: str, *, observe: bool = True) -> Iterator[OperationStats]:
        """Count and time one call; attribute backend requests and retries inside it.

        ``observe=False`` for async generators, whose steps may run in other contexts.
        """
        stats = self.stats[operation]
        stats.calls += 1
        token = None
        if observe:  # nested wrappers each count: the observer chains to the outer one
            token = current_observer.set(_Attributing(self, operation, current_observer.get()))
        started = time.perf_counter()
        try:
            yield stats
        except BaseException:
            stats.errors += 1
            raise
        finally:
            elapsed = time.perf_counter() - started
            stats.total_seconds += elapsed
            stats.max_seconds = max(stats.max_seconds, elapsed)
            if token is not None:
                current_observer.reset(token)

    async def get(self, key: str, byte_range: ByteRequest | None = None) -> GetResult:
        with self._measure("get") as stats:
            result = await super().get(key, byte_range)
            stats.bytes_read += len(result.data)
            return result

    async def get_if_changed(self, key: str, version: VersionInfo) -> GetResult | None:
        with self._measure("get_if_changed") as stats:
            result = await super().get_if_changed(key, version)
            stats.bytes_read += len(result.data) if result is not None else 0
            return result

    async def head(self, key: str) -> ObjectInfo:
        with self._measure("head"):
            return await super().head(key)

    async def exists(self, key: str) -> bool:
        with self._measure("exists"):
            return await super().exists(key)

    async def get_many(
        self,
        requests: Iterable[tuple[str, ByteRequest | None]],
        *,
        missing_ok: bool = False,
        max_concurrency: int | None = None,
    ) -> list[Data | None]:
        with self._measure("get_many") as stats:
            results = await super().get_many(
                requests, missing_ok=missing_ok, max_concurrency=max_concurrency
            )
            stats.bytes_read += sum(len(r) for r in results if r is not None)
            return results

    async def put(
        self,
        key: str,
        data: Data,
        *,
        mode: PutMode = "overwrite",
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> VersionInfo:
        with self._measure("put") as stats:
            version = await super().put(
                key, data, mode=mode, content_type=content_type, metadata=metadata
            )
            stats.bytes_written += len(data)
            return version

    async def copy(
        self, source: str, destination: str, *, if_version: VersionInfo | None = None
    ) -> VersionInfo:
        with self._measure("copy"):
            return await super().copy(source, destination, if_version=if_version)

    async def delete(self, key: str) -> None:
        with self._measure("delete"):
            await super().delete(key)

    async def delete_many(
        self, items: Iterable[str | ObjectInfo] | AsyncIterable[str | ObjectInfo]
    ) -> DeleteResult:
        with self._measure("delete_many"):
            return await super().delete_many(items)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Each step of the inner listing runs with this wrapper's observer set and reset
        within the step (never across a ``yield``, where the consumer's context may differ),
        so the page requests are counted."""
        with self._measure("list", observe=False):
            pages = self.inner.list(prefix).__aiter__()
            while True:
                token = current_observer.set(_Attributing(self, "list", current_observer.get()))
                try:
                    info = await pages.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    current_observer.reset(token)
                yield info

    async def list_dir(self, prefix: str = "") -> ListResult:
        with self._measure("list_dir"):
            return await super().list_dir(prefix)


@attrs.frozen
class _Attributing:
    """Observer that charges requests and retries to one operation of one wrapper."""

    owner: InstrumentedStorage[Any]
    operation: str
    outer: StorageObserver | None = None

    def on_request(self, operation: str) -> None:
        self.owner.stats[self.operation].requests += 1
        if self.outer is not None:
            self.outer.on_request(operation)

    def on_retry(self, operation: str, failed_attempts: int, error: BaseException) -> None:
        self.owner.stats[self.operation].retries += 1
        if self.outer is not None:
            self.outer.on_retry(operation, failed_attempts, error)
