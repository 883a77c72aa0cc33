"""The wrappers against the conformance suite: a wrapper must keep every promise of the
storage it wraps (``InstrumentedStorage``, ``LatencyStorage``), and ``ReadOnlyStorage``
must pass the read-only suite over memory and the local filesystem."""

from __future__ import annotations

from pathlib import Path

import pytest

from icechunk_storage import (
    InstrumentedStorage,
    LatencyStorage,
    LocalFileSystemStorage,
    MemoryStorage,
    ReadOnlyStorage,
    Storage,
    WrappedStorage,
    in_memory_storage,
    local_filesystem_storage,
)
from icechunk_storage.testing import ReadOnlyStorageConformance, StorageConformance


def _inner(storage: Storage) -> Storage:
    while isinstance(storage, WrappedStorage):
        storage = storage.inner
    return storage


class _OverMemory:
    async def raw_put(self, storage: Storage, key: str, data: bytes) -> None:
        inner = _inner(storage)
        assert isinstance(inner, MemoryStorage)
        await inner.put(key, data)

    async def raw_get(self, storage: Storage, key: str) -> bytes | None:
        inner = _inner(storage)
        assert isinstance(inner, MemoryStorage)
        entry = inner._objects.get(key)
        return bytes(entry.data) if entry is not None else None


class TestInstrumentedStorage(_OverMemory, StorageConformance):
    @pytest.fixture
    def storage(self) -> Storage:
        return InstrumentedStorage(in_memory_storage())


class TestLatencyStorage(_OverMemory, StorageConformance):
    many_keys = 500

    @pytest.fixture
    def storage(self) -> Storage:
        return LatencyStorage(in_memory_storage(), latency=0.0)


class TestReadOnlyOverMemory(_OverMemory, ReadOnlyStorageConformance):
    @pytest.fixture
    def storage(self) -> Storage:
        return ReadOnlyStorage(in_memory_storage())


class TestReadOnlyOverLocal(ReadOnlyStorageConformance):
    @pytest.fixture
    def storage(self, tmp_path: Path) -> Storage:
        return ReadOnlyStorage(local_filesystem_storage(tmp_path / "root"))

    def _root(self, storage: Storage) -> Path:
        inner = _inner(storage)
        assert isinstance(inner, LocalFileSystemStorage)
        return Path(inner.root)

    async def raw_put(self, storage: Storage, key: str, data: bytes) -> None:
        path = self._root(storage) / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    async def raw_get(self, storage: Storage, key: str) -> bytes | None:
        path = self._root(storage) / key
        return path.read_bytes() if path.exists() else None
