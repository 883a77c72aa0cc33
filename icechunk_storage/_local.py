"""Local filesystem storage: one file per object under a root directory.

* **Blocking work runs on a dedicated thread pool**, never on the event loop, through
  module-level sync functions. We measured a thread hop at 70-120 us of CPU on the target
  machines, against ~13 us for a small ``os.pread``; so calls made in one turn of the loop
  cross to the pool together (``_Hops``: up to 32 calls, or 1 MiB of puts, per hop), a batch
  of small reads from the chunk fetch path crosses *once* (``_read_batch_size``), and
  aiofiles (three hops per read: open, read, close) is not used.
* **Writes are atomic**: a temporary file under ``<root>/.icechunk-storage/tmp`` is written
  and renamed into place, so a reader never sees half an object and a crashed process leaves
  no partial object (only a stray temporary file, never visible as an object).
* **Durability where it matters** (``docs/repository-format.md``, "Durability"): a plain
  ``put`` or ``copy`` is not fsynced (as obstore's and zarr's local stores): it survives the
  writing process being killed, but not necessarily a power loss or kernel crash, until
  :meth:`LocalFileSystemStorage.flush` makes it durable. Conditional writes (create, update,
  a copy conditional on a version) are fsynced, file and directory, before they return. A
  repository flushes everything a commit refers to before the commit becomes visible.
* **Conditional create** links the temporary file to the target name, which fails atomically
  if the target exists. **Conditional update** is safe across threads and processes on one
  machine: an exclusive ``flock`` per key is held while the current version is checked and
  the new file renamed in (Icechunk's local storage loses commits here; this one does not).
* **Versions** are ``"<inode>-<mtime_ns>-<size>"``; every write stamps a fresh nanosecond
  mtime strictly later than the file it replaces, so the version changes whenever the
  content is written.
* Directories are created where a write needs them and empty ones are removed after deletes.
  Keys cannot leave the root (the shared key rules refuse absolute keys and ``..``); the
  top-level ``.icechunk-storage`` directory is reserved. Symbolic links placed inside the root
  by whoever controls it are followed.
* **Content type and user metadata are kept**, in extended attributes of the file
  (``user.icechunk.content_type``, ``user.icechunk.metadata`` as JSON). They are set on the
  temporary file before it is renamed in, so they change atomically with the bytes, and
  ``copy`` carries them like S3's CopyObject. Icechunk's local storage drops them silently;
  a sidecar file could not be replaced atomically with the object. On a filesystem without
  user xattrs a write that carries them is refused with a ConfigurationError naming
  ``StorageSettings(unsafe_use_metadata=False)``, which drops them on purpose (the write id
  stamped on conditional writes is then skipped: a local write never loses its response).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import hashlib
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from ._backend import WRITE_ID_METADATA_KEY, BaseStorage, ListPage
from ._errors import (
    AlreadyExistsError,
    ConfigurationError,
    InvalidKeyError,
    ObjectNotFoundError,
    PermissionDeniedError,
    PreconditionFailedError,
    StorageError,
)
from ._forks import forget_after_fork
from ._local_root import local_os_errors, resolve_local_root  # issue 15
from ._loops import LoopLocal
from ._memory import LOCAL_DEFAULTS
from ._ranges import ByteRequest, OffsetByteRequest, resolve_range
from ._settings import StorageSettings
from ._storage import Data, GetResult, ObjectInfo, PutMode, VersionInfo

__all__ = ["LocalFileSystemStorage", "local_filesystem_storage"]

T = TypeVar("T")

RESERVED = ".icechunk-storage"
"""Top-level directory for temporary files and locks; never listed, never a key."""

CONTENT_TYPE_XATTR = "user.icechunk.content_type"
METADATA_XATTR = "user.icechunk.metadata"
_NO_XATTR_SUPPORT = {errno.ENOTSUP, errno.EOPNOTSUPP}

_SYNCFS_ABOVE = 64
"""Flushing more objects than this uses one syncfs of the whole filesystem (Linux)."""


def _find_syncfs() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function: Callable[[int], int] = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    return function


_syncfs = _find_syncfs()

_POOL_SIZE = 8
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(_POOL_SIZE, thread_name_prefix="icechunk-storage-file")
    return _pool


def _forget_pool_after_fork() -> None:
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


forget_after_fork(_forget_pool_after_fork)


_BATCH_CALLS = 32
"""At most this many calls share one hop. A batch runs its calls one after another on one
thread: for small files that beats spreading them over threads, which then take turns at
the GIL (1 KiB puts, 32 in flight: 12,000/s in one batch, 7,500/s in batches of 8, 5,000/s
in batches of 4, on 2 cores)."""
_BATCH_BYTES = 1024 * 1024
"""A batch closes once its puts carry this much data: large writes copy into the page cache
without the GIL, so they gain from running on threads side by side."""

_Call = tuple[Callable[..., Any], tuple[object, ...], "asyncio.Future[Any]"]


class _Hops:
    """The calls of one event loop waiting to cross to the pool. Calls made in the same turn
    of the loop cross together, up to ``_BATCH_CALLS`` per hop: the hop itself (queueing to
    a thread, waking the loop, the GIL passed to and fro between them) costs more than a
    small file write; one per call made ``put`` a third slower than obstore's LocalStore."""

    def __init__(self) -> None:
        self.pending: list[_Call] = []
        self.pending_bytes = 0

    def submit(
        self, function: Callable[..., T], args: tuple[object, ...], nbytes: int
    ) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self.pending:
            loop.call_soon(self.flush, loop)
        self.pending.append((function, args, future))
        self.pending_bytes += nbytes
        if len(self.pending) >= _BATCH_CALLS or self.pending_bytes >= _BATCH_BYTES:
            self.flush(loop)
        return future

    def flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self.pending, self.pending_bytes = self.pending, [], 0
        if batch:
            _executor().submit(_run_batch, loop, batch)


_hops: LoopLocal[_Hops] = LoopLocal(_Hops)


def _run_batch(loop: asyncio.AbstractEventLoop, batch: list[_Call]) -> None:
    """On a pool thread: every call of the batch, then one wake-up of the loop for all."""
    outcomes: list[tuple[asyncio.Future[Any], object, BaseException | None]] = []
    for function, args, future in batch:
        try:
            outcomes.append((future, function(*args), None))
        except BaseException as exc:  # handed to the caller, whatever it is
            outcomes.append((future, None, exc))
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
        loop.call_soon_threadsafe(_settle, outcomes)


def _settle(outcomes: list[tuple[asyncio.Future[Any], object, BaseException | None]]) -> None:
    for future, result, error in outcomes:
        if future.cancelled():  # the caller gave up; the call itself ran (as in any executor)
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


async def _run(function: Callable[..., T], *args: object, nbytes: int = 0) -> T:
    """``function(*args)`` on the pool (never on the loop), sharing the hop with the calls
    made in the same turn of the loop (:class:`_Hops`); ``nbytes``: the data it writes."""
    with local_os_errors():  # issue 15: typed errors, never a raw OSError
        return await _hops.get().submit(function, args, nbytes)


# --- sync building blocks: each runs on a pool thread --------------------------------------


def _version(stat: os.stat_result) -> VersionInfo:
    return VersionInfo(etag=f'"{stat.st_ino:x}-{stat.st_mtime_ns:x}-{stat.st_size:x}"')


def _info(
    path: str,
    stat: os.stat_result,
    content_type: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> ObjectInfo:
    return ObjectInfo(
        key=path,
        size=stat.st_size,
        last_modified=datetime.fromtimestamp(stat.st_mtime_ns / 1e9, UTC),
        version=_version(stat),
        content_type=content_type,
        metadata=dict(metadata or {}),
    )


def _get_xattr(target: int | str, name: str) -> bytes | None:
    try:
        return os.getxattr(target, name)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, *_NO_XATTR_SUPPORT):
            return None
        raise


def _read_attributes(target: int | str) -> tuple[str | None, dict[str, str]]:
    """The content type and user metadata kept with a file (see the module docstring)."""
    content_type = _get_xattr(target, CONTENT_TYPE_XATTR)
    metadata = _get_xattr(target, METADATA_XATTR)
    return (
        None if content_type is None else content_type.decode(),
        {} if metadata is None else dict(json.loads(metadata)),
    )


def _write_attributes(
    fd: int, content_type: str | None, metadata: Mapping[str, str], root: str
) -> None:
    attributes = []
    if content_type is not None:
        attributes.append((CONTENT_TYPE_XATTR, content_type.encode()))
    if metadata:
        attributes.append((METADATA_XATTR, json.dumps(dict(metadata)).encode()))
    for name, value in attributes:
        try:
            os.setxattr(fd, name, value)
        except OSError as exc:
            if (
                exc.errno in _NO_XATTR_SUPPORT
                and content_type is None
                and (set(metadata) <= {WRITE_ID_METADATA_KEY})
            ):
                return  # only our write id: a local write never needs it to recover
            if exc.errno in _NO_XATTR_SUPPORT:
                raise ConfigurationError(
                    f"The filesystem under {root!r} does not support extended attributes, "
                    "where the local storage keeps content_type and metadata; pass "
                    "StorageSettings(unsafe_use_metadata=False) to drop them instead."
                ) from None
            if exc.errno in (errno.E2BIG, errno.ENOSPC, errno.ERANGE):
                raise ConfigurationError(
                    f"content_type and metadata are too large to keep with the file under "
                    f"{root!r} ({len(value)} bytes for {name}; the filesystem's limit is "
                    "typically a few KiB, as S3's is 2 KiB)."
                ) from None
            raise


def _open_for_read(file: str, path: str) -> int:
    try:
        return os.open(file, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise ObjectNotFoundError(path) from None
    except PermissionError as exc:
        raise PermissionDeniedError(f"Cannot read {path!r}: {exc.strerror}.") from exc


def _pread_all(fd: int, length: int, offset: int) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) == length or not data:
        return data
    parts = [data]  # a short read: keep reading until the range or the file ends
    while length > (got := sum(map(len, parts))):
        more = os.pread(fd, length - got, offset + got)
        if not more:
            break
        parts.append(more)
    return b"".join(parts)


def _read(file: str, path: str, byte_range: ByteRequest | None) -> GetResult:
    fd = _open_for_read(file, path)
    try:
        stat = os.fstat(fd)
        if not _is_file(stat):
            raise ObjectNotFoundError(path)
        start, end = resolve_range(byte_range, stat.st_size)
        return GetResult(_pread_all(fd, end - start, start), _version(stat))
    finally:
        os.close(fd)


def _read_many(
    items: list[tuple[str, str, ByteRequest | None]],
) -> list[GetResult | StorageError]:
    results: list[GetResult | StorageError] = []
    for file, path, byte_range in items:
        try:
            results.append(_read(file, path, byte_range))
        except StorageError as exc:
            results.append(exc)
    return results


def _read_into(
    file: str, path: str, start: int, out: memoryview
) -> tuple[VersionInfo, int, int | None]:
    fd = _open_for_read(file, path)
    try:
        stat = os.fstat(fd)
        resolve_range(OffsetByteRequest(start), stat.st_size)  # raises if start is past the end
        done = 0
        while done < len(out):
            read = os.preadv(fd, [out[done:]], start + done)
            if read == 0:
                break
            done += read
        return _version(stat), done, stat.st_size
    finally:
        os.close(fd)


def _read_if_changed(file: str, path: str, version: VersionInfo) -> GetResult | None:
    fd = _open_for_read(file, path)
    try:
        stat = os.fstat(fd)
        if _version(stat) == version:
            return None
        return GetResult(_pread_all(fd, stat.st_size, 0), _version(stat))
    finally:
        os.close(fd)


def _head(file: str, path: str) -> ObjectInfo:
    try:
        stat = os.stat(file)
    except (FileNotFoundError, NotADirectoryError):
        raise ObjectNotFoundError(path) from None
    if not _is_file(stat):
        raise ObjectNotFoundError(path)
    return _info(path, stat, *_read_attributes(file))


def _is_file(stat: os.stat_result) -> bool:
    return (stat.st_mode & 0o170000) == 0o100000


class _Root:
    """Sync file operations under one root directory."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.reserved = os.path.join(root, RESERVED)

    def file(self, path: str) -> str:
        if path.split("/", 1)[0] == RESERVED:
            raise InvalidKeyError(f"Keys under {RESERVED!r} are reserved by the local storage.")
        return os.path.join(self.root, *path.split("/"))

    def _temporary(
        self,
        data: Data,
        not_before_ns: int,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        *,
        durable: bool = False,
    ) -> tuple[str, os.stat_result]:
        """Write ``data`` and its attributes to a temporary file with a fresh mtime later than
        ``not_before_ns`` (fsynced if ``durable``); return its path and final stat."""
        temporary = os.path.join(self.reserved, "tmp", uuid.uuid4().hex)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            fd = os.open(temporary, flags, 0o644)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(temporary), exist_ok=True)
            fd = os.open(temporary, flags, 0o644)
        try:
            view = memoryview(data).cast("B")
            while view:
                view = view[os.write(fd, view) :]
            _write_attributes(fd, content_type, metadata or {}, self.root)
            if durable:
                os.fsync(fd)
            stat = os.fstat(fd)
            if stat.st_mtime_ns <= not_before_ns:
                stamp = max(time.time_ns(), not_before_ns + 1)
                os.utime(fd, ns=(stamp, stamp))
                stat = os.fstat(fd)
        except BaseException:
            os.close(fd)
            os.unlink(temporary)
            raise
        os.close(fd)
        return temporary, stat

    @staticmethod
    def _mtime_ns(file: str) -> int:
        try:
            return os.stat(file).st_mtime_ns
        except (FileNotFoundError, NotADirectoryError):
            return 0

    def _place(self, temporary: str, file: str, *, exclusive: bool, durable: bool) -> None:
        """Rename (or, exclusively, link) the temporary file into place, making directories
        (and, if ``durable``, fsync the directory entry).

        A concurrent delete may remove an empty parent directory between our makedirs and
        the rename: so retry a few times.
        """
        for attempt in range(6):
            try:
                if exclusive:
                    os.link(temporary, file)
                    os.unlink(temporary)
                else:
                    os.replace(temporary, file)
                break
            except FileNotFoundError:
                if attempt == 5:
                    raise
                os.makedirs(os.path.dirname(file), exist_ok=True)
        if durable:
            self._sync_directories([os.path.dirname(file)])

    def _with_parents(self, directories: Iterable[str]) -> set[str]:
        """Directories and their parents up to the root (new names in them, and the
        directories themselves if they were just made)."""
        found: set[str] = set()
        for start in directories:
            directory = start
            while directory not in found and directory.startswith(self.root):
                found.add(directory)
                if directory == self.root:
                    break
                directory = os.path.dirname(directory)
        return found

    @staticmethod
    def _fsync_directory(directory: str) -> None:
        fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _sync_directories(self, directories: Iterable[str]) -> None:
        for directory in sorted(self._with_parents(directories), reverse=True):
            self._fsync_directory(directory)

    def put(
        self,
        path: str,
        data: Data,
        mode: PutMode,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        *,
        durable: bool = False,
    ) -> VersionInfo:
        file = self.file(path)
        durable = durable or mode != "overwrite"  # every conditional write is durable
        temporary, stat = self._temporary(
            data, self._mtime_ns(file), content_type, metadata, durable=durable
        )
        try:
            if mode == "overwrite":
                self._place(temporary, file, exclusive=False, durable=durable)
            elif mode == "create":
                try:
                    self._place(temporary, file, exclusive=True, durable=True)
                except FileExistsError:
                    raise AlreadyExistsError(path) from None
            else:
                with self._locked(path):
                    try:
                        current = _version(os.stat(file))
                    except (FileNotFoundError, NotADirectoryError):
                        current = None
                    if current != mode:
                        raise PreconditionFailedError(path, mode)
                    # The version must change even within one clock tick.
                    stamp = max(time.time_ns(), self._mtime_ns(file) + 1)
                    os.utime(temporary, ns=(stamp, stamp))
                    stat = os.stat(temporary)
                    self._place(temporary, file, exclusive=False, durable=True)
            return _version(stat)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    def syncfs(self) -> bool:
        """One ``syncfs`` of the filesystem holding the root; False where there is none."""
        if _syncfs is None:
            return False
        fd = os.open(self.root, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _syncfs(fd) != 0:
                error = ctypes.get_errno()
                raise OSError(error, os.strerror(error), self.root)
        finally:
            os.close(fd)
        return True

    def fsync_file(self, path: str) -> str:
        """fsync one object's file; return its directory."""
        file = self.file(path)
        try:
            fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFoundError(path) from None
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return os.path.dirname(file)

    def copy(self, source: str, destination: str, version: VersionInfo | None) -> VersionInfo:
        fd = _open_for_read(self.file(source), source)
        try:
            stat = os.fstat(fd)
            if version is not None and _version(stat) != version:
                raise PreconditionFailedError(source, version)
            data = _pread_all(fd, stat.st_size, 0)
            content_type, metadata = _read_attributes(fd)
        finally:
            os.close(fd)
        return self.put(
            destination, data, "overwrite", content_type, metadata, durable=version is not None
        )

    def _locked(self, path: str) -> _FileLock:
        name = hashlib.sha256(path.encode()).hexdigest()
        return _FileLock(os.path.join(self.reserved, "locks", name))

    def delete(self, paths: list[str]) -> tuple[dict[str, int | None], dict[str, str]]:
        deleted: dict[str, int | None] = {}
        errors: dict[str, str] = {}
        for path in paths:
            file = self.file(path)
            try:
                size = os.stat(file).st_size
                os.unlink(file)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                errors[path] = f"{exc.strerror} ({errno.errorcode.get(exc.errno or 0, '?')})"
                continue
            deleted[path] = size
            self._remove_empty_parents(os.path.dirname(file))
        return deleted, errors

    def _remove_empty_parents(self, directory: str) -> None:
        while directory != self.root and directory.startswith(self.root):
            try:
                os.rmdir(directory)
            except OSError:
                return
            directory = os.path.dirname(directory)

    def scan(self, path_prefix: str) -> tuple[list[ObjectInfo], list[str]]:
        """One directory: its files, and its subdirectories as ``prefix/``."""
        directory = self.file(path_prefix.rstrip("/")) if path_prefix else self.root
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return objects, prefixes
        for entry in entries:
            name = path_prefix + entry.name
            if name == RESERVED:
                continue
            try:
                if entry.is_dir():
                    prefixes.append(name + "/")
                elif entry.is_file():
                    objects.append(_info(name, entry.stat()))
            except FileNotFoundError:
                continue  # deleted while we listed
        return objects, prefixes


class _FileLock:
    """An exclusive ``flock`` on a lock file: excludes other threads and processes alike."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.fd = -1

    def __enter__(self) -> None:
        import fcntl  # POSIX only: checked when the storage is constructed

        os.makedirs(os.path.dirname(self.file), exist_ok=True)
        self.fd = os.open(self.file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc_info: object) -> None:
        import fcntl

        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _check_file_locks() -> None:
    """Refuse a platform without ``fcntl.flock``: conditional updates (every commit) would not
    be safe across processes, so we do not pretend."""
    try:
        import fcntl  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            f"local_filesystem_storage needs POSIX file locks (fcntl.flock) to make "
            f"conditional writes safe across processes, and this platform ({sys.platform}) "
            "has none. Use a POSIX system (Linux, macOS), or an object store."
        ) from None


class LocalFileSystemStorage(BaseStorage):
    """Objects as files under a root directory. Construct with :func:`local_filesystem_storage`."""

    backend_name = "local"
    _read_batch_size: ClassVar[int] = 256

    def __init__(self, path: str | os.PathLike[str], *, settings: StorageSettings | None = None):
        _check_file_locks()
        super().__init__(prefix=None, settings=settings)
        self._files = _Root(resolve_local_root(path))  # ~, file://, a file: issue 15

    @property
    def root(self) -> str:
        return self._files.root

    def default_settings(self) -> StorageSettings:
        return LOCAL_DEFAULTS

    def _describe(self) -> str:
        return f"file://{self._files.root}"

    def _config_key(self) -> object:
        return self._files.root

    async def _get_object(self, path: str, byte_range: ByteRequest | None) -> GetResult:
        return await _run(_read, self._files.file(path), path, byte_range)

    async def _get_objects(
        self, requests: list[tuple[str, ByteRequest | None]]
    ) -> list[GetResult | StorageError]:
        items = [(self._files.file(path), path, byte_range) for path, byte_range in requests]
        return await _run(_read_many, items)

    async def _read_into(
        self, path: str, start: int, out: memoryview
    ) -> tuple[VersionInfo, int, int | None]:
        return await _run(_read_into, self._files.file(path), path, start, out)

    async def _get_object_if_changed(self, path: str, version: VersionInfo) -> GetResult | None:
        return await _run(_read_if_changed, self._files.file(path), path, version)

    async def _head_object(self, path: str) -> ObjectInfo:
        return await _run(_head, self._files.file(path), path)

    async def _put_object(
        self,
        path: str,
        data: Data,
        mode: PutMode,
        content_type: str | None,
        metadata: Mapping[str, str],
    ) -> VersionInfo:
        self._files.file(path)  # refuse reserved keys before any I/O
        return await _run(
            self._files.put,
            path,
            data,
            mode,
            content_type,
            metadata,
            nbytes=data.nbytes if isinstance(data, memoryview) else len(data),
        )

    async def _copy_object(
        self, source: str, destination: str, version: VersionInfo | None
    ) -> VersionInfo:
        self._files.file(destination)
        return await _run(self._files.copy, source, destination, version)

    async def _list_page(
        self, path_prefix: str, delimiter: str | None, token: str | None
    ) -> ListPage:
        """One directory per page. A recursive listing's token is the queue of directories
        still to scan (paths never hold a line break: keys refuse control characters)."""
        pending = token.split("\n") if token is not None else [path_prefix]
        objects, prefixes = await _run(self._files.scan, pending.pop())
        if delimiter is not None:
            return ListPage(objects=objects, prefixes=sorted(prefixes))
        pending.extend(prefixes)
        return ListPage(objects=objects, next_token="\n".join(pending) if pending else None)

    async def _delete_objects(
        self, paths: list[str]
    ) -> tuple[dict[str, int | None], dict[str, str]]:
        for path in paths:
            self._files.file(path)
        return await _run(self._files.delete, paths)

    async def flush(self, keys: Iterable[str]) -> None:
        """Make the objects at ``keys`` durable (they were written by plain ``put`` or
        ``copy``, which do not fsync): one ``syncfs`` for many keys on Linux, else an fsync
        of each file (concurrently: the filesystem's journal commits them together) and then
        of their directories. ObjectNotFoundError if one is missing."""
        paths = [self._path(key) for key in keys]
        files = self._files
        if not paths or (len(paths) > _SYNCFS_ABOVE and await _run(files.syncfs)):
            return
        directories = await asyncio.gather(*(_run(files.fsync_file, path) for path in paths))
        await asyncio.gather(
            *(_run(files._fsync_directory, d) for d in files._with_parents(directories))
        )


def local_filesystem_storage(path: str | os.PathLike[str]) -> LocalFileSystemStorage:
    """Storage in the directory ``path``, created on the first write. ``~`` is expanded; a
    URL, or a path that is a file, is refused now (the only I/O: a stat of the path).

    Safe for concurrent writers on one machine, across processes: conditional create and
    update are atomic (unlike Icechunk's local storage, which can lose concurrent commits).
    """
    if not isinstance(path, str | os.PathLike) or not os.fspath(path):
        raise ConfigurationError(
            f"local_filesystem_storage needs a directory path (str or os.PathLike), got {path!r}."
        )
    return LocalFileSystemStorage(path)
