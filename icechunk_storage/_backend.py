"""``BaseStorage``: the Storage contract implemented once, over a few backend primitives.

Writing a backend means subclassing BaseStorage and writing these primitives. They receive
*paths* (the key already validated and joined to the prefix), make **one request each**, and
translate native errors into the ``_errors`` tree (transient failures as TransientError).
The base then applies every rule once, for every backend: the retry loop, the process-wide
request limit, timeouts, the write-id read-back after a lost response, range splitting, and
error context (``StorageError.operation`` and ``.key``, the user's key relative to the
prefix). A failed page of a listing or part of an upload is retried alone.

==================================  ========================================================
``_get_object(path, range)``        one GET; truncate a range past the end;
                                    RangeNotSatisfiableError if it starts past the end (the
                                    base turns "starts exactly at the end" into empty)
``_head_object(path)``              ObjectInfo with the key set to the path
``_put_object(path, data, mode,``   one atomic write; mode is "overwrite", "create" or a
``content_type, metadata)``         VersionInfo; AlreadyExistsError / PreconditionFailedError.
                                    A conditional write is sent once, never again inside
                                    the primitive: a refusal on the only send is final
                                    (the base looks for its own write only after a retry)
``_copy_object(src, dst, v)``       server-side copy, conditional on the source's version
``_list_page(prefix, delim, tok)``  one page of a listing: :class:`ListPage` (keys are
                                    paths); ``prefix`` is "" or ends with "/"
``_delete_objects(paths)``          one batch; returns ({deleted path: size or None},
                                    {path: why})
``_describe()``                     location for repr, never a secret
``_config_key()``                   what equality compares
==================================  ========================================================

Optional primitives, with working defaults: ``_get_object_if_changed`` (default: HEAD then
GET, racy), ``_read_into`` (default: GET then copy; return the object's size when the
response tells it, so split reads can check their parts agree), ``_get_objects`` (a batch of
small reads in one go: set ``_read_batch_size`` > 0), ``_aclose``, ``_reset_runtime``
(rebuild nothing eagerly: just forget live clients).

Large writes in steps (set ``_supports_multipart_upload``; writes of at least
``minimum_size_for_multipart_upload`` bytes use them): ``_multipart_start`` returns an
upload handle, ``_multipart_part`` uploads one part and returns its receipt,
``_multipart_complete`` applies the write's condition and returns the version,
``_multipart_abort`` discards the upload. ``_multipart_ranges`` chooses the parts;
``_multipart_concurrent_parts = False`` sends them one at a time, in order (GCS resumable
uploads). The base runs each step through the retry loop, aborts on any failure, and turns
a completion that finds its upload gone (``MultipartUploadVanishedError``: its first
response was lost) into success when the object carries our write id.
"""

from __future__ import annotations

import abc
import asyncio
import builtins
import contextlib
import copy
import functools
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, ClassVar, Self, TypeVar

import attrs

from ._buffers import allocate_buffer
from ._errors import (
    ConditionFailedError,
    ConfigurationError,
    MultipartUploadVanishedError,
    ObjectNotFoundError,
    RangeNotSatisfiableError,
    ReadOnlyStorageError,
    ResponseIntegrityError,
    RetriesExhaustedError,
    StorageError,
    StorageTimeoutError,
    TransientError,
)
from ._fetch import fetch_many, first_error, run_bounded
from ._keys import join_key, normalize_list_prefix, normalize_prefix, strip_prefix, validate_key
from ._limits import request_slots
from ._observe import current_observer
from ._random import random_hex
from ._ranges import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    SuffixByteRequest,
    check_byte_request,
    split_for_multipart,
    split_range,
)
from ._redact import scrub_exception
from ._retry import RetryPolicy, call_with_retries
from ._settings import DEFAULT_STORAGE_SETTINGS, StorageSettings
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
from ._transport import describe_range

__all__ = ["WRITE_ID_METADATA_KEY", "BaseStorage", "ListPage", "OneGetPerRead"]

T = TypeVar("T")


WRITE_ID_METADATA_KEY = "icechunk_write_id"
"""User metadata stamped on every conditional write, to recognise our own write after a lost
response (underscores because Azure refuses dashes; S3 lowercases keys)."""


@attrs.frozen
class ListPage:
    """One page of a listing, as a backend returns it: keys are full paths, ``prefixes``
    (only for a delimited listing) end with "/", ``next_token`` is None on the last page.

    A backend that builds many ObjectInfos per page may cut the storage prefix off their keys
    itself (``_key_cut`` characters) and say so with ``keys_relative``: the base then hands
    them out as they are instead of building each one a second time."""

    objects: builtins.list[ObjectInfo]
    prefixes: builtins.list[str] = attrs.field(factory=list)
    next_token: str | None = None
    keys_relative: bool = False


def check_put_data(data: object) -> None:
    """``put`` takes bytes-like data only (a str or a list is a caller's bug)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(
            f"put() expects bytes, bytearray or memoryview data, got {type(data).__name__}."
        )


def effective_write_mode(
    mode: PutMode, settings: StorageSettings, native: Capabilities, owner: object
) -> PutMode:
    """The write mode a put really uses: a VersionInfo for creation means "create"; with the
    unsafe flags a condition is dropped (overwrite); a condition the backend cannot honour
    is refused with the flag that would drop it. Shared by every Storage that takes modes."""
    if isinstance(mode, VersionInfo):
        if mode.is_for_creation:
            mode = "create"
    elif mode not in ("overwrite", "create"):
        raise ConfigurationError(
            f"mode must be 'overwrite', 'create' or a VersionInfo, got {mode!r}."
        )
    if mode == "create":
        if not settings.conditional_create:
            return "overwrite"
        if not native.conditional_create:
            raise ConfigurationError(
                f"{owner!r} cannot create conditionally; set "
                "StorageSettings(unsafe_use_conditional_create=False) to overwrite instead."
            )
    elif isinstance(mode, VersionInfo):
        if not settings.conditional_update:
            return "overwrite"
        if not native.conditional_update:
            raise ConfigurationError(
                f"{owner!r} cannot update conditionally; set "
                "StorageSettings(unsafe_use_conditional_update=False) to overwrite instead."
            )
    return mode


class BaseStorage(Storage):
    """Shared machinery; see the module docstring for what a backend writes."""

    backend_name: ClassVar[str] = "storage"
    native_capabilities: ClassVar[Capabilities] = Capabilities()
    requires_prefix_for_repository: ClassVar[bool] = False
    """True for cloud object stores (S3, GCS, Azure): a repository at the bucket root (an
    empty prefix) is refused, as Icechunk does since v2.1.0."""
    _delete_batch_size: ClassVar[int] = 1000
    _delete_batch_concurrency: ClassVar[int] = 10
    _read_batch_size: ClassVar[int] = 0
    _supports_multipart_upload: ClassVar[bool] = False
    _multipart_concurrent_parts: ClassVar[bool] = True
    _runtime_attributes: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        *,
        prefix: str | None = None,
        settings: StorageSettings | None = None,
        read_only: bool = False,
    ) -> None:
        self._prefix = normalize_prefix(prefix)
        if settings is not None and not isinstance(settings, StorageSettings):
            raise ConfigurationError(
                f"settings must be a StorageSettings, got {type(settings).__name__}."
            )
        self._user_settings = settings
        self._read_only = read_only
        self._effective: StorageSettings | None = None
        self._retry_policy_cache: RetryPolicy | None = None

    # --- configuration -------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        return self._prefix

    def default_settings(self) -> StorageSettings:
        return DEFAULT_STORAGE_SETTINGS

    @property
    def settings(self) -> StorageSettings:
        if self._effective is None:
            self._effective = self.default_settings().merge(self._user_settings)
        return self._effective

    @property
    def user_settings(self) -> StorageSettings | None:
        return self._user_settings

    def with_settings(self, settings: StorageSettings | None) -> Self:
        if settings is not None and not isinstance(settings, StorageSettings):
            raise ConfigurationError(
                f"settings must be a StorageSettings, got {type(settings).__name__}."
            )
        new = copy.copy(self)
        new._user_settings = settings
        new._effective = None
        new._retry_policy_cache = None
        new._reset_runtime()
        return new

    @property
    def capabilities(self) -> Capabilities:
        native, settings = self.native_capabilities, self.settings
        writable = native.can_write and not self._read_only
        return Capabilities(
            can_write=writable,
            conditional_create=writable
            and native.conditional_create
            and settings.conditional_create,
            conditional_update=writable
            and native.conditional_update
            and settings.conditional_update,
            conditional_read=native.conditional_read,
            shared_across_processes=native.shared_across_processes,
            requires_prefix_for_repository=type(self).requires_prefix_for_repository,
        )

    @property
    def _retry_policy(self) -> RetryPolicy:
        if self._retry_policy_cache is None:
            self._retry_policy_cache = RetryPolicy.from_settings(self.settings)
        return self._retry_policy_cache

    def _path(self, key: str) -> str:
        return join_key(self._prefix, validate_key(key))

    def _key(self, path: str) -> str:
        return strip_prefix(self._prefix, path)

    def _check_writable(self) -> None:
        if not self.capabilities.can_write:
            raise ReadOnlyStorageError(f"{self!r} is read-only; writes are refused.")

    async def _call(self, operation: str, key: str, request: Callable[[], Awaitable[T]]) -> T:
        """Run one backend request under the request limit, with the shared retry policy,
        within ``StorageTimeoutSettings.operation_timeout_ms`` (all attempts and backoff).
        Every StorageError that leaves carries ``operation`` and ``key`` (the user's key)."""

        async def attempt() -> T:
            async with request_slots():
                observer = current_observer.get()
                if observer is not None:
                    observer.on_request(operation)
                return await request()

        budget_ms = self.settings.timeouts.operation_timeout_ms if self.settings.timeouts else None
        try:
            if budget_ms is None:
                return await call_with_retries(operation, key, attempt, self._retry_policy)
            deadline = asyncio.timeout(budget_ms / 1000)
            try:
                async with deadline:
                    return await call_with_retries(operation, key, attempt, self._retry_policy)
            except TimeoutError as exc:
                if not deadline.expired():
                    raise
                raise StorageTimeoutError(
                    f"{operation} of {key!r} did not complete within {budget_ms} ms "
                    "(StorageTimeoutSettings.operation_timeout_ms, retries included)."
                ) from exc
        except StorageError as exc:
            if exc.operation is None:
                exc.operation = operation
            exc.key = key
            scrub_exception(exc)  # chained SDK errors quote server text: no secret in it
            raise

    # --- reads -----------------------------------------------------------------------------

    async def get(self, key: str, byte_range: ByteRequest | None = None) -> GetResult:
        path = self._path(key)
        check_byte_request(byte_range)
        if isinstance(byte_range, RangeByteRequest):
            if byte_range.length == 0:
                return await self._empty_or_raise(key, byte_range)
            max_parts, ideal = self.settings.effective_concurrency
            parts = split_range(byte_range.start, byte_range.end, ideal, max_parts)
            if len(parts) > 1:
                return await self._get_in_parts(key, path, byte_range, parts)
        elif isinstance(byte_range, SuffixByteRequest) and byte_range.suffix == 0:
            return await self._empty_or_raise(key, byte_range)
        try:
            return await self._call("get", key, lambda: self._get_object(path, byte_range))
        except RangeNotSatisfiableError:
            return await self._empty_or_raise(key, byte_range)

    async def _empty_or_raise(self, key: str, byte_range: ByteRequest | None) -> GetResult:
        """A range that starts exactly at the end reads nothing; past the end is an error."""
        info = await self.head(key)
        if isinstance(byte_range, RangeByteRequest):
            start = byte_range.start
        elif isinstance(byte_range, OffsetByteRequest):
            start = byte_range.offset
        else:
            start = info.size
        if start <= info.size:
            return GetResult(b"", info.version)
        raise RangeNotSatisfiableError(
            f"Byte range {byte_range} of {key!r} starts at byte {start}, past the end of the "
            f"object ({info.size} bytes)."
        )

    async def _get_in_parts(
        self,
        key: str,
        path: str,
        byte_range: RangeByteRequest,
        parts: builtins.list[tuple[int, int]],
    ) -> GetResult:
        """Read parts concurrently straight into one buffer; read again if the object
        changed between parts or the parts disagree (never a torn or short result)."""
        attempts = self._retry_policy.max_tries
        for _ in range(attempts):
            result = await self._read_parts_once(key, path, byte_range, parts)
            if isinstance(result, GetResult):
                return result
            last = result
        raise RetriesExhaustedError("get", key, attempts, last) from last

    async def _read_parts_once(
        self,
        key: str,
        path: str,
        byte_range: RangeByteRequest,
        parts: builtins.list[tuple[int, int]],
    ) -> GetResult | TransientError:
        """One concurrent read of every part; an error (to retry) if they do not agree."""
        buffer = allocate_buffer(byte_range.length)
        view = buffer  # each part writes through its own slice of it
        outcomes: builtins.list[tuple[VersionInfo | None, int, int | None]] = [
            (None, 0, None)
        ] * len(parts)

        async def read_part(index: int, start: int, end: int) -> None:
            target = view[start - byte_range.start : end - byte_range.start]
            try:
                outcomes[index] = await self._call(
                    "get", key, lambda: self._read_into(path, start, target)
                )
            except RangeNotSatisfiableError:
                outcomes[index] = (None, 0, None)  # this part starts past the end
            finally:
                target.release()

        try:
            async with asyncio.TaskGroup() as group:
                for index, (start, end) in enumerate(parts):
                    group.create_task(read_part(index, start, end))
        except BaseExceptionGroup as group_error:
            raise (error := first_error(group_error)) from error.__cause__
        versions = {version for version, _, _ in outcomes if version is not None}
        if len(versions) > 1:
            return TransientError(f"{key!r} changed while it was being read in parts.")
        if not versions:
            return await self._empty_or_raise(key, byte_range)
        problem = _parts_problem(byte_range, parts, outcomes)
        if problem is not None:
            return ResponseIntegrityError(
                f"get of {key!r} ({describe_range(byte_range)}): {problem}"
            )
        total = sum(read for _, read, _ in outcomes)
        return GetResult(buffer if total == len(buffer) else buffer[:total], versions.pop())

    async def get_if_changed(self, key: str, version: VersionInfo) -> GetResult | None:
        path = self._path(key)
        return await self._call(
            "get_if_changed", key, lambda: self._get_object_if_changed(path, version)
        )

    async def head(self, key: str) -> ObjectInfo:
        path = self._path(key)
        info = await self._call("head", key, lambda: self._head_object(path))
        return attrs.evolve(info, key=key)

    async def get_many(
        self,
        requests: Iterable[tuple[str, ByteRequest | None]],
        *,
        missing_ok: bool = False,
        max_concurrency: int | None = None,
    ) -> list[Data | None]:
        _, ideal = self.settings.effective_concurrency
        return await fetch_many(
            requests,
            get=self.get,
            get_batch=self._get_batch if self._read_batch_size else None,
            batch_size=self._read_batch_size,
            split_above=ideal,
            missing_ok=missing_ok,
            max_concurrency=max_concurrency,
        )

    async def _get_batch(
        self, requests: builtins.list[tuple[str, ByteRequest | None]]
    ) -> builtins.list[GetResult | StorageError]:
        """Small reads in one backend request (``_get_objects``), with an error per item."""
        batch = [(self._path(key), byte_range) for key, byte_range in requests]
        return await self._call("get", requests[0][0], lambda: self._get_objects(batch))

    # --- writes ----------------------------------------------------------------------------

    def _effective_mode(self, mode: PutMode) -> PutMode:
        return effective_write_mode(mode, self.settings, self.native_capabilities, self)

    async def put(
        self,
        key: str,
        data: Data,
        *,
        mode: PutMode = "overwrite",
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> VersionInfo:
        path = self._path(key)
        check_put_data(data)
        self._check_writable()
        write_mode = self._effective_mode(mode)
        settings = self.settings
        user_metadata = dict(metadata or {}) if settings.use_metadata else {}
        if not settings.use_metadata:
            content_type = None
        in_parts = (
            self._supports_multipart_upload
            and len(data) >= settings.effective_minimum_size_for_multipart_upload
        )
        write_id = None
        if (write_mode != "overwrite" or in_parts) and settings.use_metadata:
            # Every conditional write, and every upload in parts (whose completion can be
            # lost too), carries a write id to recognise it after a lost response.
            write_id = random_hex(16)
            user_metadata[WRITE_ID_METADATA_KEY] = write_id
        sends = 0

        def send_once() -> Awaitable[VersionInfo]:
            nonlocal sends
            sends += 1
            return self._put_object(path, data, write_mode, content_type, user_metadata)

        try:
            if in_parts:
                return await self._put_in_parts(
                    key, path, data, write_mode, content_type, user_metadata
                )
            return await self._call("put", key, send_once)
        except (ConditionFailedError, RetriesExhaustedError) as exc:
            if write_id is None:
                raise
            if isinstance(exc, ConditionFailedError) and sends == 1:
                # Refused on its only send (adapters do not let a transport resend a
                # conditional write): the condition failed on what was there before, never
                # on our own write, so there is nothing of ours to look for.
                raise
            version = await self._readback(path, write_id)
            if version is None:
                raise
            return version

    async def _put_in_parts(
        self,
        key: str,
        path: str,
        data: Data,
        mode: PutMode,
        content_type: str | None,
        metadata: Mapping[str, str],
    ) -> VersionInfo:
        """Start, parts, complete: each step one request through ``_call``; any failure
        aborts the upload, so none is left behind. A start whose response was lost created
        an upload we never heard of: after any failed start attempt, those are aborted too
        (:meth:`_abort_strays`)."""
        failed_starts = 0

        async def start() -> str:
            nonlocal failed_starts
            try:
                return await self._multipart_start(path, mode, content_type, metadata)
            except BaseException:
                failed_starts += 1
                raise

        try:
            upload = await self._call("put", key, start)
        except BaseException:
            if failed_starts:
                await asyncio.shield(self._abort_strays(key, path, None))
            raise
        if failed_starts:
            await asyncio.shield(self._abort_strays(key, path, upload))
        try:
            view = memoryview(data).cast("B")
            ranges = self._multipart_ranges(len(view))
            receipts: builtins.list[object] = [None] * len(ranges)

            async def send(index: int) -> None:
                start, end = ranges[index]
                receipts[index] = await self._call(
                    "put",
                    key,
                    lambda: self._multipart_part(
                        path, upload, index + 1, start, view[start:end], len(view)
                    ),
                )

            if self._multipart_concurrent_parts:
                max_parts, _ = self.settings.effective_concurrency
                await run_bounded(range(len(ranges)), send, max_parts)
            else:
                for index in range(len(ranges)):
                    await send(index)
            return await self._call(
                "put",
                key,
                lambda: self._multipart_complete(
                    path, upload, receipts, mode, content_type, metadata
                ),
            )
        except MultipartUploadVanishedError:
            write_id = metadata.get(WRITE_ID_METADATA_KEY)
            if write_id is not None:
                version = await self._readback(path, write_id)
                if version is not None:
                    return version
            await asyncio.shield(self._abort_upload(key, path, upload))
            raise
        except BaseException:
            await asyncio.shield(self._abort_upload(key, path, upload))
            raise

    async def _abort_strays(self, key: str, path: str, keep: str | None) -> None:
        """Abort every unfinished upload at exactly ``path`` but ``keep``: after a lost start
        response they are ours. (Server start times cannot narrow this: emulators report
        fixed ones.) Keys written in parts are unique in a repository; a concurrent upload of
        the same key by another writer would fail visibly at completion (its upload gone,
        no write id of its own on the object), never silently. Best effort, as any abort."""
        with contextlib.suppress(StorageError, NotImplementedError):
            uploads = await self._call("list_uploads", key, lambda: self._multipart_uploads(path))
            for upload in uploads:
                if upload != keep:
                    await self._abort_upload(key, path, upload)

    async def _abort_upload(self, key: str, path: str, upload: str) -> None:
        """Best effort: a failed abort leaves an upload that a lifecycle rule must clean."""
        with contextlib.suppress(StorageError):
            await self._call("abort_upload", key, lambda: self._multipart_abort(path, upload))

    async def _readback(self, path: str, write_id: str) -> VersionInfo | None:
        """After a failed condition or a lost response: is the object there our own write?

        A retried conditional write whose first response was lost trips its own condition;
        finding our write id on the object proves the write happened.
        """
        try:
            info = await self._call("head", path, lambda: self._head_object(path))
        except ObjectNotFoundError:
            return None
        if info.metadata.get(WRITE_ID_METADATA_KEY) == write_id:
            return info.version
        return None

    async def copy(
        self, source: str, destination: str, *, if_version: VersionInfo | None = None
    ) -> VersionInfo:
        source_path, destination_path = self._path(source), self._path(destination)
        self._check_writable()
        if if_version is not None and not self.settings.conditional_update:
            if_version = None
        return await self._call(
            "copy",
            source,
            lambda: self._copy_object(source_path, destination_path, if_version),
        )

    async def delete(self, key: str) -> None:
        path = self._path(key)
        self._check_writable()
        _, errors = await self._call("delete", key, lambda: self._delete_objects([path]))
        if errors:
            raise StorageError(f"Could not delete {key!r}: {errors[path]}")

    async def delete_many(
        self, items: Iterable[str | ObjectInfo] | AsyncIterable[str | ObjectInfo]
    ) -> DeleteResult:
        """Batches of ``_delete_batch_size`` keys, at most ``_delete_batch_concurrency`` at a
        time: a fixed set of workers takes batches from a bounded queue, so memory holds a
        few batches however many keys stream in."""
        self._check_writable()
        total = DeleteResult()
        batches: asyncio.Queue[dict[str, int | None] | None] = asyncio.Queue(
            maxsize=self._delete_batch_concurrency
        )

        async def delete_batch(batch: dict[str, int | None]) -> DeleteResult:
            try:
                deleted, failed = await self._call(
                    "delete_many",
                    self._key(next(iter(batch))),
                    lambda: self._delete_objects(list(batch)),
                )
            except StorageError as exc:
                deleted, failed = {}, dict.fromkeys(batch, str(exc))
            return DeleteResult(
                deleted_objects=len(deleted),
                deleted_bytes=sum(
                    (batch[path] if batch[path] is not None else size) or 0
                    for path, size in deleted.items()
                ),
                errors={self._key(path): why for path, why in failed.items()},
            )

        async def worker() -> None:
            nonlocal total
            while (batch := await batches.get()) is not None:
                result = await delete_batch(batch)  # awaited first: += would read a stale total
                total = total + result

        async def produce() -> None:
            batch: dict[str, int | None] = {}
            async for item in _aiter(items):
                if isinstance(item, ObjectInfo):
                    batch[self._path(item.key)] = item.size
                else:
                    batch[self._path(item)] = None
                if len(batch) >= self._delete_batch_size:
                    await batches.put(batch)
                    batch = {}
            if batch:
                await batches.put(batch)
            for _ in range(self._delete_batch_concurrency):
                await batches.put(None)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(self._delete_batch_concurrency):
                    group.create_task(worker())
                group.create_task(produce())
        except BaseExceptionGroup as group_error:
            raise (error := first_error(group_error)) from error.__cause__
        return total

    # --- listing ---------------------------------------------------------------------------

    @property
    def _key_cut(self) -> int:
        """How many characters the storage prefix (and its "/") adds in front of each key."""
        return len(self._prefix) + 1 if self._prefix else 0

    def _list_path_prefix(self, prefix: str) -> str:
        relative = normalize_list_prefix(prefix)
        if not self._prefix:
            return relative
        return f"{self._prefix}/{relative}"

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        path_prefix = self._list_path_prefix(prefix)
        cut = self._key_cut
        async for page in self._pages(prefix, path_prefix, None):
            if page.keys_relative:
                for info in page.objects:
                    yield info
            else:
                for info in page.objects:
                    yield _relative(info, cut)

    async def list_dir(self, prefix: str = "") -> ListResult:
        path_prefix = self._list_path_prefix(prefix)
        cut = self._key_cut
        objects: builtins.list[ObjectInfo] = []
        prefixes: builtins.list[str] = []
        async for page in self._pages(prefix, path_prefix, "/"):
            if page.keys_relative:
                objects.extend(page.objects)
            else:
                objects.extend(_relative(info, cut) for info in page.objects)
            prefixes.extend(p[cut:] for p in page.prefixes)
        return ListResult(objects=objects, prefixes=sorted(set(prefixes)))

    async def _pages(
        self, prefix: str, path_prefix: str, delimiter: str | None
    ) -> AsyncIterator[ListPage]:
        """Every page of a listing, each one request through ``_call`` (retried alone)."""
        token: str | None = None
        while True:
            page = await self._call(
                "list",
                prefix,
                functools.partial(self._list_page, path_prefix, delimiter, token),
            )
            yield page
            if page.next_token is None:
                return
            if page.next_token == token:
                raise StorageError(
                    f"list of {prefix!r}: the server returned the same page token twice."
                )
            token = page.next_token

    # --- lifecycle -------------------------------------------------------------------------

    async def aclose(self) -> None:
        await self._aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._describe()})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, BaseStorage)
        return (
            self._config_key() == other._config_key()
            and self._user_settings == other._user_settings
            and self._read_only == other._read_only
        )

    def __hash__(self) -> int:
        return hash((type(self), self._config_key()))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in self._runtime_attributes:
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_runtime()

    # --- primitives ------------------------------------------------------------------------

    @abc.abstractmethod
    async def _get_object(self, path: str, byte_range: ByteRequest | None) -> GetResult: ...

    @abc.abstractmethod
    async def _head_object(self, path: str) -> ObjectInfo: ...

    @abc.abstractmethod
    async def _put_object(
        self,
        path: str,
        data: Data,
        mode: PutMode,
        content_type: str | None,
        metadata: Mapping[str, str],
    ) -> VersionInfo: ...

    @abc.abstractmethod
    async def _copy_object(
        self, source: str, destination: str, version: VersionInfo | None
    ) -> VersionInfo: ...

    @abc.abstractmethod
    async def _list_page(
        self, path_prefix: str, delimiter: str | None, token: str | None
    ) -> ListPage: ...

    @abc.abstractmethod
    async def _delete_objects(
        self, paths: builtins.list[str]
    ) -> tuple[dict[str, int | None], dict[str, str]]: ...

    @abc.abstractmethod
    def _describe(self) -> str: ...

    @abc.abstractmethod
    def _config_key(self) -> object: ...

    async def _get_object_if_changed(self, path: str, version: VersionInfo) -> GetResult | None:
        """Default: HEAD, then GET if changed. Not atomic: override where the server can."""
        info = await self._head_object(path)
        if info.version == version:
            return None
        return await self._get_object(path, None)

    async def _read_into(
        self, path: str, start: int, out: memoryview
    ) -> tuple[VersionInfo, int, int | None]:
        """Read ``len(out)`` bytes from ``start`` into ``out``; return the version, the
        bytes read, and the object's size if the response told it (None: unknown)."""
        result = await self._get_object(path, RangeByteRequest(start, start + len(out)))
        read = len(result.data)
        out[:read] = result.data
        return result.version, read, None

    async def _get_objects(
        self, requests: builtins.list[tuple[str, ByteRequest | None]]
    ) -> builtins.list[GetResult | StorageError]:
        """Batch primitive for backends with ``_read_batch_size > 0``; errors per item."""
        raise NotImplementedError

    def _multipart_ranges(self, size: int) -> builtins.list[tuple[int, int]]:
        """The parts of an upload in parts: equal but the last, sized by the settings."""
        max_parts, ideal = self.settings.effective_concurrency
        return split_for_multipart(size, ideal, max_parts)

    async def _multipart_start(
        self, path: str, mode: PutMode, content_type: str | None, metadata: Mapping[str, str]
    ) -> str:
        """Begin an upload in parts; return its handle."""
        raise NotImplementedError

    async def _multipart_part(
        self, path: str, upload: str, number: int, start: int, body: memoryview, total: int
    ) -> object:
        """Upload part ``number`` (from 1), the bytes at ``start``; return its receipt."""
        raise NotImplementedError

    async def _multipart_complete(
        self,
        path: str,
        upload: str,
        parts: builtins.list[object],
        mode: PutMode,
        content_type: str | None,
        metadata: Mapping[str, str],
    ) -> VersionInfo:
        """Finish the upload under the write's condition; MultipartUploadVanishedError if
        the upload is gone."""
        raise NotImplementedError

    async def _multipart_abort(self, path: str, upload: str) -> None:
        """Discard the upload and its parts."""
        raise NotImplementedError

    async def _multipart_uploads(self, path: str) -> builtins.list[str]:
        """The handles of the unfinished uploads at exactly ``path``. Only for backends
        whose start creates server state a lost response hides (S3); the default says
        there is nothing to find."""
        raise NotImplementedError

    async def _aclose(self) -> None:
        """Release live clients for the running loop."""

    def _reset_runtime(self) -> None:
        """Forget live clients and tasks (after unpickling or ``with_settings``)."""


class OneGetPerRead(BaseStorage):
    """A backend whose every read is one HTTP GET (S3, GCS, Azure). It implements ``_read``;
    the three read primitives the base calls are derived here, once."""

    @abc.abstractmethod
    async def _read(
        self,
        operation: str,
        path: str,
        byte_range: ByteRequest | None,
        *,
        into: memoryview | None = None,
        unless: VersionInfo | None = None,
    ) -> tuple[GetResult | None, int, int | None]:
        """One GET: ``(result, bytes written into into, the object's size if the response
        told it)``. The result is None when the object is still at ``unless`` (a 304)."""

    async def _get_object(self, path: str, byte_range: ByteRequest | None) -> GetResult:
        result, _, _ = await self._read("get", path, byte_range)
        assert result is not None  # only a conditional read answers "unchanged"
        return result

    async def _read_into(
        self, path: str, start: int, out: memoryview
    ) -> tuple[VersionInfo, int, int | None]:
        part = RangeByteRequest(start, start + len(out))
        result, written, total = await self._read("get", path, part, into=out)
        assert result is not None
        return result.version, written, total

    async def _get_object_if_changed(self, path: str, version: VersionInfo) -> GetResult | None:
        result, _, _ = await self._read("get_if_changed", path, None, unless=version)
        return result


def _relative(info: ObjectInfo, cut: int) -> ObjectInfo:
    """``info`` with the prefix cut off its key (what ``attrs.evolve`` does, at half the cost:
    this runs once per listed key)."""
    key, size, modified, version = info.key[cut:], info.size, info.last_modified, info.version
    return ObjectInfo(key, size, modified, version, info.content_type, info.metadata)


def _parts_problem(
    byte_range: RangeByteRequest,
    parts: builtins.list[tuple[int, int]],
    outcomes: builtins.list[tuple[VersionInfo | None, int, int | None]],
) -> str | None:
    """Why the parts of one read do not make one contiguous result, or None if they do.

    Every part must hold all it asked for, up to the object's end: a part shorter than
    asked while the object goes on is an error, never the end of the result.
    """
    totals = {total for _, _, total in outcomes if total is not None}
    if len(totals) > 1:
        return f"the parts disagree on the object's size ({sorted(totals)})"
    end_of_object = totals.pop() if totals else None
    ended = False
    for (start, end), (_, read, _) in zip(parts, outcomes, strict=True):
        wanted = end - start
        if end_of_object is not None:
            wanted = max(0, min(end, end_of_object) - start)
        elif ended:
            wanted = 0
        if read != wanted:
            if end_of_object is None and not ended and read < wanted:
                ended = True  # unknown size: a short part is the end, if all after are empty
                continue
            return f"the part at bytes {start}-{end - 1} returned {read} bytes, expected {wanted}"
    return None


async def _aiter(
    items: Iterable[str | ObjectInfo] | AsyncIterable[str | ObjectInfo],
) -> AsyncIterator[str | ObjectInfo]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
