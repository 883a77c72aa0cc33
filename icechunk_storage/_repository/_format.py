"""The on-storage format: keys, ids, and how the two kinds of metadata object are encoded.

The full description, for people, is ``docs/repository-format.md``; keep the two in step.

Keys under the storage prefix::

    repo                                  the info object: the only object ever overwritten
    snapshots/<id>                        one snapshot: its info and its manifest table
    manifests/<id>                        the entries of one sorted key range of one node
    chunks/<id>                           the bytes of one value larger than the inline limit
    overwritten/repo.<14 digits>.<id>     earlier versions of ``repo``, newest first in a listing

A snapshot does not hold its entries: it lists, per node (a Zarr array or group, see
:func:`node_of`), the manifests holding that node's keys, each a sorted key range of at most
``MAX_MANIFEST_ENTRIES`` keys. A commit rewrites only the manifests holding changed keys and
refers to the others by id; format version 1 kept the whole manifest in the snapshot (still
read, never written).

Metadata objects are a one-line ASCII header then a JSON document, compressed or not::

    icechunk_storage <file type> <spec version> <compression>\\n<body>

Ids are 12 random bytes written as 20 characters of Crockford base32 (Icechunk's form).
"""

from __future__ import annotations

import base64
import bisect
import itertools
import json
import threading
import time
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import attrs

from .._forks import forget_after_fork
from .._random import random_bytes
from .._storage import Data
from ._config import CompressionAlgorithm, RepositoryConfig, config_from_json, config_to_json
from ._errors import RepositoryFormatError

__all__ = [
    "CHUNKS_PREFIX",
    "INITIAL_SNAPSHOT_ID",
    "MANIFESTS_PREFIX",
    "MAX_MANIFEST_ENTRIES",
    "OVERWRITTEN_PREFIX",
    "REPO_INFO_KEY",
    "SNAPSHOTS_PREFIX",
    "SPEC_VERSION",
    "Manifest",
    "ManifestEntry",
    "ManifestRef",
    "RepoInfo",
    "Snapshot",
    "SnapshotInfo",
    "backup_key",
    "chunk_key",
    "decode_info",
    "decode_manifest",
    "decode_snapshot",
    "encode_info",
    "encode_manifest",
    "encode_snapshot",
    "is_valid_id",
    "manifest_key",
    "new_id",
    "node_of",
    "now_ms",
    "snapshot_key",
]

REPO_INFO_KEY = "repo"
SNAPSHOTS_PREFIX = "snapshots/"
CHUNKS_PREFIX = "chunks/"
MANIFESTS_PREFIX = "manifests/"
OVERWRITTEN_PREFIX = "overwritten/"
SPEC_VERSION = 2
"""Written by this version. Version 1 (a snapshot holding its whole manifest) is still read."""
MAX_MANIFEST_ENTRIES = 1000
"""A manifest growing past this is split in two: a one-key commit in a repository of 10^6
keys rewrites one manifest (~18 KB) and a snapshot listing ~10^3 manifests (~25 KB)."""
MAGIC = "icechunk_storage"
INITIAL_SNAPSHOT_ID = "1CECHNKREP0F1RSTCMT0"
"""Icechunk's id for the first snapshot of every repository."""

FileType = Literal["repo-info", "snapshot", "manifest"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CROCKFORD_SET = frozenset(_CROCKFORD)
_ID_BYTES = 12
_ID_CHARS = 20
_END_OF_TIME = datetime(3000, 1, 1, tzinfo=UTC)


_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
"""Two characters per 10 bits: an id is 10 lookups."""


def new_id() -> str:
    """12 random bytes (from the OS, in batches: :mod:`.._random`) as 20 Crockford base32
    characters (uppercase, no padding)."""
    raw = random_bytes(_ID_BYTES)
    number = int.from_bytes(raw, "big") << 4  # 96 bits -> 100
    pairs = _PAIRS
    return "".join([pairs[(number >> shift) & 1023] for shift in range(90, -1, -10)])


def is_valid_id(value: object) -> bool:
    return (
        isinstance(value, str)
        and len(value) == _ID_CHARS
        and all(char in _CROCKFORD_SET for char in value)
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_last_now: tuple[int, datetime] = (-1, _EPOCH)


def now_ms() -> datetime:
    """The current UTC time at millisecond precision: what the manifest can store.

    Built once per millisecond (a session stamps every ``put``, thousands a second)."""
    global _last_now
    ms = time.time_ns() // 1_000_000
    last = _last_now
    if last[0] != ms:
        last = _last_now = (ms, _EPOCH + timedelta(milliseconds=ms))
    return last[1]


def snapshot_key(snapshot_id: str) -> str:
    return SNAPSHOTS_PREFIX + snapshot_id


def chunk_key(chunk_id: str) -> str:
    return CHUNKS_PREFIX + chunk_id


def manifest_key(manifest_id: str) -> str:
    return MANIFESTS_PREFIX + manifest_id


_METADATA_NAMES = frozenset({"zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata"})
_COORDINATE = frozenset("0123456789.")


def node_of(key: str) -> str:
    """The node (Zarr array or group path, "" for the root) whose manifests hold ``key``.

    ``a/b/zarr.json`` -> ``a/b``; chunk keys drop their trailing coordinates and a ``c``
    before them (``a/b/c/0/1`` and ``a/b/0.1`` -> ``a/b``); any other key -> its directory.
    Part of the format: it decides which manifests a reader looks in.
    """
    parts = key.split("/")
    if parts[-1] in _METADATA_NAMES:
        return "/".join(parts[:-1])
    end = len(parts)
    while end > 0 and parts[end - 1] and _COORDINATE.issuperset(parts[end - 1]):
        end -= 1
    if end == len(parts):
        return "/".join(parts[:-1])
    if end > 0 and parts[end - 1] == "c":
        end -= 1
    return "/".join(parts[:end])


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
class ManifestRef:
    """A snapshot's reference to one manifest: its id and the sorted key range it holds."""

    id: str
    first: str
    last: str
    count: int


class Manifest:
    """The entries of one sorted key range, kept as columns; entries are built on lookup.

    ``id`` is None for a version-1 snapshot's whole manifest (stored inside the snapshot).
    """

    __slots__ = ("_chunks", "_index", "_inline", "_modified", "_sizes", "_versions", "id", "keys")

    def __init__(
        self,
        manifest_id: str | None,
        keys: list[str],
        versions: list[str],
        sizes: list[int],
        modified_ms: list[int],
        chunks: list[str | None],
        inline: list[bytes | None],
    ) -> None:
        self.id = manifest_id
        self.keys = keys  # sorted
        self._versions, self._sizes, self._modified = versions, sizes, modified_ms
        self._chunks, self._inline = chunks, inline
        self._index: dict[str, int] | None = None

    @classmethod
    def from_entries(
        cls, manifest_id: str | None, entries: list[tuple[str, ManifestEntry]]
    ) -> Manifest:
        """From (key, entry) pairs sorted by key."""
        return cls(
            manifest_id,
            [key for key, _ in entries],
            [entry.version for _, entry in entries],
            [entry.size for _, entry in entries],
            [int(entry.last_modified.timestamp() * 1000) for _, entry in entries],
            [entry.chunk for _, entry in entries],
            [entry.inline if entry.chunk is None else None for _, entry in entries],
        )

    def __len__(self) -> int:
        return len(self.keys)

    def _entry(self, index: int) -> ManifestEntry:
        modified = datetime.fromtimestamp(self._modified[index] / 1000, UTC)
        chunk = self._chunks[index]
        if chunk is not None:
            return ManifestEntry(self._versions[index], self._sizes[index], modified, chunk=chunk)
        return ManifestEntry(
            self._versions[index], self._sizes[index], modified, inline=self._inline[index]
        )

    def get(self, key: str) -> ManifestEntry | None:
        index = self._index
        if index is None:
            index = self._index = {key: i for i, key in enumerate(self.keys)}
        position = index.get(key)
        return None if position is None else self._entry(position)

    def items(self) -> list[tuple[str, ManifestEntry]]:
        return [(key, self._entry(i)) for i, key in enumerate(self.keys)]

    def items_under(self, prefix: str) -> list[tuple[str, ManifestEntry]]:
        start = bisect.bisect_left(self.keys, prefix)
        found: list[tuple[str, ManifestEntry]] = []
        for i in range(start, len(self.keys)):
            if not self.keys[i].startswith(prefix):
                break
            found.append((self.keys[i], self._entry(i)))
        return found

    def chunk_ids(self) -> set[str]:
        return {chunk for chunk in self._chunks if chunk is not None}


@attrs.frozen
class Snapshot:
    """An immutable snapshot: its info and, per node, the manifests holding its keys (sorted
    by first key, disjoint). ``legacy`` is a version-1 snapshot's inline manifest."""

    info: SnapshotInfo
    nodes: Mapping[str, tuple[ManifestRef, ...]] = attrs.field(hash=False)
    legacy: Manifest | None = attrs.field(default=None, hash=False, eq=False)


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


def _decode(data: Data, file_type: FileType, what: str) -> tuple[int, dict[str, Any]]:
    """The format version and the JSON body of one metadata object."""
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
    if spec_version > SPEC_VERSION or spec_version < 1:
        raise RepositoryFormatError(
            f"{what} uses format version {spec_version}; this version of icechunk_storage reads "
            f"versions 1 to {SPEC_VERSION}. Upgrade icechunk_storage."
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
    return spec_version, body


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


def decode_info(data: Data) -> RepoInfo:
    _, body = _decode(data, "repo-info", "The repository info object 'repo'")
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


def _entry_from_json(data: Mapping[str, Any]) -> ManifestEntry:
    """A version-1 manifest entry."""
    modified = datetime.fromtimestamp(data["modified_ms"] / 1000, UTC)
    if "chunk" in data:
        return ManifestEntry(data["version"], data["size"], modified, chunk=data["chunk"])
    return ManifestEntry(
        data["version"], data["size"], modified, inline=base64.b64decode(data["inline"])
    )


def encode_snapshot(snapshot: Snapshot, algorithm: CompressionAlgorithm, level: int) -> bytes:
    if snapshot.legacy is not None:
        raise ValueError("version-1 snapshots are read, never written")
    body = {
        "id": snapshot.info.id,
        **_info_to_json(snapshot.info),
        "nodes": {
            node: {
                "ids": [ref.id for ref in refs],
                "first": [ref.first for ref in refs],
                "last": [ref.last for ref in refs],
                "count": [ref.count for ref in refs],
            }
            for node, refs in snapshot.nodes.items()
        },
    }
    return _encode("snapshot", body, algorithm, level)


def decode_snapshot(data: Data, snapshot_id: str) -> Snapshot:
    what = f"Snapshot {snapshot_key(snapshot_id)!r}"
    version, body = _decode(data, "snapshot", what)
    try:
        if body["id"] != snapshot_id:
            raise RepositoryFormatError(f"{what} holds snapshot {body['id']}.")
        info = _info_from_json(snapshot_id, body)
        if version == 1:
            entries = sorted((key, _entry_from_json(e)) for key, e in body["manifest"].items())
            return Snapshot(info=info, nodes={}, legacy=Manifest.from_entries(None, entries))
        nodes = {
            node: tuple(
                ManifestRef(i, f, la, c)
                for i, f, la, c in zip(
                    table["ids"], table["first"], table["last"], table["count"], strict=True
                )
            )
            for node, table in body["nodes"].items()
        }
        return Snapshot(info=info, nodes=nodes)
    except (KeyError, TypeError, ValueError) as exc:
        raise RepositoryFormatError(f"{what} is corrupt: {exc!r}") from exc


def encode_manifest(manifest: Manifest, algorithm: CompressionAlgorithm, level: int) -> bytes:
    """Columns; a chunk id equal to the entry's version (what a put writes) is stored as "",
    and modification times as differences from the previous key's (they compress)."""
    modified = manifest._modified
    body = {
        "id": manifest.id,
        "keys": manifest.keys,
        "versions": manifest._versions,
        "sizes": manifest._sizes,
        "modified_ms": [b - a for a, b in zip([0, *modified], modified, strict=False)],
        "chunks": [
            None if chunk is None else ("" if chunk == version else chunk)
            for chunk, version in zip(manifest._chunks, manifest._versions, strict=True)
        ],
        "inline": [
            None if value is None else base64.b64encode(value).decode("ascii")
            for value in manifest._inline
        ],
    }
    return _encode("manifest", body, algorithm, level)


def decode_manifest(data: Data, manifest_id: str) -> Manifest:
    what = f"Manifest {manifest_key(manifest_id)!r}"
    _, body = _decode(data, "manifest", what)
    try:
        if body["id"] != manifest_id:
            raise RepositoryFormatError(f"{what} holds manifest {body['id']}.")
        keys, versions = body["keys"], body["versions"]
        modified = list(itertools.accumulate(body["modified_ms"]))
        chunks = [
            None if chunk is None else (version if chunk == "" else chunk)
            for chunk, version in zip(body["chunks"], versions, strict=True)
        ]
        inline = [None if value is None else base64.b64decode(value) for value in body["inline"]]
        if not len(keys) == len(versions) == len(body["sizes"]) == len(modified) == len(inline):
            raise ValueError("columns of different lengths")
        return Manifest(manifest_id, keys, versions, body["sizes"], modified, chunks, inline)
    except (KeyError, TypeError, ValueError) as exc:
        raise RepositoryFormatError(f"{what} is corrupt: {exc!r}") from exc
