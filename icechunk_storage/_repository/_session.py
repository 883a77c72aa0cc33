"""Sessions: a view of one snapshot plus uncommitted changes, and the commit protocol.

A session's key/value store, :attr:`Session.storage`, implements the ``Storage`` contract,
so anything that works over a Storage (the Zarr adapter included) works over a session:

* reads see the session's snapshot with the session's uncommitted writes and deletes on top;
* a write of more than ``inline_chunk_threshold_bytes`` bytes goes at once to a new immutable
  object ``chunks/<id>``; smaller values stay in memory and are stored inside the snapshot;
  either way only the session sees the value until commit;
* every value has a version (a fresh id per write), so ``put(mode="create")``,
  ``put(mode=version)``, ``copy(if_version=...)`` and ``get_if_changed`` work within the
  session; content type and user metadata are not kept;
* the snapshot's manifests are loaded lazily, only those holding keys the session touches
  (``_manifests.ManifestReader``);
* ``commit`` writes the manifests holding changed keys and a snapshot referring to them and
  to the unchanged ones, makes all that (and the session's chunks) durable, then moves the
  branch by a compare-and-swap of the info object (``Repository._update_info``).

Pickling: a read-only session pickles (by its snapshot id). A writable session refuses to
be pickled, and so do its storage and a ZarrStore over it: a copy written in another process
(a dask task) would keep its changes to itself and the commit would silently miss them.
``Session.fork()`` gives the picklable form: a fork carries its own changes when pickled back,
and ``Session.merge(*forks)`` folds them into the session (see :meth:`Session.merge` for the
rule when two forks wrote the same key). Concurrent use from several threads or loops is
safe: changes are applied under a lock, and writes are refused while a commit is running.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self, TypeAlias

import attrs

from .._backend import check_put_data, effective_write_mode
from .._errors import (
    AlreadyExistsError,
    ConfigurationError,
    ObjectNotFoundError,
    PreconditionFailedError,
)
from .._fetch import check_requests
from .._keys import normalize_list_prefix, validate_key
from .._memory import slice_range
from .._ranges import ByteRequest, check_byte_request
from .._settings import StorageSettings
from .._storage import (
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
from .._sync import sync
from ._errors import (
    ConflictError,
    MergeConflictError,
    ReadOnlySessionError,
    RepositoryError,
    RepositoryFormatError,
    SessionPickleError,
    SessionStateError,
)
from ._format import (
    ManifestEntry,
    RepoInfo,
    Snapshot,
    SnapshotInfo,
    chunk_key,
    manifest_key,
    new_id,
    now_ms,
    snapshot_key,
)
from ._manifests import ManifestReader, write_tree

if TYPE_CHECKING:
    from ..zarr import ZarrStore
    from ._repository import Repository

__all__ = ["JSONValue", "Session", "SessionStorage"]

JSONValue: TypeAlias = (
    str | int | float | bool | Sequence["JSONValue"] | Mapping[str, "JSONValue"] | None
)
"""What commit metadata may hold: it is stored as JSON."""


class Session:
    """A view of one snapshot, and (if writable) uncommitted changes to commit to a branch.

    Get one from ``repo.writable_session(branch)`` or ``repo.readonly_session(...)``.
    After a successful commit the session is read-only and reads the new snapshot.
    """

    def __init__(
        self,
        repository: Repository,
        *,
        branch: str | None,
        snapshot_id: str,
        writable: bool,
        fork_of: str | None = None,
    ) -> None:
        self._repo = repository
        self._branch = branch
        self._snapshot_id = snapshot_id
        self._writable = writable
        self._committed = False
        self._changes: dict[str, ManifestEntry | None] = {}  # None: deleted
        self._lock = threading.Lock()
        self._committing = False
        self._reader: ManifestReader | None = None
        # Forks only: the snapshot of the session forked (merge checks it), and the version
        # each changed key had in the fork's base (None: absent), for the merge rule.
        self._fork_of = fork_of
        self._replaced: dict[str, str | None] = {}

    def _state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "repo": self._repo,
                "branch": self._branch,
                "snapshot_id": self._snapshot_id,
                "writable": self._writable,
                "committed": self._committed,
                "changes": dict(self._changes),
                "fork_of": self._fork_of,
                "replaced": dict(self._replaced),
            }

    def __getstate__(self) -> dict[str, Any]:
        if not self.read_only and self._fork_of is None:
            raise SessionPickleError(
                "A writable session cannot be pickled (nor its storage, nor a ZarrStore over "
                "it): a copy written in another process, such as a dask task, keeps its "
                "changes, and the commit would silently miss them. Use session.fork() for a "
                "picklable fork and session.merge(*forks) afterwards; for xarray use "
                "icechunk_storage.xarray.to_icechunk(ds, session) instead of ds.to_zarr; to "
                "read in workers, pickle repo.readonly_session(...)."
            )
        return self._state()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["repo"],
            branch=state["branch"],
            snapshot_id=state["snapshot_id"],
            writable=state["writable"],
            fork_of=state["fork_of"],
        )
        self._committed = state["committed"]
        self._changes = state["changes"]
        self._replaced = state["replaced"]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Session):
            return NotImplemented
        return self._state() == other._state()

    def __hash__(self) -> int:
        return hash((Session, self._branch, self._snapshot_id))

    def __repr__(self) -> str:
        if self._fork_of is not None:
            mode = f"fork of snapshot {self._fork_of} on branch {self._branch!r}"
        elif self.read_only:
            mode = "read-only"
        else:
            mode = f"writable on branch {self._branch!r}"
        return f"Session({mode}, snapshot {self._snapshot_id}, repository {self._repo!r})"

    # --- state -------------------------------------------------------------------------------

    @property
    def branch(self) -> str | None:
        """The branch this session commits to (None for sessions on a tag or snapshot)."""
        return self._branch

    @property
    def snapshot_id(self) -> str:
        """The snapshot this session reads (its parent, for a commit)."""
        return self._snapshot_id

    @property
    def read_only(self) -> bool:
        return not self._writable or self._committed

    @property
    def has_uncommitted_changes(self) -> bool:
        return bool(self._changes)

    @property
    def repository(self) -> Repository:
        return self._repo

    @property
    def is_fork(self) -> bool:
        """True for a session made by :meth:`fork` (picklable, merged instead of committed)."""
        return self._fork_of is not None

    @property
    def storage(self) -> SessionStorage:
        """This session's key/value view as a :class:`Storage` (what the Zarr adapter wraps)."""
        return SessionStorage(self)

    @property
    def store(self) -> ZarrStore:
        """A Zarr store over this session (needs the ``zarr`` extra): ``zarr.open(session.store)``
        and ``xr.open_zarr(session.store)`` work as with Icechunk."""
        from ..zarr import ZarrStore

        return ZarrStore(SessionStorage(self))

    # --- distributed writes ------------------------------------------------------------------

    async def fork_async(self) -> Session:
        """See :meth:`fork`."""
        with self._lock:
            self._check_writable()
            if self._fork_of is not None:
                raise SessionStateError(
                    "A fork cannot be forked again; fork the session it came from."
                )
            changes = bool(self._changes)
        base = self._snapshot_id
        if changes:
            # The fork starts from the session's current view: written once as an anonymous
            # snapshot (in no index, garbage once unused), so each pickled fork stays small.
            info = SnapshotInfo(
                id=new_id(),
                parent_id=self._snapshot_id,
                written_at=now_ms(),
                message=f"fork of a session on {self._snapshot_id}",
                metadata={"icechunk_storage_fork": True},
            )
            with self._lock:
                pending = dict(self._changes)
            nodes, _ = await write_tree(await self._base(), pending)
            await self._repo._write_snapshot(Snapshot(info=info, nodes=nodes))
            base = info.id
        return Session(
            self._repo,
            branch=self._branch,
            snapshot_id=base,
            writable=True,
            fork_of=self._snapshot_id,
        )

    def fork(self) -> Session:
        """A picklable child session for distributed writers (dask tasks, other processes).

        The fork reads this session's current view (uncommitted changes included) and writes
        on top of it. Ship it to workers, get the copies back (they carry their changes when
        pickled), and fold them in with :meth:`merge`; then commit this session. A fork cannot
        be committed itself. Chunk bytes go to storage at write time, so the storage must be
        shared by the processes (local filesystem, S3 ...; not an in-memory storage).
        """
        return sync(self.fork_async(), name="Session.fork")

    async def merge_async(self, *forks: Session) -> None:
        """See :meth:`merge`."""
        for fork in forks:
            if fork is not self:
                await self._merge_one(fork)

    def merge(self, *forks: Session) -> None:
        """Fold the changes of forks (made by :meth:`fork`, possibly pickled and changed in
        other processes) into this session, one fork at a time.

        The rule for a key changed by a fork: the change applies only over the value the fork
        started from. If the key changed meanwhile in this session (another fork's change
        merged first, or a write here after forking) to something else, that is a conflict:
        :class:`MergeConflictError` names the keys and nothing of that fork is merged. The
        same change arriving twice (copies of one fork) is merged once. Never "last wins".
        """
        sync(self.merge_async(*forks), name="Session.merge")

    async def _merge_one(self, fork: Session) -> None:
        if not isinstance(fork, Session) or fork._fork_of is None:
            raise ConfigurationError(f"merge() takes forks made by Session.fork(), got {fork!r}.")
        if fork._repo != self._repo:
            if not self._repo._storage_is_shared():
                raise RepositoryError(
                    f"{fork!r} was pickled, and pickling copies an in-memory storage: its "
                    f"chunks went to that copy, not to {self._repo.storage!r}. Forks that "
                    "travel need a storage every process shares (local filesystem, S3 ...)."
                )
            raise ConfigurationError(f"{fork!r} is a fork of another repository's session.")
        mine = self._fork_of if self._fork_of is not None else self._snapshot_id
        if fork._fork_of != mine or (
            self._fork_of is not None and fork._snapshot_id != self._snapshot_id
        ):
            raise SessionStateError(
                f"{fork!r} was not forked from this session (or this session was committed "
                "since): merge forks into the session they were forked from."
            )
        with fork._lock:
            incoming = dict(fork._changes)
            replaced = dict(fork._replaced)
        unknown = [key for key in incoming if key not in replaced]
        if unknown:
            theirs = await (await fork._base()).entries(unknown)
            for key, entry in theirs.items():
                replaced[key] = None if entry is None else entry.version
        base = await (await self._base()).entries(incoming)
        with self._lock:
            self._check_writable()
            conflicts: list[str] = []
            apply: list[str] = []
            for key, entry in incoming.items():
                current = self._changes[key] if key in self._changes else base.get(key)
                if current == entry:
                    continue  # the same change, already here
                if (None if current is None else current.version) == replaced[key]:
                    apply.append(key)
                else:
                    conflicts.append(key)
            if conflicts:
                raise MergeConflictError(sorted(conflicts))
            for key in apply:
                entry = incoming[key]
                if entry is None and base.get(key) is None:
                    self._changes.pop(key, None)
                else:
                    self._changes[key] = entry
                if self._fork_of is not None:
                    self._replaced.setdefault(key, replaced[key])

    def discard_changes(self) -> None:
        """Forget every uncommitted change (chunk objects already written become garbage)."""
        with self._lock:
            self._check_writable()
            self._changes.clear()
            self._replaced.clear()

    # --- commit ------------------------------------------------------------------------------

    async def commit_async(
        self,
        message: str,
        metadata: Mapping[str, JSONValue] | None = None,
        *,
        allow_empty: bool = False,
    ) -> str:
        """See :meth:`commit`."""
        if not isinstance(message, str):
            raise ConfigurationError(f"message must be a str, got {type(message).__name__}.")
        metadata = dict(metadata or {})
        try:
            json.dumps(metadata)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"Commit metadata must be JSON-serializable (str keys; str, number, bool, "
                f"None, list or dict values): {exc}"
            ) from None
        with self._lock:
            self._check_writable()
            if self._fork_of is not None:
                raise SessionStateError(
                    "A fork cannot be committed: merge it into the session it was forked from "
                    "(session.merge(fork)) and commit that session."
                )
            if self._committing:
                raise SessionStateError("A commit of this session is already running.")
            if not self._changes and not allow_empty:
                raise SessionStateError(
                    "No changes to commit; pass allow_empty=True to commit anyway."
                )
            self._committing = True
            changes = dict(self._changes)
        try:
            snapshot_id = await self._commit(changes, message, metadata)
        finally:
            self._committing = False
        return snapshot_id

    def commit(
        self,
        message: str,
        metadata: Mapping[str, JSONValue] | None = None,
        *,
        allow_empty: bool = False,
    ) -> str:
        """Commit the changes to the session's branch and return the new snapshot id.

        Raises ConflictError (carrying ``expected_parent`` and ``actual_parent``) if the
        branch moved since the session started; the session then keeps its changes.
        Afterwards the session is read-only and reads the new snapshot.
        """
        return sync(
            self.commit_async(message, metadata, allow_empty=allow_empty),
            name="Session.commit",
        )

    async def _commit(
        self, changes: Mapping[str, ManifestEntry | None], message: str, metadata: dict[str, Any]
    ) -> str:
        repo, branch, parent = self._repo, self._branch, self._snapshot_id
        assert branch is not None
        reader = await self._base()
        nodes, written = await write_tree(reader, changes)
        info = SnapshotInfo(
            id=new_id(),
            parent_id=parent,
            written_at=now_ms(),
            message=message,
            metadata=metadata,
        )
        await repo._write_snapshot(Snapshot(info=info, nodes=nodes))
        # Everything the new snapshot refers to that may not be durable yet (the local
        # filesystem writes chunks and manifests without fsync) is made durable before the
        # compare-and-swap makes it visible.
        await repo._flush(
            [
                *{chunk_key(e.chunk) for e in changes.values() if e is not None and e.chunk},
                *(manifest_key(m.id) for m in written if m.id is not None),
                snapshot_key(info.id),
            ]
        )

        def move_branch(repo_info: RepoInfo) -> RepoInfo | None:
            if info.id in repo_info.snapshots:
                # Our snapshot is in the index: an earlier attempt landed although it looked
                # failed (lost response, timeout), and others committed on top since. The id
                # is fresh and random, and only this update adds it (moving the branch with
                # it), so this is proof, not a guess: reporting a conflict would make the
                # caller commit the same changes twice.
                return None
            tip = repo_info.branches.get(branch)
            if tip != parent:
                raise ConflictError(branch, parent, tip)
            return repo_info.with_snapshot(info).with_branch(branch, info.id)

        await repo._update_info(move_branch)
        committed = ManifestReader(repo, Snapshot(info=info, nodes=nodes))
        committed.keep(reader.kept())
        committed.keep(written)
        with self._lock:
            self._committed = True
            self._snapshot_id = info.id
            self._reader = committed
            self._changes.clear()
        return info.id

    # --- the view ----------------------------------------------------------------------------

    def _check_writable(self) -> None:
        """Call with the lock held."""
        if self._committed:
            raise ReadOnlySessionError(
                f"This session was committed as snapshot {self._snapshot_id} and is now "
                "read-only; start a new writable session to make more changes."
            )
        if not self._writable:
            raise ReadOnlySessionError(
                f"This session is read-only (it reads snapshot {self._snapshot_id}); use "
                "repo.writable_session(branch) to write."
            )
        if self._committing:
            raise SessionStateError(
                "This session is being committed; writes are refused until the commit ends."
            )

    async def _base(self) -> ManifestReader:
        """The session's snapshot, its manifests loaded on demand."""
        reader = self._reader
        if reader is None:
            snapshot = await self._repo._read_snapshot(self._snapshot_id)
            reader = self._reader = ManifestReader(self._repo, snapshot)
        return reader

    async def _entry(self, key: str) -> ManifestEntry | None:
        reader = await self._base()
        with self._lock:
            if key in self._changes:
                return self._changes[key]
        return await reader.entry(key)

    async def _entries(self, keys: Iterable[str]) -> dict[str, ManifestEntry | None]:
        reader = await self._base()
        keys = list(keys)
        with self._lock:
            local = {key: self._changes[key] for key in keys if key in self._changes}
        found = await reader.entries(key for key in keys if key not in local)
        found.update(local)
        return found

    def _changes_under(self, prefix: str) -> dict[str, ManifestEntry | None]:
        with self._lock:
            return {k: v for k, v in self._changes.items() if k.startswith(prefix)}

    async def _items_under(self, prefix: str) -> list[tuple[str, ManifestEntry]]:
        """The view's (key, entry) pairs under ``prefix``, sorted."""
        reader = await self._base()
        items = dict(await reader.items_under(prefix))
        for key, entry in self._changes_under(prefix).items():
            if entry is None:
                items.pop(key, None)
            else:
                items[key] = entry
        return sorted(items.items(), key=lambda item: item[0])


def _version(entry: ManifestEntry) -> VersionInfo:
    return VersionInfo(etag=entry.version)


def _info(key: str, entry: ManifestEntry) -> ObjectInfo:
    return ObjectInfo(
        key=key, size=entry.size, last_modified=entry.last_modified, version=_version(entry)
    )


_IN_MEMORY_CONDITIONS = Capabilities()
"""A session checks every condition against its own view: it can honour them all."""


class SessionStorage(Storage):
    """A session's key/value view as a :class:`Storage`; see the module docstring.

    Keys are the session's keys (no prefix). Equality and pickling follow the session.
    """

    def __init__(self, session: Session, storage: Storage | None = None) -> None:
        self._session = session
        self._storage = storage if storage is not None else session.repository.storage

    @property
    def session(self) -> Session:
        return self._session

    def __repr__(self) -> str:
        return f"SessionStorage({self._session!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SessionStorage):
            return NotImplemented
        return self._session == other._session and bool(self._storage == other._storage)

    def __hash__(self) -> int:
        return hash((SessionStorage, self._session))

    # --- configuration -----------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        return ""

    @property
    def settings(self) -> StorageSettings:
        return self._storage.settings

    def default_settings(self) -> StorageSettings:
        return self._storage.default_settings()

    def with_settings(self, settings: StorageSettings | None) -> Self:
        """The same session's view, reading and writing chunks with other storage settings."""
        return type(self)(self._session, self._storage.with_settings(settings))

    @property
    def capabilities(self) -> Capabilities:
        """Conditions are checked in memory, so they always hold; the unsafe flags drop them
        here too (``effective_write_mode``), as on every storage."""
        writable = not self._session.read_only
        settings = self.settings
        return Capabilities(
            can_write=writable,
            conditional_create=writable and settings.conditional_create,
            conditional_update=writable and settings.conditional_update,
            conditional_read=True,
            shared_across_processes=self._storage.capabilities.shared_across_processes,
        )

    # --- reads -------------------------------------------------------------------------------

    async def _require(self, key: str) -> ManifestEntry:
        entry = await self._session._entry(validate_key(key))
        if entry is None:
            raise ObjectNotFoundError(key)
        return entry

    async def _read(self, key: str, entry: ManifestEntry, byte_range: ByteRequest | None) -> Data:
        if entry.chunk is None:
            return slice_range(entry.inline or b"", byte_range)
        try:
            async with self._session.repository._slot():
                return (await self._storage.get(chunk_key(entry.chunk), byte_range)).data
        except ObjectNotFoundError:
            raise RepositoryFormatError(
                f"The value of {key!r} is stored in {chunk_key(entry.chunk)!r}, which is "
                "missing: the repository is damaged."
            ) from None

    async def get(self, key: str, byte_range: ByteRequest | None = None) -> GetResult:
        check_byte_request(byte_range)
        entry = await self._require(key)
        return GetResult(await self._read(key, entry, byte_range), _version(entry))

    async def get_if_changed(self, key: str, version: VersionInfo) -> GetResult | None:
        entry = await self._require(key)
        if _version(entry) == version:
            return None
        return GetResult(await self._read(key, entry, None), _version(entry))

    async def head(self, key: str) -> ObjectInfo:
        return _info(key, await self._require(key))

    async def get_many(
        self,
        requests: Iterable[tuple[str, ByteRequest | None]],
        *,
        missing_ok: bool = False,
        max_concurrency: int | None = None,
    ) -> list[Data | None]:
        listed = list(requests)
        check_requests(listed)
        view = await self._session._entries(key for key, _ in listed)
        results: list[Data | None] = [None] * len(listed)
        remote: list[tuple[int, str]] = []  # (request index, chunk id)
        for index, (key, byte_range) in enumerate(listed):
            entry = view[key]
            if entry is None:
                if not missing_ok:
                    raise ObjectNotFoundError(key)
            elif entry.chunk is None:
                results[index] = slice_range(entry.inline or b"", byte_range)
            else:
                remote.append((index, entry.chunk))

        # One call into the storage's fetch path (batched small reads, split large ranges,
        # the first error cancels the rest), at most the repository's limit in flight.
        limit = self._session.repository.config.effective_max_concurrent_requests
        fetched = await self._storage.get_many(
            [(chunk_key(chunk), listed[index][1]) for index, chunk in remote],
            missing_ok=True,
            max_concurrency=min(limit, max_concurrency or limit),
        )
        for (index, chunk), data in zip(remote, fetched, strict=True):
            if data is None:
                raise RepositoryFormatError(
                    f"The value of {listed[index][0]!r} is stored in {chunk_key(chunk)!r}, "
                    "which is missing: the repository is damaged."
                )
            results[index] = data
        return results

    # --- writes ------------------------------------------------------------------------------

    def _check_mode(self, key: str, mode: PutMode, current: ManifestEntry | None) -> None:
        if mode == "overwrite":
            return  # no condition (what Zarr writes): nothing to check, per put
        mode = effective_write_mode(mode, self.settings, _IN_MEMORY_CONDITIONS, self)
        if mode == "create":
            if current is not None:
                raise AlreadyExistsError(key)
        elif isinstance(mode, VersionInfo) and (current is None or _version(current) != mode):
            raise PreconditionFailedError(key, mode)

    def _set(
        self,
        key: str,
        entry: ManifestEntry | None,
        mode: PutMode,
        original: ManifestEntry | None,
    ) -> None:
        """Apply one change atomically, re-checking the write mode against the current value.

        ``original`` is the key's entry in the session's snapshot; a plain overwrite outside
        a fork does not need it (None is passed without looking it up).
        """
        session = self._session
        with session._lock:
            session._check_writable()
            current = session._changes.get(key, original)
            self._check_mode(key, mode, current)
            if session._fork_of is not None and key not in session._replaced:
                # what the fork started from
                session._replaced[key] = None if original is None else original.version
            if entry is None and original is None:
                session._changes.pop(key, None)
            else:
                session._changes[key] = entry

    async def put(
        self,
        key: str,
        data: Data,
        *,
        mode: PutMode = "overwrite",
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> VersionInfo:
        validate_key(key)
        check_put_data(data)
        session = self._session
        with session._lock:
            session._check_writable()
        # A plain overwrite (what Zarr writes) needs nothing from the snapshot: no manifest
        # is read. Other modes, and forks (the merge rule), need the current entry.
        original = None
        if mode != "overwrite" or session._fork_of is not None:
            original = await (await session._base()).entry(key)
            self._check_mode(key, mode, await session._entry(key))  # fail before uploading
        value = bytes(data)
        version = new_id()
        # not ``repository.config``, which merges configs on every call
        threshold = session._repo._config.effective_inline_chunk_threshold_bytes
        if len(value) > threshold:
            async with session.repository._slot():
                await self._storage.put(chunk_key(version), value)
            entry = ManifestEntry(version, len(value), now_ms(), chunk=version)
        else:
            entry = ManifestEntry(version, len(value), now_ms(), inline=value)
        self._set(key, entry, mode, original)
        return _version(entry)

    async def copy(
        self, source: str, destination: str, *, if_version: VersionInfo | None = None
    ) -> VersionInfo:
        validate_key(destination)
        with self._session._lock:
            self._session._check_writable()
        entry = await self._require(source)
        if if_version is not None and _version(entry) != if_version:
            raise PreconditionFailedError(source, if_version)
        copied = attrs.evolve(entry, version=new_id(), last_modified=now_ms())
        original = await (await self._session._base()).entry(destination)
        self._set(destination, copied, "overwrite", original)
        return _version(copied)

    async def delete(self, key: str) -> None:
        validate_key(key)
        with self._session._lock:
            self._session._check_writable()
        self._set(key, None, "overwrite", await (await self._session._base()).entry(key))

    async def delete_many(
        self, items: Iterable[str | ObjectInfo] | AsyncIterable[str | ObjectInfo]
    ) -> DeleteResult:
        with self._session._lock:
            self._session._check_writable()
        keys: list[str] = []
        if isinstance(items, AsyncIterable):
            keys = [i.key if isinstance(i, ObjectInfo) else i async for i in items]
        else:
            keys = [i.key if isinstance(i, ObjectInfo) else i for i in items]
        for key in keys:
            validate_key(key)
        view = await self._session._entries(keys)
        base = await (await self._session._base()).entries(keys)
        deleted = deleted_bytes = 0
        for key in dict.fromkeys(keys):
            entry = view[key]
            if entry is not None:
                self._set(key, None, "overwrite", base[key])
                deleted += 1
                deleted_bytes += entry.size
        return DeleteResult(deleted_objects=deleted, deleted_bytes=deleted_bytes)

    # --- listing -----------------------------------------------------------------------------

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        start = normalize_list_prefix(prefix)
        for key, entry in await self._session._items_under(start):
            yield _info(key, entry)

    async def list_dir(self, prefix: str = "") -> ListResult:
        start = normalize_list_prefix(prefix)
        session = self._session
        objects, prefixes = await (await session._base()).list_dir(start)
        found = dict(objects)
        changes = session._changes_under(start)
        for key, entry in changes.items():
            head, sep, _ = key[len(start) :].partition("/")
            if sep:
                if entry is not None:
                    prefixes.add(start + head + "/")
            elif entry is None:
                found.pop(key, None)
            else:
                found[key] = entry
        if any(entry is None for entry in changes.values()):
            # a deleted key may have been a directory's last: look at those directories again
            for directory in [p for p in prefixes if any(k.startswith(p) for k in changes)]:
                if not await session._items_under(directory):
                    prefixes.discard(directory)
        listed = [_info(key, found[key]) for key in sorted(found)]
        return ListResult(objects=listed, prefixes=sorted(prefixes))

    # --- lifecycle ---------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Release the repository storage's connections for the running loop (it stays
        usable, as every Storage does after ``aclose``)."""
        await self._storage.aclose()
