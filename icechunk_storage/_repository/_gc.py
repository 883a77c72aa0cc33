"""Snapshot expiration and garbage collection; see ``docs/repository-format.md``."""

from __future__ import annotations

import attrs

__all__ = ["GCSummary"]


@attrs.frozen
class GCSummary:
    """What :meth:`Repository.garbage_collect` deleted (or, in a dry run, would delete)."""

    chunks_deleted: int = 0
    snapshots_deleted: int = 0
    bytes_deleted: int = 0
