"""Manifests split per node and key range: read lazily, rewritten only where keys changed.

A snapshot lists, per node (:func:`_format.node_of`), the manifests holding the node's keys:
disjoint sorted key ranges of at most ``MAX_MANIFEST_ENTRIES`` keys each. So:

* a reader loads only the manifest whose range can hold a key (one bisect in the node's list),
  and a listing only the manifests whose range meets the prefix;
* a commit loads and rewrites only the manifests holding changed keys (a new key goes to the
  manifest whose range it falls in, or the node's first); one grown past the limit is split
  into equal parts, one left empty is dropped; every other manifest is referred to by id.

Manifests are immutable (``manifests/<id>``), so a reader keeps the ones it loaded.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from ._format import (
    MAX_MANIFEST_ENTRIES,
    Manifest,
    ManifestEntry,
    ManifestRef,
    Snapshot,
    new_id,
    node_of,
)

if TYPE_CHECKING:
    from ._repository import Repository

__all__ = ["ManifestReader", "split_entries", "write_tree"]

_MAX_KEY = "\U0010ffff"


class ManifestReader:
    """One snapshot's manifests, loaded on first use and kept (they never change)."""

    def __init__(self, repo: Repository, snapshot: Snapshot) -> None:
        self.repo = repo
        self.snapshot = snapshot
        self._loaded: dict[str, Manifest] = {}
        self._firsts: dict[str, list[str]] = {}

    @property
    def loaded_manifests(self) -> int:
        """How many manifests this reader holds in memory."""
        return len(self._loaded)

    def kept(self) -> list[Manifest]:
        return list(self._loaded.values())

    def keep(self, manifests: Iterable[Manifest]) -> None:
        """Manifests written by a commit, so the session does not read them back."""
        for manifest in manifests:
            assert manifest.id is not None
            self._loaded[manifest.id] = manifest

    def _slot_of(self, key: str) -> tuple[str, int] | None:
        """(node, index of the manifest ref whose range can hold key), or None."""
        node = node_of(key)
        refs = self.snapshot.nodes.get(node)
        if not refs:
            return None
        firsts = self._firsts.get(node)
        if firsts is None:
            firsts = self._firsts[node] = [ref.first for ref in refs]
        return node, max(bisect.bisect_right(firsts, key) - 1, 0)

    def _ref_for(self, key: str) -> ManifestRef | None:
        slot = self._slot_of(key)
        if slot is None:
            return None
        ref = self.snapshot.nodes[slot[0]][slot[1]]
        return ref if ref.first <= key <= ref.last else None

    async def load(self, refs: Iterable[ManifestRef]) -> list[Manifest]:
        """The manifests of ``refs``, reading those not loaded yet concurrently."""
        wanted = list(refs)
        missing = list({ref.id: ref for ref in wanted if ref.id not in self._loaded})
        if missing:
            read = await asyncio.gather(*(self.repo._read_manifest(m) for m in missing))
            for manifest in read:
                assert manifest.id is not None
                self._loaded[manifest.id] = manifest
        return [self._loaded[ref.id] for ref in wanted]

    async def entry(self, key: str) -> ManifestEntry | None:
        legacy = self.snapshot.legacy
        if legacy is not None:
            return legacy.get(key)
        ref = self._ref_for(key)
        if ref is None:
            return None
        (manifest,) = await self.load([ref])
        return manifest.get(key)

    async def entries(self, keys: Iterable[str]) -> dict[str, ManifestEntry | None]:
        """Each key's entry (None: absent), loading every manifest needed at once."""
        keys = list(dict.fromkeys(keys))
        legacy = self.snapshot.legacy
        if legacy is not None:
            return {key: legacy.get(key) for key in keys}
        refs = {key: self._ref_for(key) for key in keys}
        await self.load(ref for ref in refs.values() if ref is not None)
        return {
            key: None if ref is None else self._loaded[ref.id].get(key) for key, ref in refs.items()
        }

    async def items_under(self, prefix: str) -> list[tuple[str, ManifestEntry]]:
        """Every (key, entry) under ``prefix``, sorted; reads only manifests whose key range
        meets the prefix."""
        legacy = self.snapshot.legacy
        if legacy is not None:
            return legacy.items_under(prefix)
        end = prefix + _MAX_KEY
        refs = [
            ref
            for node_refs in self.snapshot.nodes.values()
            for ref in node_refs
            if ref.first < end and ref.last >= prefix
        ]
        found: list[tuple[str, ManifestEntry]] = []
        for manifest in await self.load(refs):
            found.extend(manifest.items_under(prefix))
        found.sort(key=lambda item: item[0])
        return found

    async def list_dir(self, prefix: str) -> tuple[list[tuple[str, ManifestEntry]], set[str]]:
        """The (key, entry) pairs directly under ``prefix`` and its subdirectories.

        A manifest whose first and last keys are in the same subdirectory holds only keys
        of that subdirectory (every string between two with a common prefix has it), so it
        is not read: listing a group reads no manifest of its arrays' chunks.
        """
        legacy = self.snapshot.legacy
        prefixes: set[str] = set()
        if legacy is not None:
            items = legacy.items_under(prefix)
        else:
            end = prefix + _MAX_KEY
            to_read: list[ManifestRef] = []
            for node_refs in self.snapshot.nodes.values():
                for ref in node_refs:
                    if not (ref.first < end and ref.last >= prefix):
                        continue
                    directory = _directory(ref.first, prefix)
                    if directory is not None and directory == _directory(ref.last, prefix):
                        prefixes.add(directory)
                    else:
                        to_read.append(ref)
            items = [
                item
                for manifest in await self.load(to_read)
                for item in manifest.items_under(prefix)
            ]
        objects: list[tuple[str, ManifestEntry]] = []
        for key, entry in items:
            directory = _directory(key, prefix)
            if directory is None:
                objects.append((key, entry))
            else:
                prefixes.add(directory)
        objects.sort(key=lambda item: item[0])
        return objects, prefixes


def _directory(key: str, prefix: str) -> str | None:
    """The subdirectory of ``prefix`` holding ``key`` (``prefix/name/``), if any."""
    if not key.startswith(prefix):
        return None
    head, sep, _ = key[len(prefix) :].partition("/")
    return prefix + head + "/" if sep else None


def split_entries(entries: list[tuple[str, ManifestEntry]]) -> list[Manifest]:
    """Sorted entries as new manifests of at most ``MAX_MANIFEST_ENTRIES``, equal in size."""
    if not entries:
        return []
    parts = -(-len(entries) // MAX_MANIFEST_ENTRIES)
    size = -(-len(entries) // parts)
    return [
        Manifest.from_entries(new_id(), entries[start : start + size])
        for start in range(0, len(entries), size)
    ]


def _ref(manifest: Manifest) -> ManifestRef:
    assert manifest.id is not None
    return ManifestRef(manifest.id, manifest.keys[0], manifest.keys[-1], len(manifest))


async def write_tree(
    reader: ManifestReader, changes: Mapping[str, ManifestEntry | None]
) -> tuple[dict[str, tuple[ManifestRef, ...]], list[Manifest]]:
    """The manifest table of ``reader``'s snapshot with ``changes`` applied (None: delete),
    after writing the manifests that changed; returns the table and those manifests."""
    base = reader.snapshot
    nodes = dict(base.nodes)
    if base.legacy is not None:  # a version-1 snapshot: everything is written anew once
        merged: dict[str, ManifestEntry | None] = dict(base.legacy.items())
        merged.update(changes)
        changes, nodes = merged, {}
    by_node: dict[str, dict[str, ManifestEntry | None]] = {}
    for key, entry in changes.items():
        by_node.setdefault(node_of(key), {})[key] = entry

    # Which manifest each change falls in: (node, ref index), index -1 for a node without any.
    touched: dict[tuple[str, int], dict[str, ManifestEntry | None]] = {}
    for node, node_changes in by_node.items():
        refs = nodes.get(node, ())
        firsts = [ref.first for ref in refs]
        for key, entry in node_changes.items():
            index = max(bisect.bisect_right(firsts, key) - 1, 0) if refs else -1
            touched.setdefault((node, index), {})[key] = entry
    old_refs = [nodes[node][index] for node, index in touched if index >= 0]
    old = {ref.id: m for ref, m in zip(old_refs, await reader.load(old_refs), strict=True)}

    written: list[Manifest] = []
    replaced: dict[str, dict[int, list[Manifest]]] = {}
    for (node, index), slot_changes in touched.items():
        merged_slot: dict[str, ManifestEntry] = {}
        if index >= 0:
            merged_slot.update(old[nodes[node][index].id].items())
        for key, entry in slot_changes.items():
            if entry is None:
                merged_slot.pop(key, None)
            else:
                merged_slot[key] = entry
        previous = old[nodes[node][index].id] if index >= 0 else None
        if all(
            merged_slot.get(key) == (None if previous is None else previous.get(key))
            for key in slot_changes
        ):
            continue  # nothing changed here (a delete of an absent key)
        pieces = split_entries(sorted(merged_slot.items(), key=lambda item: item[0]))
        written.extend(pieces)
        replaced.setdefault(node, {})[index] = pieces

    for node, pieces_by_index in replaced.items():
        kept = [r for index, r in enumerate(nodes.get(node, ())) if index not in pieces_by_index]
        kept.extend(_ref(m) for pieces in pieces_by_index.values() for m in pieces)
        kept.sort(key=lambda ref: ref.first)
        if kept:
            nodes[node] = tuple(kept)
        else:
            nodes.pop(node, None)
    await asyncio.gather(*(reader.repo._write_manifest(m) for m in written))
    return nodes, written
