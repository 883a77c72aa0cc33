"""Errors of the repository layer, rooted in the package's one tree under ``StorageError``.

The tree (``except StorageError`` still catches everything the package raises)::

    StorageError
    └── RepositoryError                       base of repository-level errors
        ├── RepositoryNotFoundError           also FileNotFoundError: no ``repo`` object there
        │   └── NotARepositoryError           the location holds something else (an Icechunk
        │                                     repository, plain Zarr, other objects)
        ├── RepositoryAlreadyExistsError      also FileExistsError: create found a repository
        ├── RepositoryLocationError           also ValueError: the location cannot hold a new
        │                                     repository (empty prefix on a cloud store, or
        │                                     objects already there)
        ├── ConflictError                     commit: the branch moved past the session's parent
        ├── TooManyConcurrentChangesError     the info object kept changing under every attempt
        ├── RefNotFoundError                  also LookupError
        │   ├── BranchNotFoundError
        │   ├── TagNotFoundError
        │   └── SnapshotNotFoundError
        ├── RefAlreadyExistsError             also FileExistsError: branch or tag exists
        ├── SessionStateError                 nothing to commit, or the session is finished
        │   └── SessionPickleError            also pickle.PicklingError: a writable session
        │                                     (use Session.fork())
        ├── MergeConflictError                Session.merge: forks changed the same key
        ├── RepositoryFormatError             an object is not in the format we can read
        └── ReadOnlySessionError              also ReadOnlyStorageError: a write on a read-only
                                              session

``ConflictError`` is not retried by the library: the session's changes were made against a
parent that is no longer the tip; the caller decides (start a new session on the new tip).
Version races on the info object, where the tip did not move, are retried and never surface,
until the retry budget is spent (TooManyConcurrentChangesError).
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence

from .._errors import ReadOnlyStorageError, StorageError

__all__ = [
    "BranchNotFoundError",
    "ConflictError",
    "MergeConflictError",
    "NotARepositoryError",
    "ReadOnlySessionError",
    "RefAlreadyExistsError",
    "RefNotFoundError",
    "RepositoryAlreadyExistsError",
    "RepositoryError",
    "RepositoryFormatError",
    "RepositoryLocationError",
    "RepositoryNotFoundError",
    "SessionPickleError",
    "SessionStateError",
    "SnapshotNotFoundError",
    "TagNotFoundError",
    "TooManyConcurrentChangesError",
]


class RepositoryError(StorageError):
    """Base class of the repository layer's errors."""


class RepositoryNotFoundError(RepositoryError, FileNotFoundError):
    """There is no repository at this location (no ``repo`` info object)."""

    def __str__(self) -> str:
        return str(self.args[0])


class NotARepositoryError(RepositoryNotFoundError):
    """The location holds something other than a repository of this library: an Icechunk
    repository, a plain Zarr hierarchy, or other objects. ``found`` says what."""

    def __init__(self, message: str, found: str) -> None:
        self.found = found
        super().__init__(message)


class RepositoryAlreadyExistsError(RepositoryError, FileExistsError):
    """``Repository.create`` found a repository already there (or lost a creation race)."""

    def __str__(self) -> str:
        return str(self.args[0])


class RepositoryLocationError(RepositoryError, ValueError):
    """The location cannot hold a new repository: an empty prefix on a cloud store, or a
    prefix that already holds objects. Raised before anything is written."""


class ConflictError(RepositoryError):
    """A commit found its branch at another snapshot than the session's parent.

    ``expected_parent`` is the snapshot the session started from; ``actual_parent`` is the
    branch tip found at commit time (None if the branch was deleted).
    """

    def __init__(self, branch: str, expected_parent: str, actual_parent: str | None) -> None:
        self.branch = branch
        self.expected_parent = expected_parent
        self.actual_parent = actual_parent
        found = f"it is at {actual_parent}" if actual_parent is not None else "it no longer exists"
        super().__init__(
            f"Commit conflict on branch {branch!r}: expected its tip to be {expected_parent}, "
            f"but {found}. Another commit landed first; start a new session on the new tip "
            "and redo the changes."
        )


class TooManyConcurrentChangesError(RepositoryError):
    """The repository info object changed under every update attempt ("update attempts
    exhausted"). Raise ``RepositoryConfig.repo_update_retries`` to try longer."""

    def __init__(self, attempts: int) -> None:
        self.attempts = attempts
        super().__init__(
            f"The repository cannot be updated after {attempts} attempts: too many concurrent "
            "changes (update attempts exhausted). Retry later, or raise "
            "RepositoryConfig.repo_update_retries."
        )


class RefNotFoundError(RepositoryError, LookupError):
    """A branch, tag or snapshot that does not exist."""

    def __str__(self) -> str:
        return str(self.args[0])


class BranchNotFoundError(RefNotFoundError):
    """No branch of that name."""


class TagNotFoundError(RefNotFoundError):
    """No tag of that name."""


class SnapshotNotFoundError(RefNotFoundError):
    """No snapshot with that id in this repository."""


class RefAlreadyExistsError(RepositoryError, FileExistsError):
    """A branch or tag of that name exists (or, for tags, existed: names are never reused)."""

    def __str__(self) -> str:
        return str(self.args[0])


class SessionStateError(RepositoryError):
    """The session cannot do this now: nothing to commit, or it was already committed."""


class SessionPickleError(SessionStateError, pickle.PicklingError):
    """A writable session (or a storage or store over one) was pickled; use Session.fork()."""


class MergeConflictError(RepositoryError):
    """``Session.merge``: a fork changed keys that changed meanwhile in the session merged into
    (another fork's change merged first, or a write after forking). ``keys`` lists them;
    nothing of that fork was merged."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = list(keys)
        shown = ", ".join(repr(key) for key in self.keys[:5])
        more = f" and {len(self.keys) - 5} more" if len(self.keys) > 5 else ""
        super().__init__(
            f"Cannot merge the fork: {len(self.keys)} key(s) it changed were changed "
            f"differently since it was forked ({shown}{more}). Two forks wrote the same key "
            "(e.g. dask chunks not aligned with Zarr chunks); make each key's writer unique."
        )

    def __reduce__(self) -> tuple[type[MergeConflictError], tuple[list[str]]]:
        return (type(self), (self.keys,))  # raised in dask workers, re-raised here


class RepositoryFormatError(RepositoryError):
    """An object of the repository is not in a format this version can read."""


class ReadOnlySessionError(RepositoryError, ReadOnlyStorageError):
    """A write through a read-only session (or one already committed)."""
