"""In-memory storage: a dict per instance. For tests, examples and scratch data.

Every operation completes without awaiting anything between its check and its change, so
conditional create and update are atomic under asyncio. A pickled copy carries the data it
had then; copies do not share later writes (dask workers each get their own copy).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import ClassVar

import attrs

from ._backend import BaseStorage, ListPage
from ._errors import (
    AlreadyExistsError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageError,
)
from ._ranges import ByteRequest, resolve_range
from ._settings import (
    DEFAULT_STORAGE_SETTINGS,
    StorageConcurrencySettings,
    StorageRetriesSettings,
    StorageSettings,
)
from ._storage import Capabilities, Data, GetResult, ObjectInfo, PutMode, VersionInfo

__all__ = ["MemoryStorage", "in_memory_storage"]


def _new_etag() -> str:
    """A version no other write in any process made: a pickled storage lives on in other
    processes (dask workers), where a counter would start again and hand out the version
    of an older object, letting a stale compare-and-swap through."""
    return '"' + uuid.uuid4().hex + '"'


LOCAL_DEFAULTS = DEFAULT_STORAGE_SETTINGS.merge(
    StorageSettings(
        concurrency=StorageConcurrencySettings(
            max_concurrent_requests_for_object=8, ideal_concurrent_request_size=16 * 1024 * 1024
        ),
        retries=StorageRetriesSettings(max_tries=1, initial_backoff_ms=0, max_backoff_ms=0),
    )
)
"""Defaults for storages without a network: one try, and no splitting of reads below 16 MiB.

Icechunk splits memory reads into 1-byte parts and local reads into 4 KiB parts by default;
that multiplies the cost of every chunk read for no gain, so we do not.
"""


@attrs.frozen
class _Entry:
    data: bytes
    version: VersionInfo
    last_modified: datetime
    content_type: str | None
    metadata: Mapping[str, str]

    def info(self, path: str) -> ObjectInfo:
        return ObjectInfo(
            key=path,
            size=len(self.data),
            last_modified=self.last_modified,
            version=self.version,
            content_type=self.content_type,
            metadata=self.metadata,
        )


def slice_range(data: bytes, byte_range: ByteRequest | None) -> bytes:
    """Apply a byte range to data already in memory (no copy for a whole-object read)."""
    start, end = resolve_range(byte_range, len(data))
    return data if (start, end) == (0, len(data)) else data[start:end]


class MemoryStorage(BaseStorage):
    """Objects in a dict. Construct with :func:`in_memory_storage`."""

    backend_name = "memory"
    native_capabilities: ClassVar[Capabilities] = Capabilities(shared_across_processes=False)
    _read_batch_size: ClassVar[int] = 256

    def __init__(self, *, settings: StorageSettings | None = None) -> None:
        super().__init__(prefix=None, settings=settings)
        self._objects: dict[str, _Entry] = {}

    def default_settings(self) -> StorageSettings:
        return LOCAL_DEFAULTS

    def _describe(self) -> str:
        return f"memory://{id(self._objects):x}"

    def _config_key(self) -> object:
        return self._objects

    def __hash__(self) -> int:
        return hash(type(self))

    def _lookup(self, path: str) -> _Entry:
        try:
            return self._objects[path]
        except KeyError:
            raise ObjectNotFoundError(path) from None

    async def _get_object(self, path: str, byte_range: ByteRequest | None) -> GetResult:
        entry = self._lookup(path)
        return GetResult(slice_range(entry.data, byte_range), entry.version)

    async def _get_objects(
        self, requests: list[tuple[str, ByteRequest | None]]
    ) -> list[GetResult | StorageError]:
        results: list[GetResult | StorageError] = []
        for path, byte_range in requests:
            try:
                entry = self._lookup(path)
                results.append(GetResult(slice_range(entry.data, byte_range), entry.version))
            except StorageError as exc:
                results.append(exc)
        return results

    async def _get_object_if_changed(self, path: str, version: VersionInfo) -> GetResult | None:
        entry = self._lookup(path)
        return None if entry.version == version else GetResult(entry.data, entry.version)

    async def _head_object(self, path: str) -> ObjectInfo:
        return self._lookup(path).info(path)

    async def _put_object(
        self,
        path: str,
        data: Data,
        mode: PutMode,
        content_type: str | None,
        metadata: Mapping[str, str],
    ) -> VersionInfo:
        current = self._objects.get(path)
        if mode == "create" and current is not None:
            raise AlreadyExistsError(path)
        if isinstance(mode, VersionInfo) and (current is None or current.version != mode):
            raise PreconditionFailedError(path, mode)
        version = VersionInfo(etag=_new_etag())
        self._objects[path] = _Entry(
            bytes(data), version, datetime.now(UTC), content_type, dict(metadata)
        )
        return version

    async def _copy_object(
        self, source: str, destination: str, version: VersionInfo | None
    ) -> VersionInfo:
        entry = self._lookup(source)
        if version is not None and entry.version != version:
            raise PreconditionFailedError(source, version)
        new_version = VersionInfo(etag=_new_etag())
        self._objects[destination] = attrs.evolve(
            entry, version=new_version, last_modified=datetime.now(UTC)
        )
        return new_version

    async def _list_page(
        self, path_prefix: str, delimiter: str | None, token: str | None
    ) -> ListPage:
        """The whole listing is one page: it is already in memory."""
        objects: list[ObjectInfo] = []
        prefixes: set[str] = set()
        for path, entry in self._objects.items():
            if not path.startswith(path_prefix):
                continue
            if delimiter is not None:
                head, sep, _ = path[len(path_prefix) :].partition(delimiter)
                if sep:
                    prefixes.add(path_prefix + head + delimiter)
                    continue
            objects.append(entry.info(path))
        return ListPage(objects=objects, prefixes=sorted(prefixes))

    async def _delete_objects(
        self, paths: list[str]
    ) -> tuple[dict[str, int | None], dict[str, str]]:
        deleted: dict[str, int | None] = {}
        for path in paths:
            entry = self._objects.pop(path, None)
            if entry is not None:
                deleted[path] = len(entry.data)
        return deleted, {}


def in_memory_storage() -> MemoryStorage:
    """A new, empty in-memory storage. Instances never share data."""
    return MemoryStorage()
