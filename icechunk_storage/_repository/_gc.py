"""Snapshot expiration and garbage collection, modelled on Icechunk's; see
``docs/repository-format.md`` ("Expiring snapshots and collecting garbage").

* ``expire_snapshots(older_than)`` rewrites the info object only: snapshots older than the
  cutoff drop out of every ref's history (re-parented past), and out of the index.
* ``garbage_collect(delete_object_older_than)`` deletes ``chunks/``, ``manifests/`` and
  ``snapshots/`` objects that no retained snapshot references (through its manifests) and
  that are older than the cutoff. Each distinct manifest is read once, however many
  snapshots share it. It first removes the
  snapshots it will delete from the index (a compare-and-swap, so no ref can start pointing at
  them), then deletes. The cutoff is the safety margin for writers: a session or fork that
  started before it may have written chunks no snapshot references yet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import attrs

from .._errors import ConfigurationError
from ._errors import RepositoryError
from ._format import (
    CHUNKS_PREFIX,
    INITIAL_SNAPSHOT_ID,
    MANIFESTS_PREFIX,
    SNAPSHOTS_PREFIX,
    RepoInfo,
    SnapshotInfo,
    chunk_key,
    manifest_key,
    snapshot_key,
)

if TYPE_CHECKING:
    from ._repository import Repository

__all__ = ["GCSummary", "expire_snapshots", "garbage_collect"]

MAX_GC_RESTARTS = 10
DATE_GRANULARITY = timedelta(seconds=1)
"""S3 reports LastModified rounded down to the second: an object may be up to this much newer
than its date, so it counts as older than a cutoff only if its date is this much before it."""


@attrs.frozen
class GCSummary:
    """What :meth:`Repository.garbage_collect` deleted (in a dry run: would delete)."""

    chunks_deleted: int = 0
    manifests_deleted: int = 0
    snapshots_deleted: int = 0
    bytes_deleted: int = 0


def _check_cutoff(name: str, value: object) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ConfigurationError(
            f"{name} must be a timezone-aware datetime (e.g. datetime.now(UTC) - "
            f"timedelta(days=7)), got {value!r}."
        )
    if value > datetime.now(UTC):
        raise ConfigurationError(f"{name} is in the future ({value.isoformat()}).")
    return value


def _reachable(info: RepoInfo, tips: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    for tip in tips:
        current: str | None = tip
        while current is not None and current not in seen and current in info.snapshots:
            seen.add(current)
            current = info.snapshots[current].parent_id
    return seen


def _without(info: RepoInfo, removed: set[str]) -> Mapping[str, SnapshotInfo]:
    """The index without ``removed``; every remaining entry re-parented past removed ones."""
    index: dict[str, SnapshotInfo] = {}
    for snapshot_id, snapshot in info.snapshots.items():
        if snapshot_id in removed:
            continue
        parent = snapshot.parent_id
        while parent is not None and parent in removed and parent in info.snapshots:
            parent = info.snapshots[parent].parent_id
        index[snapshot_id] = attrs.evolve(snapshot, parent_id=parent)
    return index


async def expire_snapshots(
    repo: Repository,
    older_than: datetime,
    *,
    delete_expired_branches: bool,
    delete_expired_tags: bool,
) -> set[str]:
    cutoff = _check_cutoff("older_than", older_than)
    expired: set[str] = set()

    def change(info: RepoInfo) -> RepoInfo:
        def old(snapshot_id: str) -> bool:
            return info.snapshots[snapshot_id].written_at < cutoff

        tags = {
            name: tip
            for name, tip in info.tags.items()
            if not (delete_expired_tags and tip in info.snapshots and old(tip))
        }
        branches = {
            name: tip
            for name, tip in info.branches.items()
            if name == "main" or not (delete_expired_branches and old(tip))
        }
        tips = {*tags.values(), *branches.values()}
        before = _reachable(info, {*info.tags.values(), *info.branches.values()})
        reachable = _reachable(info, tips)
        kept = {INITIAL_SNAPSHOT_ID, *tips} | {s for s in reachable if not old(s)}
        expired.clear()
        expired.update(before - kept)
        return attrs.evolve(
            info,
            branches=branches,
            tags=tags,
            deleted_tags=info.deleted_tags | (set(info.tags) - set(tags)),
            snapshots=_without(info, expired),
        )

    await repo._update_info(change)
    return set(expired)


class _Restart(Exception):
    """A ref or a new snapshot came to depend on a snapshot about to be deleted."""


async def garbage_collect(
    repo: Repository, delete_object_older_than: datetime, *, dry_run: bool
) -> GCSummary:
    cutoff = _check_cutoff("delete_object_older_than", delete_object_older_than)
    for _ in range(MAX_GC_RESTARTS):
        try:
            return await _collect(repo, cutoff, dry_run=dry_run)
        except _Restart:
            continue
    raise RepositoryError(
        f"garbage_collect restarted {MAX_GC_RESTARTS} times: refs kept moving onto snapshots "
        "it was about to delete. Run it again when the repository is quieter."
    )


async def _collect(repo: Repository, cutoff: datetime, *, dry_run: bool) -> GCSummary:
    storage = repo.storage
    info, _ = await repo._read_info()
    retained = _reachable(info, {*info.tags.values(), *info.branches.values()})
    retained.add(INITIAL_SNAPSHOT_ID)

    # Listed before reading the manifests: anything written after this is not a candidate.
    cutoff -= DATE_GRANULARITY

    async def old_objects(prefix: str) -> dict[str, int]:
        return {
            item.key[len(prefix) :]: item.size
            async for item in storage.list(prefix)
            if item.last_modified is not None and item.last_modified <= cutoff
        }

    old_snapshots = await old_objects(SNAPSHOTS_PREFIX)
    old_manifests = await old_objects(MANIFESTS_PREFIX)
    old_chunks = await old_objects(CHUNKS_PREFIX)
    referenced: set[str] = set()
    manifests: set[str] = set()
    limit = asyncio.Semaphore(32)

    async def collect_snapshot(snapshot_id: str) -> None:
        async with limit:
            snapshot = await repo._read_snapshot(snapshot_id)
        if snapshot.legacy is not None:
            referenced.update(snapshot.legacy.chunk_ids())
        manifests.update(ref.id for refs in snapshot.nodes.values() for ref in refs)

    async def collect_manifest(manifest_id: str) -> None:
        async with limit:
            manifest = await repo._read_manifest(manifest_id)
        referenced.update(manifest.chunk_ids())

    async with asyncio.TaskGroup() as group:
        for snapshot_id in retained:
            group.create_task(collect_snapshot(snapshot_id))
    async with asyncio.TaskGroup() as group:
        for manifest_id in manifests:
            group.create_task(collect_manifest(manifest_id))

    snapshots = {s: size for s, size in old_snapshots.items() if s not in retained}
    unused_manifests = {m: size for m, size in old_manifests.items() if m not in manifests}
    chunks = {c: size for c, size in old_chunks.items() if c not in referenced}
    summary = GCSummary(
        chunks_deleted=len(chunks),
        manifests_deleted=len(unused_manifests),
        snapshots_deleted=len(snapshots),
        bytes_deleted=sum(chunks.values())
        + sum(unused_manifests.values())
        + sum(snapshots.values()),
    )
    if dry_run:
        return summary

    doomed = set(snapshots)

    def forget(current: RepoInfo) -> RepoInfo | None:
        tips = {*current.tags.values(), *current.branches.values()}
        if tips & doomed:
            raise _Restart
        new = set(current.snapshots) - set(info.snapshots)
        if any(current.snapshots[s].parent_id in doomed for s in new):
            raise _Restart
        if not doomed & set(current.snapshots):
            return None  # none of them in the index (forks' anonymous snapshots)
        return attrs.evolve(current, snapshots=_without(current, doomed))

    await repo._update_info(forget)
    snapshot_result = await storage.delete_many([snapshot_key(s) for s in snapshots])
    manifest_result = await storage.delete_many([manifest_key(m) for m in unused_manifests])
    chunk_result = await storage.delete_many([chunk_key(c) for c in chunks])
    for result in (snapshot_result, manifest_result, chunk_result):
        if result.errors:
            key, why = next(iter(result.errors.items()))
            raise RepositoryError(
                f"garbage_collect could not delete {len(result.errors)} object(s), e.g. "
                f"{key!r}: {why}. Run it again."
            )
    return summary  # sizes from the listing: S3's batch delete does not report them
