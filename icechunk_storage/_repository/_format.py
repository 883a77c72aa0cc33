"""The on-storage format: keys, ids, and how the two kinds of metadata object are encoded.

The full description, for people, is ``docs/repository-format.md``; keep the two in step.

Keys under the storage prefix::

    repo                                  the info object: the only object ever overwritten
    snapshots/<id>                        one snapshot: its info and its full manifest
    chunks/<id>                           the bytes of one value larger than the inline limit
    overwritten/repo.<14 digits>.<id>     earlier versions of ``repo``, newest first in a listing

Metadata objects are a one-line ASCII header then a JSON document, compressed or not::

    icechunk_storage <file type> <spec version> <compression>\\n<body>

Ids are 12 random bytes written as 20 characters of Crockford base32 (Icechunk's form).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import attrs

from .._forks import forget_after_fork
from .._storage import ReadData
from ._config import CompressionAlgorithm, RepositoryConfig, config_from_json, config_to_json
from ._errors import RepositoryFormatError

__all__ = [
    "CHUNKS_PREFIX",
    "INITIAL_SNAPSHOT_ID",
    "OVERWRITTEN_PREFIX",
    "REPO_INFO_KEY",
    "SNAPSHOTS_PREFIX",
    "SPEC_VERSION",
    "ManifestEntry",
    "RepoInfo",
    "Snapshot",
    "SnapshotInfo",
    "backup_key",
    "chunk_key",
    "decode_info",
    "decode_snapshot",
    "encode_info",
    "encode_snapshot",
    "is_valid_id",
    "new_id",
    "now_ms",
    "snapshot_key",
]

REPO_INFO_KEY = "repo"
SNAPSHOTS_PREFIX = "snapshots/"
CHUNKS_PREFIX = "chunks/"
OVERWRITTEN_PREFIX = "overwritten/"
SPEC_VERSION = 1
MAGIC = "icechunk_storage"
INITIAL_SNAPSHOT_ID = "1CECHNKREP0F1RSTCMT0"
"""Icechunk's id for the first snapshot of every repository."""

FileType = Literal["repo-info", "snapshot"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CROCKFORD_SET = frozenset(_CROCKFORD)
_ID_BYTES = 12
_ID_CHARS = 20
_END_OF_TIME = datetime(3000, 1, 1, tzinfo=UTC)


def new_id() -> str:
    """12 random bytes as 20 Crockford base32 characters (uppercase, no padding)."""
    number = int.from_bytes(secrets.token_bytes(_ID_BYTES), "big") << 4  # 96 bits -> 100
    return "".join(_CROCKFORD[(number >> shift) & 31] for shift in range(95, -1, -5))


def is_valid_id(value: object) -> bool:
    return (
        isinstance(value, str)
        and len(value) == _ID_CHARS
        and all(char in _CROCKFORD_SET for char in value)
    )


def now_ms() -> datetime:
    """The current UTC time at millisecond precision: what the manifest can store."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def snapshot_key(snapshot_id: str) -> str:
    return SNAPSHOTS_PREFIX + snapshot_id


def chunk_key(chunk_id: str) -> str:
    return CHUNKS_PREFIX + chunk_id


_backup_lock = threading.Lock()
_last_backup_ms = [10**14]


def _reset_backup_lock() -> None:
    global _backup_lock
    _backup_lock = threading.Lock()


forget_after_fork(_reset_backup_lock)


def backup_key(now: datetime | None = None) -> str:
    """``overwritten/repo.<ms until 3000-01-01, 14 digits>.<id>``: newer sorts first.

    Within one process the number strictly decreases, so backups taken in the same
    millisecond still sort newest first; across processes the order is to the millisecond.
    """
    now = now or datetime.now(UTC)
    remaining_ms = int((_END_OF_TIME - now).total_seconds() * 1000)
    with _backup_lock:
        remaining_ms = min(remaining_ms, _last_backup_ms[0] - 1)
        _last_backup_ms[0] = remaining_ms
    return f"{OVERWRITTEN_PREFIX}repo.{remaining_ms:014d}.{new_id()}"


# --- values ------------------------------------------------------------------------------------


@attrs.frozen
class SnapshotInfo:
    """One commit: its id, its parent, when it was written, its message and metadata."""

    id: str
    parent_id: str | None
    written_at: datetime
    message: str
    metadata: Mapping[str, Any] = attrs.field(factory=dict, hash=False)


@attrs.frozen
class ManifestEntry:
    """Where one key's value lives: inline bytes, or the immutable object ``chunks/<chunk>``.

    ``version`` is a fresh id per write: the value's version in the session's key/value view;
    ``last_modified`` is when that write happened (millisecond precision once stored).
    """

    version: str
    size: int
    last_modified: datetime
    chunk: str | None = None
    inline: bytes | None = None


@attrs.frozen
class Snapshot:
    """An immutable snapshot: its info and the complete key -> value manifest."""

    info: SnapshotInfo
    manifest: Mapping[str, ManifestEntry] = attrs.field(hash=False)


@attrs.frozen
class RepoInfo:
    """The repository info object: refs, the snapshot index, and the persisted config."""

    branches: Mapping[str, str] = attrs.field(hash=False)
    tags: Mapping[str, str] = attrs.field(hash=False)
    deleted_tags: frozenset[str]
    snapshots: Mapping[str, SnapshotInfo] = attrs.field(hash=False)
    config: RepositoryConfig

    @classmethod
    def initial(cls, snapshot: SnapshotInfo, config: RepositoryConfig) -> RepoInfo:
        return cls(
            branches={"main": snapshot.id},
            tags={},
            deleted_tags=frozenset(),
            snapshots={snapshot.id: snapshot},
            config=config,
        )

    def with_branch(self, name: str, snapshot_id: str) -> RepoInfo:
        return attrs.evolve(self, branches={**self.branches, name: snapshot_id})

    def without_branch(self, name: str) -> RepoInfo:
        return attrs.evolve(self, branches={k: v for k, v in self.branches.items() if k != name})

    def with_tag(self, name: str, snapshot_id: str) -> RepoInfo:
        return attrs.evolve(self, tags={**self.tags, name: snapshot_id})

    def without_tag(self, name: str) -> RepoInfo:
        return attrs.evolve(
            self,
            tags={k: v for k, v in self.tags.items() if k != name},
            deleted_tags=self.deleted_tags | {name},
        )

    def with_snapshot(self, snapshot: SnapshotInfo) -> RepoInfo:
        return attrs.evolve(self, snapshots={**self.snapshots, snapshot.id: snapshot})

    def with_config(self, config: RepositoryConfig) -> RepoInfo:
        return attrs.evolve(self, config=config)


# --- encoding ----------------------------------------------------------------------------------


def _encode(
    file_type: FileType, body: Mapping[str, Any], algorithm: CompressionAlgorithm, level: int
) -> bytes:
    payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    if algorithm == "zlib":
        payload = zlib.compress(payload, level)
    header = f"{MAGIC} {file_type} {SPEC_VERSION} {algorithm}\n".encode()
    return header + payload


def _decode(data: ReadData, file_type: FileType, what: str) -> dict[str, Any]:
    if isinstance(data, memoryview):  # a read in parts: decode from bytes
        data = data.tobytes()
    newline = data.find(b"\n", 0, 200)
    if newline < 0:
        raise RepositoryFormatError(f"{what} has no icechunk_storage header; it is not ours.")
    try:
        magic, found_type, version, algorithm = data[:newline].decode("ascii").split(" ")
        spec_version = int(version)
    except (UnicodeDecodeError, ValueError):
        raise RepositoryFormatError(f"{what} has a malformed header.") from None
    if magic != MAGIC or found_type != file_type:
        raise RepositoryFormatError(
            f"{what} is not an icechunk_storage {file_type} object (header {magic} {found_type})."
        )
    if spec_version > SPEC_VERSION:
        raise RepositoryFormatError(
            f"{what} uses format version {spec_version}; this version of icechunk_storage reads "
            f"up to {SPEC_VERSION}. Upgrade icechunk_storage."
        )
    payload = bytes(data[newline + 1 :])
    try:
        if algorithm == "zlib":
            payload = zlib.decompress(payload)
        elif algorithm != "none":
            raise RepositoryFormatError(f"{what} uses unknown compression {algorithm!r}.")
        body = json.loads(payload)
    except (zlib.error, ValueError) as exc:
        raise RepositoryFormatError(f"{what} is corrupt: {exc}") from exc
    if not isinstance(body, dict):
        raise RepositoryFormatError(f"{what} is corrupt: its body is not a JSON object.")
    return body


def _info_to_json(info: SnapshotInfo) -> dict[str, Any]:
    return {
        "parent_id": info.parent_id,
        "written_at": info.written_at.isoformat(),
        "message": info.message,
        "metadata": dict(info.metadata),
    }


def _info_from_json(snapshot_id: str, data: Mapping[str, Any]) -> SnapshotInfo:
    return SnapshotInfo(
        id=snapshot_id,
        parent_id=data["parent_id"],
        written_at=datetime.fromisoformat(data["written_at"]),
        message=data["message"],
        metadata=data.get("metadata") or {},
    )


def encode_info(info: RepoInfo, algorithm: CompressionAlgorithm, level: int) -> bytes:
    body = {
        "branches": dict(info.branches),
        "tags": dict(info.tags),
        "deleted_tags": sorted(info.deleted_tags),
        "snapshots": {sid: _info_to_json(s) for sid, s in info.snapshots.items()},
        "config": config_to_json(info.config),
    }
    return _encode("repo-info", body, algorithm, level)


def decode_info(data: ReadData) -> RepoInfo:
    body = _decode(data, "repo-info", "The repository info object 'repo'")
    try:
        return RepoInfo(
            branches=dict(body["branches"]),
            tags=dict(body["tags"]),
            deleted_tags=frozenset(body.get("deleted_tags", ())),
            snapshots={sid: _info_from_json(sid, s) for sid, s in body["snapshots"].items()},
            config=config_from_json(body.get("config", {})),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RepositoryFormatError(
            f"The repository info object 'repo' is corrupt: {exc!r}"
        ) from exc


def _entry_to_json(entry: ManifestEntry) -> dict[str, Any]:
    result: dict[str, Any] = {
        "version": entry.version,
        "size": entry.size,
        "modified_ms": int(entry.last_modified.timestamp() * 1000),
    }
    if entry.chunk is not None:
        result["chunk"] = entry.chunk
    else:
        result["inline"] = base64.b64encode(entry.inline or b"").decode("ascii")
    return result


def _entry_from_json(data: Mapping[str, Any]) -> ManifestEntry:
    modified = datetime.fromtimestamp(data["modified_ms"] / 1000, UTC)
    if "chunk" in data:
        return ManifestEntry(data["version"], data["size"], modified, chunk=data["chunk"])
    return ManifestEntry(
        data["version"], data["size"], modified, inline=base64.b64decode(data["inline"])
    )


def encode_snapshot(snapshot: Snapshot, algorithm: CompressionAlgorithm, level: int) -> bytes:
    body = {
        "id": snapshot.info.id,
        **_info_to_json(snapshot.info),
        "manifest": {key: _entry_to_json(e) for key, e in snapshot.manifest.items()},
    }
    return _encode("snapshot", body, algorithm, level)


def decode_snapshot(data: ReadData, snapshot_id: str) -> Snapshot:
    what = f"Snapshot {snapshot_key(snapshot_id)!r}"
    body = _decode(data, "snapshot", what)
    try:
        if body["id"] != snapshot_id:
            raise RepositoryFormatError(f"{what} holds snapshot {body['id']}.")
        return Snapshot(
            info=_info_from_json(snapshot_id, body),
            manifest={key: _entry_from_json(e) for key, e in body["manifest"].items()},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RepositoryFormatError(f"{what} is corrupt: {exc!r}") from exc
