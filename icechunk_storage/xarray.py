"""Write xarray objects into a repository session, with dask on any scheduler: ``to_icechunk``.

::

    from icechunk_storage.xarray import to_icechunk

    session = repo.writable_session("main")
    to_icechunk(ds, session)                   # ds backed by dask: threads, processes, distributed
    session.commit("add ds")

Why not ``ds.to_zarr(session.store)``: with a multi-process scheduler every dask task would
write through its own unpickled copy of the session, and the driver's session would never see
those writes. So a writable session refuses to be pickled (the error names ``fork()``), and
this function does what Icechunk's ``icechunk.xarray.to_icechunk`` does:

1. metadata and in-memory variables are written through ``session`` itself, in this process;
2. the session is forked; one task per dask block writes it into a Zarr array over the fork
   and returns the fork: in another process, that task's copy, carrying its changes back;
3. the copies are merged in a tree of tasks on the cluster (``split_every`` at a time), and the
   result is merged into ``session``. Two copies that wrote the same key differently raise
   :class:`~icechunk_storage.MergeConflictError` (chunks misaligned with ``safe_chunks=False``).

On the threaded scheduler the tasks share one fork object, which merges the same way. This
module imports xarray, dask and zarr; ``import icechunk_storage`` does not.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, MutableMapping
from typing import Any, Literal

import numpy as np
import xarray as xr
import zarr
from dask.base import compute
from dask.delayed import delayed
from xarray.backends.api import DATAARRAY_NAME, DATAARRAY_VARIABLE
from xarray.backends.common import ArrayWriter
from xarray.backends.zarr import ZarrStore as XarrayZarrStore
from xarray.backends.zarr import _choose_default_mode

from ._errors import ConfigurationError
from ._repository import ReadOnlySessionError, Session, SessionStateError
from .zarr import ZarrStore

try:  # xarray >= 2025.09 moved the writers out of api.py
    from xarray.backends.writers import _validate_dataset_names, dump_to_store
except ImportError:  # pragma: no cover - older xarray
    from xarray.backends.api import (  # type: ignore[attr-defined,no-redef]
        _validate_dataset_names,
        dump_to_store,
    )

__all__ = ["to_icechunk"]

ZarrWriteModes = Literal["w", "w-", "a", "a-", "r+", "r"]
Region = Mapping[str, slice | Literal["auto"]] | Literal["auto"] | None

DEFAULT_SPLIT_EVERY = 8


def to_icechunk(
    obj: xr.DataArray | xr.Dataset,
    session: Session,
    *,
    group: str | None = None,
    mode: ZarrWriteModes | None = None,
    safe_chunks: bool = True,
    align_chunks: bool = False,
    append_dim: Hashable | None = None,
    region: Region = None,
    encoding: Mapping[Any, Any] | None = None,
    chunkmanager_store_kwargs: MutableMapping[Any, Any] | None = None,
    split_every: int | None = None,
) -> None:
    """Write ``obj`` to ``group`` of a writable session; dask-backed variables go through
    forks of the session on whatever dask scheduler is active, and are merged back.

    ``mode``, ``append_dim``, ``region``, ``safe_chunks``, ``align_chunks`` and ``encoding``
    mean what they mean for ``Dataset.to_zarr`` (default mode: ``"a"`` with ``append_dim``,
    ``"r+"`` with ``region``, else ``"w-"``). ``chunkmanager_store_kwargs`` go to
    ``dask.compute`` (as ``dask.array.store`` passes them on); ``split_every`` is how many
    forks one merge task folds (default 8).
    Commit the session afterwards; nothing is committed here.
    """
    if not isinstance(session, Session):
        raise TypeError(
            f"to_icechunk() writes to a Session (repo.writable_session(branch)), got "
            f"{type(session).__name__}."
        )
    if session.read_only:
        raise ReadOnlySessionError(
            f"to_icechunk() needs a writable session; {session!r} is read-only."
        )
    if session.is_fork:
        raise SessionStateError(
            "to_icechunk() forks the session itself: pass the session, not a fork of it."
        )
    every = DEFAULT_SPLIT_EVERY if split_every is None else split_every
    if not isinstance(every, int) or every < 2:
        raise ConfigurationError(f"split_every must be an int of at least 2, got {split_every!r}.")
    store_kwargs = dict(chunkmanager_store_kwargs or {})
    for fixed in ("compute", "return_stored", "load_stored", "lock", "regions", "flush"):
        if fixed in store_kwargs:
            raise ConfigurationError(
                f"chunkmanager_store_kwargs cannot set {fixed!r}: to_icechunk() sets it."
            )

    dataset = _as_dataset(obj)
    _validate_dataset_names(dataset)
    open_kwargs: dict[str, Any] = {}
    if align_chunks:
        open_kwargs["align_chunks"] = True
    xstore = XarrayZarrStore.open_group(
        session.store,
        mode=_choose_default_mode(mode=mode, append_dim=append_dim, region=region),
        group=group,
        consolidated=False,
        consolidate_on_close=False,
        append_dim=append_dim,
        write_region=region,
        safe_chunks=safe_chunks,
        zarr_format=3,
        **open_kwargs,
    )
    dataset = xstore._validate_and_autodetect_region(dataset)
    xstore._validate_encoding(encoding or {})
    # Metadata, and every variable not backed by dask, are written here through the session.
    writer = ArrayWriter()  # type: ignore[no-untyped-call]
    dump_to_store(dataset, xstore, writer, encoding=dict(encoding or {}))  # type: ignore[no-untyped-call]
    if not writer.sources:
        return

    fork = session.fork()
    targets = [
        zarr.open_array(fork.store, path=target.path, mode="r+") for target in writer.targets
    ]
    parts: list[Any] = []
    for source, target, written in zip(writer.sources, targets, writer.regions, strict=True):
        offsets = [0] * source.ndim if not written else [part.start or 0 for part in written]
        starts = [np.cumsum((0, *sizes[:-1])) for sizes in source.chunks]
        blocks = source.to_delayed()
        for block_index in np.ndindex(*blocks.shape):
            where = tuple(
                slice(offset + int(start[i]), offset + int(start[i]) + sizes[i])
                for offset, start, sizes, i in zip(
                    offsets, starts, source.chunks, block_index, strict=True
                )
            )
            parts.append(delayed(_write_block, pure=False)(blocks[block_index], target, where))
    while len(parts) > 1:
        parts = [
            delayed(_merge_parts, pure=False)(*parts[start : start + every])
            for start in range(0, len(parts), every)
        ]
    (merged,) = compute(  # type: ignore[no-untyped-call]
        delayed(_merge_parts, pure=False)(*parts), **store_kwargs
    )
    session.merge(merged)


def _as_dataset(obj: object) -> xr.Dataset:
    """A DataArray as the one-variable Dataset that ``xr.open_dataarray`` reads back."""
    if isinstance(obj, xr.Dataset):
        return obj
    if not isinstance(obj, xr.DataArray):
        raise TypeError(f"to_icechunk() writes a Dataset or DataArray, got {type(obj).__name__}.")
    if obj.name is None:
        return obj.to_dataset(name=DATAARRAY_VARIABLE)
    if obj.name in obj.coords or obj.name in obj.dims:
        dataset = obj.to_dataset(name=DATAARRAY_VARIABLE)
        dataset.attrs[DATAARRAY_NAME] = obj.name
        return dataset
    return obj.to_dataset()


def _fork_in(part: object) -> Session:
    """The fork carried by one stored block (a Zarr array over a fork) or a merged part."""
    if isinstance(part, Session):
        return part
    store = part.store if isinstance(part, zarr.Array) else None
    if isinstance(store, ZarrStore):
        session = getattr(store.storage, "session", None)
        if isinstance(session, Session) and session.is_fork:
            return session
    raise TypeError(f"Expected a Zarr array written through a fork, got {part!r}.")


def _write_block(block: Any, target: zarr.Array[Any], where: tuple[slice, ...]) -> Session:
    """A dask task: write one block through the target's fork; return that fork (a copy, in
    another process, that carries this write back when pickled)."""
    target[where] = np.asanyarray(block)
    return _fork_in(target)


def _merge_parts(*parts: object) -> Session:
    """A dask task: fold the forks of ``parts`` into the first one and return it."""
    first, *rest = (_fork_in(part) for part in parts)
    first.merge(*rest)
    return first
