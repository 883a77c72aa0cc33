"""``Repository``: create and open repositories, branches, tags, and the info-object updates.

Every operation is async first (``*_async``); the sync forms are one line each through the
shared bridge (``_sync.sync``). The on-storage format and the protocols are described in
``docs/repository-format.md``; the code that encodes objects is ``_format.py``.

Every change to the repository (a commit, a branch or tag change, saving the config) is one
read-modify-write of the info object ``repo``, done by :meth:`Repository._update_info`:
read it with its version, apply the change (which may refuse, e.g. with ConflictError),
back the current version up to ``overwritten/`` (a copy conditional on that version), and
write the new one conditional on that version. Losing the race to another writer means
reading again and re-applying; nothing is ever written over a version we did not read.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .._errors import (
    AlreadyExistsError,
    ConditionFailedError,
    ConfigurationError,
    NotSupportedByServerError,
    ObjectNotFoundError,
    PreconditionFailedError,
    ReadOnlyStorageError,
    RetriesExhaustedError,
    StorageError,
    TransientError,
)
from .._loops import LoopLocal
from .._retry import RetryPolicy
from .._settings import StorageSettings
from .._storage import Storage, VersionInfo
from .._sync import sync
from ._config import RepositoryConfig
from ._errors import (
    BranchNotFoundError,
    ConflictError,
    NotARepositoryError,
    RefAlreadyExistsError,
    RepositoryAlreadyExistsError,
    RepositoryFormatError,
    RepositoryLocationError,
    RepositoryNotFoundError,
    SnapshotNotFoundError,
    TagNotFoundError,
    TooManyConcurrentChangesError,
)
from ._format import (
    INITIAL_SNAPSHOT_ID,
    REPO_INFO_KEY,
    SPEC_VERSION,
    Manifest,
    RepoInfo,
    Snapshot,
    SnapshotInfo,
    backup_key,
    decode_info,
    decode_manifest,
    decode_snapshot,
    encode_info,
    encode_manifest,
    encode_snapshot,
    is_valid_id,
    manifest_key,
    snapshot_key,
)
from ._gc import GCSummary, expire_snapshots, garbage_collect

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["IMMEDIATE_UPDATE_ATTEMPTS", "Repository", "repo_update_delay"]

IMMEDIATE_UPDATE_ATTEMPTS = 5
"""Attempts at updating the info object that run back to back, before any backoff."""

MAX_UNCERTAIN_UPDATES = 3
"""Updates of the info object whose outcome is unknown (a transient error after the storage
layer's own retries) that one change re-checks before giving up and raising that error."""

_REF_NAME = re.compile(r"[^/\x00-\x1f\x7f]{1,255}")


def repo_update_delay(
    attempt: int, initial: float, maximum: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait before update attempt ``attempt`` (1-based) of the info object.

    The first five attempts run immediately; after that, full jitter over an exponential
    ceiling from ``initial`` (50 ms) doubling to ``maximum`` (30 s), as Icechunk does.
    """
    if attempt <= IMMEDIATE_UPDATE_ATTEMPTS:
        return 0.0
    policy = RetryPolicy(max_tries=attempt, initial_backoff=initial, max_backoff=maximum)
    return policy.backoff(attempt - IMMEDIATE_UPDATE_ATTEMPTS, rng)


def _check_storage(storage: object) -> Storage:
    if not isinstance(storage, Storage):
        raise ConfigurationError(
            f"storage must be a Storage (e.g. from in_memory_storage() or s3_storage()), got "
            f"{type(storage).__name__}."
        )
    return storage


def _check_config(config: object) -> RepositoryConfig:
    if config is None:
        return RepositoryConfig()
    if not isinstance(config, RepositoryConfig):
        raise ConfigurationError(
            f"config must be a RepositoryConfig or None, got {type(config).__name__}."
        )
    return config


def _check_ref_name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not _REF_NAME.fullmatch(name):
        raise ConfigurationError(
            f"Invalid {kind} name {name!r}: use 1 to 255 characters, without '/' or control "
            "characters."
        )
    return name


def _check_snapshot_id(snapshot_id: object) -> str:
    if not is_valid_id(snapshot_id):
        raise ConfigurationError(
            f"Invalid snapshot id {snapshot_id!r}: snapshot ids are 20 characters of Crockford "
            "base32, as returned by commit()."
        )
    assert isinstance(snapshot_id, str)
    return snapshot_id


def requires_prefix(storage: Storage) -> bool:
    """True for cloud object stores, where a repository at the bucket root is refused."""
    return storage.capabilities.requires_prefix_for_repository


def _apply_settings(
    storage: Storage, persisted: StorageSettings | None, user: StorageSettings | None
) -> Storage:
    """The storage with settings: user's over persisted over the backend's defaults.

    Settings given when the storage was constructed count as the user's, below the config's.
    """
    constructed = storage.user_settings
    merged: StorageSettings | None = None
    for layer in (persisted, constructed, user):
        if layer is not None:
            merged = layer if merged is None else merged.merge(layer)
    if merged is None or merged == constructed:
        return storage
    return storage.with_settings(merged)


_PROBE_PREFIX = "conditions-probe-"
_UNSAFE_HINT = (
    "pass RepositoryConfig(storage=StorageSettings(unsafe_use_conditional_create=False, "
    "unsafe_use_conditional_update=False)) for a store without conditional writes, and "
    "accept that concurrent commits can then overwrite each other"
)


async def _check_conditions_honoured(storage: Storage) -> None:
    """Before a repository is created: does the store really honour the conditional writes
    the settings rely on? A store that ignores them would let concurrent commits overwrite
    each other without anyone knowing; one that rejects them would fail every commit. Both are
    refused here, naming the settings that accept the risk. Three small writes and a delete
    of a probe object; skipped when the unsafe settings already say the store has none."""
    settings = storage.settings
    if not (settings.conditional_create or settings.conditional_update):
        return
    probe = _PROBE_PREFIX + uuid.uuid4().hex
    ignored: list[str] = []
    try:
        first = await storage.put(probe, b"first")
        if settings.conditional_create:
            try:
                await storage.put(probe, b"second", mode="create")
                ignored.append("create (If-None-Match: *)")
            except AlreadyExistsError:
                pass
        if settings.conditional_update:
            await storage.put(probe, b"third")  # `first` is stale now
            try:
                await storage.put(probe, b"fourth", mode=first)
                ignored.append("update (If-Match)")
            except PreconditionFailedError:
                pass
    except NotSupportedByServerError as exc:
        raise ConfigurationError(
            f"{storage!r} rejects conditional writes ({exc}); {_UNSAFE_HINT}."
        ) from exc
    finally:
        with contextlib.suppress(StorageError):
            await storage.delete(probe)
    if ignored:
        raise ConfigurationError(
            f"{storage!r} ignores conditional writes: a conditional "
            f"{' and a conditional '.join(ignored)} succeeded where they must fail. Commits "
            f"there could overwrite each other; {_UNSAFE_HINT}."
        )


class Repository:
    """A version-controlled repository of keys and values on a :class:`Storage`.

    Construct with :meth:`create`, :meth:`open` or :meth:`open_or_create` (or their
    ``_async`` forms). A repository pickles by configuration (memory storages with their
    data) and works in another process; live clients are rebuilt there on first use.
    """

    def __init__(
        self, storage: Storage, explicit_config: RepositoryConfig, *, _private: bool = False
    ) -> None:
        if not _private:
            raise TypeError(
                "Use Repository.create(storage), Repository.open(storage) or "
                "Repository.open_or_create(storage) to get a Repository."
            )
        self._storage = storage
        self._explicit = explicit_config
        self._config = RepositoryConfig.default().merge(explicit_config)
        self._limiter = self._new_limiter()

    def _new_limiter(self) -> LoopLocal[asyncio.Semaphore]:
        limit = self._config.effective_max_concurrent_requests
        return LoopLocal(lambda: asyncio.Semaphore(limit))

    def __getstate__(self) -> dict[str, Any]:
        return {"storage": self._storage, "explicit": self._explicit}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["storage"], state["explicit"], _private=True)  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"Repository({self._storage!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Repository):
            return NotImplemented
        return bool(self._storage == other._storage) and self._explicit == other._explicit

    def __hash__(self) -> int:
        return hash((Repository, self._storage))

    # --- properties --------------------------------------------------------------------------

    @property
    def storage(self) -> Storage:
        """The repository's storage, with the merged settings applied."""
        return self._storage

    @property
    def config(self) -> RepositoryConfig:
        """The effective config: the user's over the persisted over the defaults, with
        ``storage`` holding the merged storage settings."""
        return self._config.merge(RepositoryConfig(storage=self._storage.settings))

    # --- create / open -----------------------------------------------------------------------

    @classmethod
    async def create_async(
        cls, storage: Storage, config: RepositoryConfig | None = None
    ) -> Repository:
        """See :meth:`create`."""
        storage, config = _check_storage(storage), _check_config(config)
        if requires_prefix(storage) and not storage.prefix:
            raise RepositoryLocationError(
                f"Refused to create a repository at an empty prefix (the bucket root) of "
                f"{storage!r}: this is not supported, as in Icechunk since v2.1.0. Give the "
                "storage a prefix."
            )
        storage = _apply_settings(storage, None, config.storage)
        if not storage.capabilities.can_write:
            raise ReadOnlyStorageError(f"Cannot create a repository on read-only {storage!r}.")
        await _check_clean(storage)
        await _check_conditions_honoured(storage)
        repo = cls(storage, config, _private=True)
        initial = Snapshot(
            info=SnapshotInfo(
                id=INITIAL_SNAPSHOT_ID,
                parent_id=None,
                written_at=datetime.now(UTC),
                message="Repository initialized",
            ),
            nodes={},
        )
        await repo._write_snapshot(initial)
        await repo._flush([snapshot_key(INITIAL_SNAPSHOT_ID)])
        info = RepoInfo.initial(initial.info, config)
        try:
            await storage.put(
                REPO_INFO_KEY,
                repo._encode_info(info),
                mode="create",
                metadata=_metadata("repo-info"),
            )
            if not storage.settings.conditional_create:
                await repo._flush([REPO_INFO_KEY])  # a plain overwrite is not fsynced
        except AlreadyExistsError as exc:
            raise RepositoryAlreadyExistsError(
                f"A repository was created at {storage!r} by someone else while this one was "
                "being created; open it with Repository.open()."
            ) from exc
        return repo

    @classmethod
    def create(cls, storage: Storage, config: RepositoryConfig | None = None) -> Repository:
        """Create a repository with one branch, ``main``, at the initial snapshot.

        Refused before anything is written if the storage is a cloud store at an empty prefix
        or the prefix already holds objects (RepositoryLocationError), or holds a repository
        (RepositoryAlreadyExistsError). The info object is written last, with a conditional
        create: of two concurrent creators one fails with RepositoryAlreadyExistsError, and a
        crash part-way leaves no repository behind.
        """
        return sync(cls.create_async(storage, config), name="Repository.create")

    @classmethod
    async def open_async(
        cls, storage: Storage, config: RepositoryConfig | None = None
    ) -> Repository:
        """See :meth:`open`."""
        storage, config = _check_storage(storage), _check_config(config)
        reader = _apply_settings(storage, None, config.storage)
        info, _ = await _read_info(reader)
        explicit = info.config.merge(config)
        persisted_storage = info.config.storage
        storage = _apply_settings(storage, persisted_storage, config.storage)
        return cls(storage, explicit, _private=True)

    @classmethod
    def open(cls, storage: Storage, config: RepositoryConfig | None = None) -> Repository:
        """Open the repository at ``storage``; RepositoryNotFoundError if there is none.

        Settings: ``config``'s over the config persisted in the repository over the
        backend's defaults.
        """
        return sync(cls.open_async(storage, config), name="Repository.open")

    @classmethod
    async def open_or_create_async(
        cls, storage: Storage, config: RepositoryConfig | None = None
    ) -> Repository:
        """See :meth:`open_or_create`."""
        try:
            return await cls.open_async(storage, config)
        except RepositoryNotFoundError:
            pass
        try:
            return await cls.create_async(storage, config)
        except RepositoryAlreadyExistsError:
            return await cls.open_async(storage, config)  # another process created it first

    @classmethod
    def open_or_create(cls, storage: Storage, config: RepositoryConfig | None = None) -> Repository:
        """Open the repository, or create it if there is none (safe against a racing
        creator: the loser opens the winner's repository)."""
        return sync(cls.open_or_create_async(storage, config), name="Repository.open_or_create")

    @staticmethod
    async def exists_async(
        storage: Storage, storage_settings: StorageSettings | None = None
    ) -> bool:
        """See :meth:`exists`."""
        storage = _apply_settings(_check_storage(storage), None, storage_settings)
        try:
            await _read_info(storage)
        except NotARepositoryError:
            raise
        except RepositoryNotFoundError:
            return False
        return True

    @staticmethod
    def exists(storage: Storage, storage_settings: StorageSettings | None = None) -> bool:
        """True if a repository this library can open is at ``storage``; False if the location
        holds nothing (or only what a crashed ``create`` left).

        A location holding something else raises NotARepositoryError saying what was found
        (an Icechunk repository, a plain Zarr hierarchy, other objects), rather than answer
        False and invite a ``create`` over it; an info object of a newer format version
        raises RepositoryFormatError.
        """
        return sync(Repository.exists_async(storage, storage_settings), name="Repository.exists")

    @staticmethod
    async def fetch_config_async(storage: Storage) -> RepositoryConfig | None:
        """See :meth:`fetch_config`."""
        try:
            info, _ = await _read_info(_check_storage(storage))
        except NotARepositoryError:
            raise
        except RepositoryNotFoundError:
            return None
        return info.config

    @staticmethod
    def fetch_config(storage: Storage) -> RepositoryConfig | None:
        """The config persisted in the repository at ``storage`` (only the fields set
        explicitly), or None if there is no repository."""
        return sync(Repository.fetch_config_async(storage), name="Repository.fetch_config")

    async def save_config_async(self) -> None:
        """See :meth:`save_config`."""
        explicit = self._explicit
        await self._update_info(lambda info: info.with_config(explicit))

    def save_config(self) -> None:
        """Persist this repository's explicit config (the persisted one merged with the one
        given to ``open``/``create``) so later ``open`` calls use it. Backend defaults are not
        persisted."""
        sync(self.save_config_async(), name="Repository.save_config")

    # --- sessions ------------------------------------------------------------------------------

    async def writable_session_async(self, branch: str) -> Session:
        """See :meth:`writable_session`."""
        from ._session import Session

        branch = _check_ref_name("branch", branch)
        info, _ = await self._read_info()
        tip = info.branches.get(branch)
        if tip is None:
            raise _branch_not_found(branch, info)
        return Session(self, branch=branch, snapshot_id=tip, writable=True)

    def writable_session(self, branch: str) -> Session:
        """A session that writes on top of ``branch``'s tip and commits to ``branch``."""
        return sync(self.writable_session_async(branch), name="Repository.writable_session")

    async def readonly_session_async(
        self,
        branch: str | None = None,
        *,
        tag: str | None = None,
        snapshot_id: str | None = None,
    ) -> Session:
        """See :meth:`readonly_session`."""
        from ._session import Session

        snapshot = await self._resolve(branch, tag, snapshot_id, what="readonly_session")
        return Session(self, branch=None, snapshot_id=snapshot, writable=False)

    def readonly_session(
        self,
        branch: str | None = None,
        *,
        tag: str | None = None,
        snapshot_id: str | None = None,
    ) -> Session:
        """A read-only session at a branch's current tip, a tag, or a snapshot (exactly one).

        It reads that snapshot, whatever is committed later.
        """
        return sync(
            self.readonly_session_async(branch, tag=tag, snapshot_id=snapshot_id),
            name="Repository.readonly_session",
        )

    # --- history and refs ----------------------------------------------------------------------

    async def ancestry_async(
        self,
        branch: str | None = None,
        *,
        tag: str | None = None,
        snapshot_id: str | None = None,
    ) -> list[SnapshotInfo]:
        """See :meth:`ancestry`."""
        info, _ = await self._read_info()
        start = _resolve_in(info, branch, tag, snapshot_id, what="ancestry")
        history: list[SnapshotInfo] = []
        current: str | None = start
        while current is not None:
            snapshot = info.snapshots.get(current)
            if snapshot is None:
                raise SnapshotNotFoundError(
                    f"Snapshot {current} is missing from the repository's snapshot index."
                )
            history.append(snapshot)
            current = snapshot.parent_id
            if len(history) > len(info.snapshots):
                raise SnapshotNotFoundError("The snapshot index has a cycle; it is corrupt.")
        return history

    def ancestry(
        self,
        branch: str | None = None,
        *,
        tag: str | None = None,
        snapshot_id: str | None = None,
    ) -> list[SnapshotInfo]:
        """The snapshots from a branch tip, tag or snapshot back to the first, newest first."""
        return sync(
            self.ancestry_async(branch, tag=tag, snapshot_id=snapshot_id),
            name="Repository.ancestry",
        )

    async def create_branch_async(self, branch: str, snapshot_id: str) -> None:
        """See :meth:`create_branch`."""
        branch = _check_ref_name("branch", branch)
        snapshot_id = _check_snapshot_id(snapshot_id)

        def change(info: RepoInfo) -> RepoInfo:
            if branch in info.branches:
                raise RefAlreadyExistsError(f"Branch {branch!r} already exists.")
            _check_snapshot_in(info, snapshot_id)
            return info.with_branch(branch, snapshot_id)

        await self._update_info(change)

    def create_branch(self, branch: str, snapshot_id: str) -> None:
        """Create ``branch`` pointing at ``snapshot_id``; RefAlreadyExistsError if it exists."""
        sync(self.create_branch_async(branch, snapshot_id), name="Repository.create_branch")

    async def reset_branch_async(
        self, branch: str, snapshot_id: str, *, from_snapshot_id: str | None = None
    ) -> None:
        """See :meth:`reset_branch`."""
        branch = _check_ref_name("branch", branch)
        snapshot_id = _check_snapshot_id(snapshot_id)
        if from_snapshot_id is not None:
            from_snapshot_id = _check_snapshot_id(from_snapshot_id)

        def change(info: RepoInfo) -> RepoInfo:
            tip = info.branches.get(branch)
            if tip is None:
                raise _branch_not_found(branch, info)
            if from_snapshot_id is not None and tip != from_snapshot_id:
                raise ConflictError(branch, from_snapshot_id, tip)
            _check_snapshot_in(info, snapshot_id)
            return info.with_branch(branch, snapshot_id)

        await self._update_info(change)

    def reset_branch(
        self, branch: str, snapshot_id: str, *, from_snapshot_id: str | None = None
    ) -> None:
        """Point ``branch`` at ``snapshot_id``. With ``from_snapshot_id``, only if the branch
        is still there (ConflictError otherwise)."""
        sync(
            self.reset_branch_async(branch, snapshot_id, from_snapshot_id=from_snapshot_id),
            name="Repository.reset_branch",
        )

    async def delete_branch_async(self, branch: str) -> None:
        """See :meth:`delete_branch`."""
        branch = _check_ref_name("branch", branch)
        if branch == "main":
            raise ConfigurationError("The 'main' branch cannot be deleted.")

        def change(info: RepoInfo) -> RepoInfo:
            if branch not in info.branches:
                raise _branch_not_found(branch, info)
            return info.without_branch(branch)

        await self._update_info(change)

    def delete_branch(self, branch: str) -> None:
        """Delete ``branch`` (not ``main``). Its snapshots stay readable by id."""
        sync(self.delete_branch_async(branch), name="Repository.delete_branch")

    async def create_tag_async(self, tag: str, snapshot_id: str) -> None:
        """See :meth:`create_tag`."""
        tag = _check_ref_name("tag", tag)
        snapshot_id = _check_snapshot_id(snapshot_id)

        def change(info: RepoInfo) -> RepoInfo:
            if tag in info.tags:
                raise RefAlreadyExistsError(f"Tag {tag!r} already exists.")
            if tag in info.deleted_tags:
                raise RefAlreadyExistsError(
                    f"Tag {tag!r} existed and was deleted; tag names are never reused."
                )
            _check_snapshot_in(info, snapshot_id)
            return info.with_tag(tag, snapshot_id)

        await self._update_info(change)

    def create_tag(self, tag: str, snapshot_id: str) -> None:
        """Create an immutable tag at ``snapshot_id``. Tag names are never reused."""
        sync(self.create_tag_async(tag, snapshot_id), name="Repository.create_tag")

    async def delete_tag_async(self, tag: str) -> None:
        """See :meth:`delete_tag`."""
        tag = _check_ref_name("tag", tag)

        def change(info: RepoInfo) -> RepoInfo:
            if tag not in info.tags:
                raise TagNotFoundError(f"No tag {tag!r}.")
            return info.without_tag(tag)

        await self._update_info(change)

    def delete_tag(self, tag: str) -> None:
        """Delete a tag; its name cannot be used again."""
        sync(self.delete_tag_async(tag), name="Repository.delete_tag")

    async def list_branches_async(self) -> set[str]:
        """See :meth:`list_branches`."""
        info, _ = await self._read_info()
        return set(info.branches)

    def list_branches(self) -> set[str]:
        """The names of all branches."""
        return sync(self.list_branches_async(), name="Repository.list_branches")

    async def list_tags_async(self) -> set[str]:
        """See :meth:`list_tags`."""
        info, _ = await self._read_info()
        return set(info.tags)

    def list_tags(self) -> set[str]:
        """The names of all tags."""
        return sync(self.list_tags_async(), name="Repository.list_tags")

    async def lookup_branch_async(self, branch: str) -> str:
        """See :meth:`lookup_branch`."""
        info, _ = await self._read_info()
        return _resolve_in(info, branch, None, None, what="lookup_branch")

    def lookup_branch(self, branch: str) -> str:
        """The snapshot id at the tip of ``branch``."""
        return sync(self.lookup_branch_async(branch), name="Repository.lookup_branch")

    async def lookup_tag_async(self, tag: str) -> str:
        """See :meth:`lookup_tag`."""
        info, _ = await self._read_info()
        return _resolve_in(info, None, tag, None, what="lookup_tag")

    def lookup_tag(self, tag: str) -> str:
        """The snapshot id ``tag`` points at."""
        return sync(self.lookup_tag_async(tag), name="Repository.lookup_tag")

    async def lookup_snapshot_async(self, snapshot_id: str) -> SnapshotInfo:
        """See :meth:`lookup_snapshot`."""
        info, _ = await self._read_info()
        return info.snapshots[_resolve_in(info, None, None, snapshot_id, what="lookup_snapshot")]

    def lookup_snapshot(self, snapshot_id: str) -> SnapshotInfo:
        """The :class:`SnapshotInfo` of one snapshot."""
        return sync(self.lookup_snapshot_async(snapshot_id), name="Repository.lookup_snapshot")

    # --- expiration and garbage collection ---------------------------------------------------

    async def expire_snapshots_async(
        self,
        older_than: datetime,
        *,
        delete_expired_branches: bool = False,
        delete_expired_tags: bool = False,
    ) -> set[str]:
        """See :meth:`expire_snapshots`."""
        return await expire_snapshots(
            self,
            older_than,
            delete_expired_branches=delete_expired_branches,
            delete_expired_tags=delete_expired_tags,
        )

    def expire_snapshots(
        self,
        older_than: datetime,
        *,
        delete_expired_branches: bool = False,
        delete_expired_tags: bool = False,
    ) -> set[str]:
        """Drop snapshots written before ``older_than`` from every ref's history, and return
        their ids. Kept: the first snapshot, every branch and tag tip, and everything newer;
        a kept snapshot's parent becomes its nearest kept ancestor. With
        ``delete_expired_branches`` / ``delete_expired_tags``, refs whose tip is older are
        deleted instead (never ``main``). Nothing is deleted from storage:
        :meth:`garbage_collect` does that. One compare-and-swap of the info object, so it is
        safe with concurrent commits (which keep their tips).
        """
        return sync(
            self.expire_snapshots_async(
                older_than,
                delete_expired_branches=delete_expired_branches,
                delete_expired_tags=delete_expired_tags,
            ),
            name="Repository.expire_snapshots",
        )

    async def garbage_collect_async(
        self, delete_object_older_than: datetime, *, dry_run: bool = False
    ) -> GCSummary:
        """See :meth:`garbage_collect`."""
        return await garbage_collect(self, delete_object_older_than, dry_run=dry_run)

    def garbage_collect(
        self, delete_object_older_than: datetime, *, dry_run: bool = False
    ) -> GCSummary:
        """Delete chunk and snapshot objects that no branch or tag can reach and that were
        written before ``delete_object_older_than``; return a :class:`GCSummary` of what was
        deleted (with ``dry_run``: what would be, deleting nothing).

        Safe with concurrent writers if the cutoff is older than the oldest session or fork
        still writing (their chunks are referenced by nothing until they commit or merge):
        Icechunk's advice, days rather than minutes, holds. Sessions still reading a deleted
        snapshot fail.
        """
        return sync(
            self.garbage_collect_async(delete_object_older_than, dry_run=dry_run),
            name="Repository.garbage_collect",
        )

    # --- internals shared with sessions ------------------------------------------------------

    def _storage_is_shared(self) -> bool:
        """False for an in-memory storage: a pickled copy in another process has its own data."""
        return self._storage.capabilities.shared_across_processes

    def _slot(self) -> asyncio.Semaphore:
        """This repository's limit on logical operations, for the running loop."""
        return self._limiter.get()

    def _encode_info(self, info: RepoInfo) -> bytes:
        return encode_info(info, *self._config.effective_compression)

    async def _read_info(self) -> tuple[RepoInfo, VersionInfo]:
        return await _read_info(self._storage)

    async def _resolve(
        self, branch: str | None, tag: str | None, snapshot_id: str | None, *, what: str
    ) -> str:
        info, _ = await self._read_info()
        return _resolve_in(info, branch, tag, snapshot_id, what=what)

    async def _write_snapshot(self, snapshot: Snapshot) -> None:
        data = encode_snapshot(snapshot, *self._config.effective_compression)
        async with self._slot():
            await self._storage.put(
                snapshot_key(snapshot.info.id), data, metadata=_metadata("snapshot")
            )

    async def _read_snapshot(self, snapshot_id: str) -> Snapshot:
        try:
            async with self._slot():
                got = await self._storage.get(snapshot_key(snapshot_id))
        except ObjectNotFoundError:
            raise SnapshotNotFoundError(
                f"Snapshot {snapshot_id} is in the index but its object "
                f"{snapshot_key(snapshot_id)!r} is missing."
            ) from None
        return decode_snapshot(got.data, snapshot_id)

    async def _write_manifest(self, manifest: Manifest) -> None:
        assert manifest.id is not None
        data = encode_manifest(manifest, *self._config.effective_compression)
        async with self._slot():
            await self._storage.put(manifest_key(manifest.id), data, metadata=_metadata("manifest"))

    async def _read_manifest(self, manifest_id: str) -> Manifest:
        try:
            async with self._slot():
                got = await self._storage.get(manifest_key(manifest_id))
        except ObjectNotFoundError:
            raise RepositoryFormatError(
                f"Manifest {manifest_key(manifest_id)!r} is missing: the repository is damaged "
                "(or a session read a snapshot that garbage collection removed)."
            ) from None
        return decode_manifest(got.data, manifest_id)

    async def _flush(self, keys: list[str]) -> None:
        """Make objects written without a durability promise durable (the local filesystem
        writes them without fsync); a no-op on object stores, where a write is durable."""
        if keys:
            await self._storage.flush(keys)

    async def _update_info(self, change: Callable[[RepoInfo], RepoInfo | None]) -> RepoInfo:
        """Read-modify-write of the info object; see the module docstring.

        ``change`` runs on every attempt against the info just read, and may raise to refuse
        (ConflictError, RefAlreadyExistsError ...), which ends the update at once, or return
        None: the change is already there (an earlier attempt landed), nothing to write.

        A failed write is not proof that nothing was written: a lost response that the
        storage layer re-sent fails its condition against our own write once someone else
        wrote after it, and a timeout says nothing either way. So every attempt after a
        failed one first checks whether the info read is exactly what that attempt wrote
        (then it landed and nobody wrote since), and ``change`` checks for its own trace
        (a commit: its new snapshot id in the index).
        """
        max_tries, initial, maximum = self._config.effective_repo_update_retries
        storage = self._storage
        attempted: RepoInfo | None = None
        uncertain = 0
        for attempt in range(1, max_tries + 1):
            delay = repo_update_delay(attempt, initial, maximum)
            if delay:
                await asyncio.sleep(delay)
            info, version = await self._read_info()
            if attempted is not None and info == attempted:
                return info  # the previous attempt landed; its response said otherwise
            new_info = change(info)
            if new_info is None:
                return info
            data = self._encode_info(new_info)
            try:
                await storage.copy(REPO_INFO_KEY, backup_key(), if_version=version)
                await storage.put(
                    REPO_INFO_KEY, data, mode=version, metadata=_metadata("repo-info")
                )
                if not storage.settings.conditional_update:
                    await self._flush([REPO_INFO_KEY])  # a plain overwrite is not fsynced
            except (ConditionFailedError, ObjectNotFoundError):
                attempted = new_info  # someone else wrote first, or ours landed before theirs
                continue
            except (TransientError, RetriesExhaustedError):
                uncertain += 1
                if uncertain > MAX_UNCERTAIN_UPDATES:
                    raise
                attempted = new_info  # outcome unknown: read again and look
                continue
            return new_info
        raise TooManyConcurrentChangesError(max_tries)


# --- module helpers ---------------------------------------------------------------------------


def _metadata(file_type: str) -> Mapping[str, str]:
    return {"ic_file_type": file_type, "ic_spec_ver": str(SPEC_VERSION)}


ICECHUNK_MAGIC = "ICE🧊CHUNK".encode()
"""The first bytes of every Icechunk metadata file (its ``repo``, snapshots, manifests)."""

_OUR_KEYS = ("snapshots/", "manifests/", "chunks/", "overwritten/")


async def _read_info(storage: Storage) -> tuple[RepoInfo, VersionInfo]:
    try:
        got = await storage.get(REPO_INFO_KEY)
    except ObjectNotFoundError:
        found = await _foreign_content(storage)
        if found is not None:
            raise _not_a_repository(storage, found) from None
        raise RepositoryNotFoundError(
            f"No repository at {storage!r} (no {REPO_INFO_KEY!r} object); create one with "
            "Repository.create()."
        ) from None
    head = bytes(got.data[:32])
    if head.startswith(ICECHUNK_MAGIC):
        raise _not_a_repository(storage, ICECHUNK_V2)
    if not head.startswith(b"icechunk_storage "):
        raise _not_a_repository(storage, "an object named 'repo' in another format")
    return decode_info(got.data), got.version


ICECHUNK_V2 = "an Icechunk repository (its 'repo' object is in Icechunk's binary format)"


def _not_a_repository(storage: Storage, found: str) -> NotARepositoryError:
    return NotARepositoryError(
        f"{storage!r} holds {found}, not an icechunk_storage repository; this library cannot "
        "open it, and will not create a repository over it. Use another prefix.",
        found,
    )


_NAMED_BY = (
    ("refs/branch.main/ref.json", "an Icechunk repository (spec v1: refs/branch.main/ref.json)"),
    ("zarr.json", "a plain Zarr hierarchy ('zarr.json' at its root)"),
    (".zgroup", "a plain Zarr hierarchy ('.zgroup' at its root)"),
    (".zarray", "a plain Zarr hierarchy ('.zarray' at its root)"),
)
"""Keys that name what a location holds, most telling first."""


async def _foreign_content(storage: Storage) -> str | None:
    """What a location without our info object holds, if it is not (part of) ours. An empty
    location (what every create finds) costs one listing request; only a location that holds
    something is probed, concurrently, for the keys that name it."""
    foreign: str | None = None
    empty = True
    listing = storage.list("")
    try:
        async for found in listing:
            empty = False
            if not found.key.startswith(_OUR_KEYS):
                foreign = found.key
                break
    finally:
        close = getattr(listing, "aclose", None)
        if close is not None:
            await close()
    if empty:
        return None
    present = await asyncio.gather(*(storage.exists(key) for key, _ in _NAMED_BY))
    for (_, description), there in zip(_NAMED_BY, present, strict=True):
        if there:
            return description
    if foreign is not None:
        return f"objects that are not a repository (e.g. {foreign!r})"
    return None


async def _check_clean(storage: Storage) -> None:
    """Refuse a prefix that holds any object, before anything is written."""
    try:
        await _read_info(storage)
    except NotARepositoryError as exc:
        raise RepositoryLocationError(
            f"Refused to create a repository at {storage!r}: the prefix already holds {exc.found}. "
            "Repositories can only be created in empty prefixes; choose another prefix."
        ) from None
    except RepositoryNotFoundError:
        pass
    except RepositoryFormatError:
        raise RepositoryLocationError(
            f"Refused to create a repository at {storage!r}: its {REPO_INFO_KEY!r} object is "
            "not one this version can read. Choose another prefix."
        ) from None
    else:
        raise RepositoryAlreadyExistsError(
            f"A repository already exists at {storage!r}; open it with Repository.open()."
        )
    listing = storage.list("")
    try:
        async for found in listing:
            raise RepositoryLocationError(
                f"Refused to create a repository at {storage!r}: the prefix already holds "
                f"objects (e.g. {found.key!r}). Repositories can only be created in empty "
                "prefixes; choose another prefix or delete those objects."
            )
    finally:
        close = getattr(listing, "aclose", None)
        if close is not None:
            await close()


def _branch_not_found(branch: str, info: RepoInfo) -> BranchNotFoundError:
    return BranchNotFoundError(f"No branch {branch!r}; branches are {sorted(info.branches)}.")


def _check_snapshot_in(info: RepoInfo, snapshot_id: str) -> None:
    if snapshot_id not in info.snapshots:
        raise SnapshotNotFoundError(f"No snapshot {snapshot_id} in this repository.")


def _resolve_in(
    info: RepoInfo, branch: str | None, tag: str | None, snapshot_id: str | None, *, what: str
) -> str:
    given = [
        name
        for name, value in (("branch", branch), ("tag", tag), ("snapshot_id", snapshot_id))
        if value is not None
    ]
    if len(given) != 1:
        raise ConfigurationError(
            f"{what}() needs exactly one of branch, tag or snapshot_id, got "
            f"{', '.join(given) or 'none'}."
        )
    if branch is not None:
        tip = info.branches.get(_check_ref_name("branch", branch))
        if tip is None:
            raise _branch_not_found(branch, info)
        return tip
    if tag is not None:
        target = info.tags.get(_check_ref_name("tag", tag))
        if target is None:
            raise TagNotFoundError(f"No tag {tag!r}; tags are {sorted(info.tags)}.")
        return target
    assert snapshot_id is not None
    _check_snapshot_in(info, _check_snapshot_id(snapshot_id))
    return snapshot_id
