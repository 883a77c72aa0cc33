"""The ``Storage`` contract: what every backend offers, documented once.

Users program against :class:`Storage`. Backends subclass :class:`BaseStorage`
(``_backend.py``), which implements this contract once (key checks, prefixing, retries,
range splitting, the request limit, conditional-write rules, lost-response recovery) on top
of a handful of small ``_primitives`` that a backend writes. Wrappers subclass
:class:`WrappedStorage` (``_wrappers.py``) and forward to an inner storage.

Keys
    Relative to the storage's prefix, ``/``-separated, never absolute, never with empty,
    ``.`` or ``..`` segments or control characters (:class:`InvalidKeyError`).

Missing objects
    ``get``, ``head`` and ``copy`` raise :class:`ObjectNotFoundError` (a FileNotFoundError);
    ``delete`` and ``delete_many`` treat a missing key as already deleted; ``get_many`` raises
    unless ``missing_ok=True``, which gives ``None`` for a missing key.

Byte ranges
    ``RangeByteRequest(start, end)`` (end exclusive), ``OffsetByteRequest(offset)``,
    ``SuffixByteRequest(n)``. A range running past the end is truncated; a suffix longer than
    the object returns the whole object; a range starting exactly at the end returns no bytes;
    one starting past the end raises :class:`RangeNotSatisfiableError`.

Versions
    Every read and write reports a :class:`VersionInfo` (an etag, and a generation on GCS),
    kept verbatim, quotes included. Pass it back as ``put(..., mode=version)`` for
    compare-and-swap, to ``copy(..., if_version=...)``, or to ``get_if_changed``.

Write modes
    ``"overwrite"`` (default), ``"create"`` (fails with :class:`AlreadyExistsError` if the
    key holds an object), or a :class:`VersionInfo` (fails with
    :class:`PreconditionFailedError` unless the object is still at that version). With
    ``unsafe_use_conditional_create/update=False`` the condition is dropped and the write
    overwrites: for stores without conditional writes, at the cost of lost updates.

Lifecycle
    Constructing a storage does no I/O. Clients and sessions are built lazily, per event loop
    and per process; ``await storage.aclose()`` or ``async with storage:`` releases them.
    Storages pickle by configuration (and memory storages with their data).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Literal, Self

import attrs

from ._ranges import ByteRequest
from ._settings import StorageSettings

__all__ = [
    "Capabilities",
    "Data",
    "DeleteResult",
    "GetResult",
    "ListResult",
    "ObjectInfo",
    "PutMode",
    "Storage",
    "VersionInfo",
]


@attrs.frozen
class VersionInfo:
    """The version of one object: its etag as the server sent it, and/or a GCS generation.

    ``VersionInfo()`` (both None) means "no object yet" and, as a put mode, is the same as
    ``"create"``.
    """

    etag: str | None = None
    generation: str | None = None

    @property
    def is_for_creation(self) -> bool:
        return self.etag is None and self.generation is None

    def __str__(self) -> str:
        parts = [f"etag {self.etag}"] if self.etag is not None else []
        if self.generation is not None:
            parts.append(f"generation {self.generation}")
        return ", ".join(parts) or "absent"


@attrs.frozen
class ObjectInfo:
    """One object: key relative to the storage prefix, size, last-modified, version."""

    key: str
    size: int
    last_modified: datetime | None = None
    version: VersionInfo = VersionInfo()
    content_type: str | None = attrs.field(default=None, eq=False)
    metadata: Mapping[str, str] = attrs.field(factory=dict, eq=False, hash=False)


@attrs.frozen
class GetResult:
    """Bytes read (see ``Data``) and the version they were read at."""

    data: Data
    version: VersionInfo


@attrs.frozen
class ListResult:
    """One level of a delimited listing: objects directly under the prefix, and sub-prefixes."""

    objects: list[ObjectInfo]
    prefixes: list[str]


@attrs.frozen
class DeleteResult:
    """What ``delete_many`` did. ``errors`` maps each key that could not be deleted to why."""

    deleted_objects: int = 0
    deleted_bytes: int = 0
    errors: Mapping[str, str] = attrs.field(factory=dict, hash=False)

    def __add__(self, other: DeleteResult) -> DeleteResult:
        return DeleteResult(
            deleted_objects=self.deleted_objects + other.deleted_objects,
            deleted_bytes=self.deleted_bytes + other.deleted_bytes,
            errors={**self.errors, **other.errors},
        )


@attrs.frozen(kw_only=True)
class Capabilities:
    """What a storage honours, with its current settings applied.

    ``conditional_create``/``conditional_update`` are False when the backend lacks them or
    the settings switch them off; writes in those modes then overwrite.
    ``shared_across_processes``: a copy of this storage unpickled in another process sees the
    same objects (False for memory). ``requires_prefix_for_repository``: a cloud object
    store, where a repository at the bucket root (an empty prefix) is refused.
    """

    can_write: bool = True
    conditional_create: bool = True
    conditional_update: bool = True
    conditional_read: bool = True
    shared_across_processes: bool = True
    requires_prefix_for_repository: bool = False


PutMode = Literal["overwrite", "create"] | VersionInfo
"""``"overwrite"``, ``"create"`` (only if absent), or a VersionInfo (only if still at it)."""

Data = bytes | bytearray | memoryview
"""Bytes-like data: what ``put`` takes and what reads return. Reads never copy just to change
the type: small reads are ``bytes``; large ones a ``bytearray`` or, for reads in parts, a
``memoryview`` of the one buffer the parts were read into. ``bytes(data)`` when you need
``bytes``."""


class Storage(abc.ABC):
    """The async storage contract. See the module docstring for keys, ranges and versions."""

    # --- configuration -------------------------------------------------------------------

    @property
    @abc.abstractmethod
    def prefix(self) -> str:
        """The prefix every key is relative to, without leading or trailing ``/``."""

    @property
    @abc.abstractmethod
    def settings(self) -> StorageSettings:
        """Effective settings: the user's (``with_settings``) over ``default_settings()``."""

    @abc.abstractmethod
    def default_settings(self) -> StorageSettings:
        """This backend's defaults, fully populated."""

    @property
    def user_settings(self) -> StorageSettings | None:
        """The settings given by the user (at construction or ``with_settings``), if any."""
        return None

    @abc.abstractmethod
    def with_settings(self, settings: StorageSettings | None) -> Self:
        """A storage on the same location (and data) whose user settings are ``settings``."""

    @property
    @abc.abstractmethod
    def capabilities(self) -> Capabilities:
        """What this storage honours with its current settings."""

    # --- reads -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def get(self, key: str, byte_range: ByteRequest | None = None) -> GetResult:
        """Read the object, or a byte range of it, with the version it was read at.

        A bounded range larger than ``ideal_concurrent_request_size`` is read as concurrent
        parts into one buffer; if the object changes between parts the read is retried.

        Raises ObjectNotFoundError, RangeNotSatisfiableError, InvalidKeyError.
        """

    @abc.abstractmethod
    async def get_if_changed(self, key: str, version: VersionInfo) -> GetResult | None:
        """``None`` if the object is still at ``version`` (no body transferred), else the object.

        Raises ObjectNotFoundError if the object is gone.
        """

    @abc.abstractmethod
    async def head(self, key: str) -> ObjectInfo:
        """Size, last-modified, version, content type and user metadata, without the body.

        Raises ObjectNotFoundError.
        """

    async def exists(self, key: str) -> bool:
        """True if the key holds an object."""
        from ._errors import ObjectNotFoundError

        try:
            await self.head(key)
        except ObjectNotFoundError:
            return False
        return True

    @abc.abstractmethod
    async def get_many(
        self,
        requests: Iterable[tuple[str, ByteRequest | None]],
        *,
        missing_ok: bool = False,
        max_concurrency: int | None = None,
    ) -> list[Data | None]:
        """The chunk fetch path: read many ``(key, byte range)`` pairs, results in request order.

        Requests run concurrently under the process-wide request limit, and at most
        ``max_concurrency`` at a time for this call when given; large ranges are split and
        reassembled; the first error cancels the rest and is raised, and no task outlives the
        call. A missing key raises ObjectNotFoundError, or gives None with ``missing_ok=True``.
        """

    # --- writes ----------------------------------------------------------------------------

    @abc.abstractmethod
    async def put(
        self,
        key: str,
        data: Data,
        *,
        mode: PutMode = "overwrite",
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> VersionInfo:
        """Write the whole object atomically and return its new version.

        Raises AlreadyExistsError (mode "create"), PreconditionFailedError (mode VersionInfo:
        the object is at another version or gone), ReadOnlyStorageError.
        """

    @abc.abstractmethod
    async def copy(
        self, source: str, destination: str, *, if_version: VersionInfo | None = None
    ) -> VersionInfo:
        """Server-side copy, only if ``source`` is still at ``if_version`` (when given).

        Raises ObjectNotFoundError (no source), PreconditionFailedError, ReadOnlyStorageError.
        """

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Delete one object; a missing key is not an error."""

    @abc.abstractmethod
    async def delete_many(
        self, items: Iterable[str | ObjectInfo] | AsyncIterable[str | ObjectInfo]
    ) -> DeleteResult:
        """Delete many objects in batches, concurrently. Missing keys are not errors.

        ``deleted_bytes`` adds up the sizes of the ObjectInfo items (as ``list`` gives them);
        for bare keys only backends that learn sizes while deleting (memory, local) count
        bytes. Keys that failed are reported in ``errors``, never silently dropped.
        """

    # --- listing ---------------------------------------------------------------------------

    @abc.abstractmethod
    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every object under ``prefix``, recursively, keys relative to the storage prefix.

        ``"a"`` and ``"a/"`` list the same (whole segments: not ``ab``); ``""`` and ``"/"``
        list everything. Order is unspecified.
        """

    @abc.abstractmethod
    async def list_dir(self, prefix: str = "") -> ListResult:
        """One level under ``prefix`` (delimiter ``/``): objects, and sub-prefixes ending in ``/``.

        Keys and prefixes are relative to the storage prefix.
        """

    # --- durability ------------------------------------------------------------------------

    async def flush(self, keys: Iterable[str]) -> None:
        """Make the objects at ``keys`` durable. Object stores make every write durable before
        answering it (this default does nothing); the local filesystem does not fsync plain
        writes, and fsyncs them here."""
        del keys  # nothing to do: durable on return

    # --- lifecycle -------------------------------------------------------------------------

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release connections held for the running loop. The storage stays usable."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
