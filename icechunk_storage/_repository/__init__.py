"""The repository layer: version-controlled keys and values on any Storage.

Public names are re-exported from ``icechunk_storage``; the format is described in
``docs/repository-format.md``.
"""

from __future__ import annotations

from ._config import CompressionConfig, RepositoryConfig, RepoUpdateRetryConfig
from ._errors import (
    BranchNotFoundError,
    ConflictError,
    MergeConflictError,
    NotARepositoryError,
    ReadOnlySessionError,
    RefAlreadyExistsError,
    RefNotFoundError,
    RepositoryAlreadyExistsError,
    RepositoryError,
    RepositoryFormatError,
    RepositoryLocationError,
    RepositoryNotFoundError,
    SessionPickleError,
    SessionStateError,
    SnapshotNotFoundError,
    TagNotFoundError,
    TooManyConcurrentChangesError,
)
from ._format import SnapshotInfo
from ._gc import GCSummary
from ._repository import Repository
from ._session import Session, SessionStorage

__all__ = [
    "BranchNotFoundError",
    "CompressionConfig",
    "ConflictError",
    "GCSummary",
    "MergeConflictError",
    "NotARepositoryError",
    "ReadOnlySessionError",
    "RefAlreadyExistsError",
    "RefNotFoundError",
    "RepoUpdateRetryConfig",
    "Repository",
    "RepositoryAlreadyExistsError",
    "RepositoryConfig",
    "RepositoryError",
    "RepositoryFormatError",
    "RepositoryLocationError",
    "RepositoryNotFoundError",
    "Session",
    "SessionPickleError",
    "SessionStateError",
    "SessionStorage",
    "SnapshotInfo",
    "SnapshotNotFoundError",
    "TagNotFoundError",
    "TooManyConcurrentChangesError",
]
