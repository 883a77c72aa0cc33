"""One adapter per client, all with the same small async interface.

A client is built for one :class:`Target` (an S3 server, a local directory, or memory) and
opened once per workload; the workload then calls the operations it measures. An operation a
client does not offer raises :class:`Unsupported`; a client whose library (or, for our own
library, whose constructor) is missing reports why through ``unavailable_reason`` and is
listed as "unavailable" instead of breaking the run. Every library is imported lazily, inside
the adapter, so the harness runs with any subset installed.

How each client reads, so the comparison is like for like (see docs/benchmarks.md):

* ``ours``: ``Storage.get_many([(key, None), ...])``, our chunk fetch path (the batch API);
  ``ours-get``: one ``Storage.get(key)`` per key under a semaphore, like the peers.
* ``obstore``: ``get_async`` + ``bytes_async`` (two awaits); ``obstore-range``:
  ``get_range_async`` with the known length (one await).
* ``aiobotocore``: ``get_object`` + ``Body.read()``; ``s3fs``: ``_cat(paths,
  batch_size=C)``, as a Zarr-on-fsspec user gets it; ``aiohttp``: a plain unsigned GET, the
  Python floor (s3rver only, which serves anonymous requests).
* local files: ``aiofiles``, ``threadpool`` (``run_in_executor`` with ``os.read``, 8
  threads), ``sync-read`` (a synchronous loop, the floor); memory: ``dict`` (an asyncio task
  per key around a dict lookup, the floor of any async design).

Peers run their requests as ``asyncio.gather`` over a ``Semaphore(concurrency)``; our
library's own limit is set to the same concurrency for the duration of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import pickle
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, TypeVar

from benchmarks.credentials import (
    BotocoreCallback,
    CredentialSource,
    ObstoreCallback,
    OursCallback,
)

__all__ = [
    "CLIENTS",
    "Client",
    "Target",
    "Unsupported",
    "client_class",
    "ours",
    "split_ranges",
]

T = TypeVar("T")
U = TypeVar("U")


class Unsupported(Exception):
    """This client does not offer the operation (or the target) a workload asks for."""


@dataclass(frozen=True)
class Target:
    """Where the data lives: ``kind`` is "s3", "local" or "memory" (later "gcs", "azure")."""

    kind: str
    endpoint: str = ""
    bucket: str = ""
    access_key_id: str = ""
    secret_access_key: str = ""
    region: str = "us-east-1"
    anonymous_reads: bool = False
    root: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Target:
        return cls(**data)


def ours(name: str) -> Any:
    """A public name of icechunk_storage, looked up at run time (it may not exist yet)."""
    return getattr(importlib.import_module("icechunk_storage"), name)


async def gather_bounded(
    func: Callable[[T], Awaitable[U]], items: Sequence[T], limit: int
) -> list[U]:
    """``asyncio.gather`` of ``func(item)`` with at most ``limit`` running, as the peers do."""
    semaphore = asyncio.Semaphore(limit)

    async def one(item: T) -> U:
        async with semaphore:
            return await func(item)

    return await asyncio.gather(*(one(item) for item in items))


def split_ranges(size: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous (start, end) ranges covering ``size`` bytes, as equal as possible."""
    parts = max(1, min(parts, size)) if size else 1
    base, extra = divmod(size, parts)
    ranges, start = [], 0
    for index in range(parts):
        end = start + base + (1 if index < extra else 0)
        ranges.append((start, end))
        start = end
    return ranges


class Client:
    """The interface every adapter implements (unsupported operations raise Unsupported)."""

    id: ClassVar[str]
    name: ClassVar[str]  # in tables of workloads that do not compare read methods
    labels: ClassVar[Mapping[str, str]]  # per target kind, naming the read method
    modules: ClassVar[tuple[str, ...]] = ()  # third-party modules it needs

    def __init__(
        self,
        target: Target,
        *,
        concurrency: int,
        parts: int = 0,
        large_size: int = 0,
        credentials: CredentialSource | None = None,
        defaults: bool = False,
    ) -> None:
        if target.kind not in self.labels:
            raise Unsupported(f"{self.id} has no {target.kind} adapter")
        self.target = target
        self.concurrency = concurrency
        self.parts = parts
        self.large_size = large_size
        self.credentials = credentials
        self.defaults = defaults  # keep the library's own request limits (net-* workloads)

    @property
    def label(self) -> str:
        return self.labels[self.target.kind]

    @classmethod
    def unavailable_reason(cls, kind: str, *, credentials: bool = False) -> str | None:
        """Why this client cannot run here (a missing library), or None."""
        for module in cls.modules:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                return f"{module} is not installed ({exc})"
        return None

    def path(self, key: str) -> str:
        return os.path.join(self.target.root, key)

    async def open(self) -> None:
        """Build clients/sessions; no requests yet."""

    async def aclose(self) -> None:
        """Release everything ``open`` built."""

    async def load(self, items: Mapping[str, bytes]) -> None:
        """Fill this client's own store (memory targets only)."""
        raise Unsupported("load")

    async def get_one(self, key: str, size: int | None) -> int:
        """Read one whole object; return its length."""
        raise Unsupported("get")

    async def get_small(self, keys: Sequence[str], size: int | None) -> int:
        """Read many whole objects at ``concurrency`` in flight; return the total length."""
        lengths = await gather_bounded(lambda key: self.get_one(key, size), keys, self.concurrency)
        return sum(lengths)

    async def get_large(self, key: str, size: int, parts: int) -> list[Any]:
        """Read one object as ``parts`` concurrent ranges; return the buffers, in order."""
        raise Unsupported("ranged get")

    async def put_one(self, key: str, data: bytes, create: bool) -> None:
        raise Unsupported("put")

    async def put_small(self, items: Sequence[tuple[str, bytes]], *, create: bool) -> int:
        """Write many objects at ``concurrency`` in flight; ``create``: only if absent."""

        async def put(item: tuple[str, bytes]) -> None:
            await self.put_one(item[0], item[1], create)

        await gather_bounded(put, items, self.concurrency)
        return len(items)

    async def list_keys(self, prefix: str) -> int:
        """List every key under ``prefix/`` (recursively); return how many."""
        raise Unsupported("list")

    def fresh_copy(self) -> Any:
        """A pickled and unpickled copy of this client's store, as a dask worker gets one
        per task: ``put_to(copy, key, data)`` writes through it."""
        raise Unsupported("pickling the store")

    async def put_to(self, copy: Any, key: str, data: bytes) -> None:
        raise Unsupported("put")

    async def close_copy(self, copy: Any) -> None:
        """Release what a ``fresh_copy`` built (nothing, for most stores)."""

    def zarr_store(self, prefix: str, *, read_only: bool = False) -> Any:
        """A picklable zarr v3 Store rooted at ``prefix`` in the target (for dask)."""
        raise Unsupported("zarr store")


# --- our library ----------------------------------------------------------------------------

_OURS_CONSTRUCTORS = {
    "s3": "s3_storage",
    "local": "local_filesystem_storage",
    "memory": "in_memory_storage",
}


class Ours(Client):
    id = "ours"
    name = "icechunk_storage"
    labels: ClassVar[Mapping[str, str]] = {
        "s3": "icechunk_storage get_many",
        "gcs": "icechunk_storage gcs get_many",
        "local": "icechunk_storage local get_many",
        "memory": "icechunk_storage memory get_many",
    }
    batch = True

    @classmethod
    def unavailable_reason(cls, kind: str, *, credentials: bool = False) -> str | None:
        try:
            module = importlib.import_module("icechunk_storage")
        except ImportError as exc:
            return f"icechunk_storage is not importable ({exc})"
        needed = [_OURS_CONSTRUCTORS.get(kind, f"{kind}_storage")]
        if credentials:
            needed.append("S3StaticCredentials")
        for name in needed:
            if not hasattr(module, name):
                return f"icechunk_storage.{name} does not exist yet"
        return None

    def _limit(self) -> None:
        limit = self.concurrency
        if self.defaults:  # the library's default, whatever an earlier workload set
            limits = importlib.import_module("icechunk_storage._limits")
            limit = int(limits.DEFAULT_MAX_CONCURRENT_REQUESTS)
        if ours("get_max_concurrent_requests")() != limit:
            ours("set_max_concurrent_requests")(limit)

    def _s3_kwargs(self) -> dict[str, Any]:
        target = self.target
        return {
            "bucket": target.bucket,
            "prefix": None,
            "region": target.region,
            "endpoint_url": target.endpoint,
            "allow_http": True,
            "force_path_style": True,
        }

    async def open(self) -> None:
        self._limit()
        target = self.target
        if target.kind == "s3":
            kwargs = self._s3_kwargs()
            if self.credentials is not None:
                kwargs["get_credentials"] = OursCallback(self.credentials)
            else:
                kwargs["access_key_id"] = target.access_key_id
                kwargs["secret_access_key"] = target.secret_access_key
            storage = ours("s3_storage")(**kwargs)
        elif target.kind == "gcs":
            storage = ours("gcs_storage")(
                bucket=target.bucket,
                prefix=None,
                anonymous=True,
                config={"google_base_url": target.endpoint, "allow_http": "true"},
            )
        elif target.kind == "local":
            storage = ours("local_filesystem_storage")(target.root)
        else:
            storage = ours("in_memory_storage")()
        if self.parts > 1 and self.large_size:
            part_size = -(-self.large_size // self.parts)
            settings = ours("StorageSettings")(
                concurrency=ours("StorageConcurrencySettings")(
                    max_concurrent_requests_for_object=self.parts,
                    ideal_concurrent_request_size=part_size,
                )
            )
            storage = storage.with_settings(settings)
        self.storage = storage

    async def aclose(self) -> None:
        await self.storage.aclose()

    async def load(self, items: Mapping[str, bytes]) -> None:
        for key, data in items.items():
            await self.storage.put(key, data)

    async def get_one(self, key: str, size: int | None) -> int:
        return len((await self.storage.get(key)).data)

    async def get_small(self, keys: Sequence[str], size: int | None) -> int:
        self._limit()
        if not self.batch:
            return await super().get_small(keys, size)
        results = await self.storage.get_many([(key, None) for key in keys])
        return sum(len(data) for data in results if data is not None)

    async def get_large(self, key: str, size: int, parts: int) -> list[Any]:
        self._limit()
        result = await self.storage.get(key, ours("RangeByteRequest")(0, size))
        return [result.data]

    async def put_one(self, key: str, data: bytes, create: bool) -> None:
        await self.storage.put(key, data, mode="create" if create else "overwrite")

    async def put_small(self, items: Sequence[tuple[str, bytes]], *, create: bool) -> int:
        self._limit()
        return await super().put_small(items, create=create)

    async def list_keys(self, prefix: str) -> int:
        count = 0
        async for _ in self.storage.list(prefix):
            count += 1
        return count

    def fresh_copy(self) -> Any:
        return pickle.loads(pickle.dumps(self.storage))

    async def put_to(self, copy: Any, key: str, data: bytes) -> None:
        await copy.put(key, data)

    async def close_copy(self, copy: Any) -> None:
        await copy.aclose()

    def zarr_store(self, prefix: str, *, read_only: bool = False) -> Any:
        from icechunk_storage.zarr import ZarrStore

        if self.target.kind != "s3":
            raise Unsupported("zarr store on " + self.target.kind)
        kwargs = self._s3_kwargs()
        kwargs.update(
            prefix=prefix,
            access_key_id=self.target.access_key_id,
            secret_access_key=self.target.secret_access_key,
        )
        return ZarrStore(ours("s3_storage")(**kwargs), read_only=read_only)


class OursGet(Ours):
    id = "ours-get"
    name = "icechunk_storage (get + sem)"
    labels: ClassVar[Mapping[str, str]] = {
        "s3": "icechunk_storage get (sem)",
        "local": "icechunk_storage local get (sem)",
        "memory": "icechunk_storage memory get (sem)",
    }
    batch = False


# --- obstore --------------------------------------------------------------------------------


class Obstore(Client):
    id = "obstore"
    name = "obstore"
    labels: ClassVar[Mapping[str, str]] = {
        "s3": "obstore get_async + bytes_async",
        "gcs": "obstore GCSStore get_async + bytes_async",
        "local": "obstore LocalStore",
        "memory": "obstore MemoryStore",
    }
    modules = ("obstore",)

    async def open(self) -> None:
        from obstore.store import GCSStore, LocalStore, MemoryStore, S3Store

        target = self.target
        self.store: Any
        if target.kind == "s3":
            client_options: dict[str, Any] = {"allow_http": True}
            if target.endpoint.startswith("https:"):  # the test CA: see workloads._OverTls
                client_options["allow_invalid_certificates"] = True
            kwargs: dict[str, Any] = {
                "endpoint": target.endpoint,
                "region": target.region,
                "virtual_hosted_style_request": False,
                "client_options": client_options,
            }
            if self.credentials is not None:
                kwargs["credential_provider"] = ObstoreCallback(self.credentials)
            else:
                kwargs["access_key_id"] = target.access_key_id
                kwargs["secret_access_key"] = target.secret_access_key
            self.store = S3Store(target.bucket, **kwargs)
        elif target.kind == "gcs":
            self.store = GCSStore(
                target.bucket,
                config={"base_url": target.endpoint, "skip_signature": True},
                client_options={"allow_http": True},
            )
        elif target.kind == "local":
            self.store = LocalStore(prefix=target.root)
        else:
            self.store = MemoryStore()

    async def load(self, items: Mapping[str, bytes]) -> None:
        import obstore

        for key, data in items.items():
            await obstore.put_async(self.store, key, data)

    async def get_one(self, key: str, size: int | None) -> int:
        import obstore

        response = await obstore.get_async(self.store, key)
        return len(await response.bytes_async())

    async def get_large(self, key: str, size: int, parts: int) -> list[Any]:
        import obstore

        return await asyncio.gather(
            *(
                obstore.get_range_async(self.store, key, start=start, end=end)
                for start, end in split_ranges(size, parts)
            )
        )

    async def put_one(self, key: str, data: bytes, create: bool) -> None:
        import obstore

        await obstore.put_async(self.store, key, data, mode="create" if create else "overwrite")

    async def list_keys(self, prefix: str) -> int:
        import obstore

        count = 0
        async for batch in obstore.list(self.store, prefix=prefix):
            count += len(batch)
        return count

    def fresh_copy(self) -> Any:
        return pickle.loads(pickle.dumps(self.store))

    async def put_to(self, copy: Any, key: str, data: bytes) -> None:
        import obstore

        await obstore.put_async(copy, key, data)

    def zarr_store(self, prefix: str, *, read_only: bool = False) -> Any:
        from obstore.store import S3Store
        from zarr.storage import ObjectStore

        target = self.target
        if target.kind != "s3":
            raise Unsupported("zarr store on " + target.kind)
        store = S3Store(
            target.bucket,
            prefix=prefix,
            endpoint=target.endpoint,
            region=target.region,
            virtual_hosted_style_request=False,
            client_options={"allow_http": True},
            access_key_id=target.access_key_id,
            secret_access_key=target.secret_access_key,
        )
        return ObjectStore(store, read_only=read_only)


class ObstoreRange(Obstore):
    id = "obstore-range"
    name = "obstore (get_range_async)"
    labels: ClassVar[Mapping[str, str]] = {"s3": "obstore get_range_async"}

    async def get_one(self, key: str, size: int | None) -> int:
        import obstore

        if size is None:
            raise Unsupported("get_range_async needs the object size")
        return len(await obstore.get_range_async(self.store, key, start=0, length=size))


# --- aiobotocore, s3fs, aiohttp ---------------------------------------------------------------


class Aiobotocore(Client):
    id = "aiobotocore"
    name = "aiobotocore"
    labels: ClassVar[Mapping[str, str]] = {"s3": "aiobotocore get_object"}
    modules = ("aiobotocore",)

    async def open(self) -> None:
        from aiobotocore.config import AioConfig
        from aiobotocore.credentials import AioRefreshableCredentials
        from aiobotocore.session import AioSession

        target = self.target
        session = AioSession()
        key_id = secret = None
        if self.credentials is not None:
            refresh = BotocoreCallback(self.credentials)
            credentials = AioRefreshableCredentials.create_from_metadata(
                metadata=await refresh(), refresh_using=refresh, method="benchmark"
            )
            session._credentials = credentials  # type: ignore[attr-defined]
        else:
            key_id, secret = target.access_key_id, target.secret_access_key
        config = AioConfig(
            max_pool_connections=max(self.concurrency, self.parts),
            s3={"addressing_style": "path"},
        )
        self._stack = contextlib.AsyncExitStack()
        self.client = await self._stack.enter_async_context(
            session.create_client(
                "s3",
                endpoint_url=target.endpoint,
                region_name=target.region,
                config=config,
                aws_access_key_id=key_id,
                aws_secret_access_key=secret,
            )
        )

    async def aclose(self) -> None:
        await self._stack.aclose()

    async def get_one(self, key: str, size: int | None) -> int:
        response = await self.client.get_object(Bucket=self.target.bucket, Key=key)
        async with response["Body"] as body:
            return len(await body.read())

    async def get_large(self, key: str, size: int, parts: int) -> list[Any]:
        async def part(start: int, end: int) -> bytes:
            response = await self.client.get_object(
                Bucket=self.target.bucket, Key=key, Range=f"bytes={start}-{end - 1}"
            )
            async with response["Body"] as body:
                data: bytes = await body.read()
                return data

        return await asyncio.gather(*(part(s, e) for s, e in split_ranges(size, parts)))

    async def put_one(self, key: str, data: bytes, create: bool) -> None:
        bucket = self.target.bucket
        if create:
            await self.client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        else:
            await self.client.put_object(Bucket=bucket, Key=key, Body=data)

    async def list_keys(self, prefix: str) -> int:
        count = 0
        paginator = self.client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.target.bucket, Prefix=prefix + "/"):
            count += len(page.get("Contents", ()))
        return count


class S3fs(Client):
    id = "s3fs"
    name = "s3fs"
    labels: ClassVar[Mapping[str, str]] = {"s3": "s3fs _cat (batch_size=C)"}
    modules = ("s3fs",)

    async def open(self) -> None:
        if self.credentials is not None:
            raise Unsupported("refreshable credentials (it is aiobotocore underneath)")
        import s3fs

        target = self.target
        self.fs = s3fs.S3FileSystem(
            key=target.access_key_id,
            secret=target.secret_access_key,
            endpoint_url=target.endpoint,
            client_kwargs={"region_name": target.region},
            config_kwargs={
                "max_pool_connections": max(self.concurrency, self.parts),
                "s3": {"addressing_style": "path"},
            },
            asynchronous=True,
            skip_instance_cache=True,
            use_listings_cache=False,
        )
        await self.fs.set_session()

    async def aclose(self) -> None:
        creator = getattr(self.fs, "_s3creator", None)
        if creator is not None:
            await creator.__aexit__(None, None, None)

    def _path(self, key: str) -> str:
        return f"{self.target.bucket}/{key}"

    async def get_one(self, key: str, size: int | None) -> int:
        return len(await self.fs._cat_file(self._path(key)))

    async def get_small(self, keys: Sequence[str], size: int | None) -> int:
        found = await self.fs._cat([self._path(k) for k in keys], batch_size=self.concurrency)
        return sum(len(data) for data in found.values())

    async def get_large(self, key: str, size: int, parts: int) -> list[Any]:
        ranges = split_ranges(size, parts)
        found = await self.fs._cat_ranges(
            [self._path(key)] * len(ranges),
            [start for start, _ in ranges],
            [end for _, end in ranges],
            batch_size=len(ranges),
        )
        for item in found:
            if isinstance(item, BaseException):
                raise item
        return list(found)

    async def put_small(self, items: Sequence[tuple[str, bytes]], *, create: bool) -> int:
        await self.fs._pipe(
            {self._path(key): data for key, data in items},
            batch_size=self.concurrency,
            mode="create" if create else "overwrite",
        )
        return len(items)

    async def list_keys(self, prefix: str) -> int:
        self.fs.invalidate_cache()
        return len(await self.fs._find(self._path(prefix)))

    def zarr_store(self, prefix: str, *, read_only: bool = False) -> Any:
        from zarr.storage import FsspecStore

        target = self.target
        return FsspecStore.from_url(
            f"s3://{target.bucket}/{prefix}",
            storage_options={
                "key": target.access_key_id,
                "secret": target.secret_access_key,
                "endpoint_url": target.endpoint,
                "client_kwargs": {"region_name": target.region},
                "config_kwargs": {"s3": {"addressing_style": "path"}},
            },
            read_only=read_only,
        )


class Gcsfs(Client):
    id = "gcsfs"
    name = "gcsfs"
    labels: ClassVar[Mapping[str, str]] = {"gcs": "gcsfs _cat (batch_size=C)"}
    modules = ("gcsfs",)

    async def open(self) -> None:
        if self.credentials is not None:
            raise Unsupported("refreshable credentials")
        # The classic client: gcsfs.GCSFileSystem is now the "extended" one, which first
        # probes the bucket type over gRPC (60 s timeouts against an emulator).
        from gcsfs.core import GCSFileSystem

        self.fs = GCSFileSystem(
            token="anon",
            endpoint_url=self.target.endpoint,
            asynchronous=True,
            skip_instance_cache=True,
            use_listings_cache=False,
        )
        await self.fs._set_session()

    async def aclose(self) -> None:
        session = getattr(self.fs, "_session", None)
        if session is not None:
            await session.close()

    def _path(self, key: str) -> str:
        return f"{self.target.bucket}/{key}"

    async def get_one(self, key: str, size: int | None) -> int:
        return len(await self.fs._cat_file(self._path(key)))

    async def get_small(self, keys: Sequence[str], size: int | None) -> int:
        found = await self.fs._cat([self._path(k) for k in keys], batch_size=self.concurrency)
        return sum(len(data) for data in found.values())

    async def get_large(self, key: str, size: int, parts: int) -> list[Any]:
        ranges = split_ranges(size, parts)
        return list(
            await asyncio.gather(
                *(self.fs._cat_file(self._path(key), start=a, end=b) for a, b in ranges)
            )
        )


class Aiohttp(Client):
    id = "aiohttp"
    name = "aiohttp unsigned (floor)"
    labels: ClassVar[Mapping[str, str]] = {"s3": "aiohttp unsigned (floor)"}
    modules = ("aiohttp",)

    async def open(self) -> None:
        if not self.target.anonymous_reads or self.credentials is not None:
            raise Unsupported("unsigned requests need a server that serves them (s3rver)")
        import aiohttp

        connector = aiohttp.TCPConnector(limit=max(self.concurrency, self.parts))
        self.session = aiohttp.ClientSession(connector=connector)

    async def aclose(self) -> None:
        await self.session.close()

    def _url(self, key: str) -> str:
        return f"{self.target.endpoint}/{self.target.bucket}/{key}"

    async def get_one(self, key: str, size: int | None) -> int:
        async with self.session.get(self._url(key)) as response:
            response.raise_for_status()
            return len(await response.read())

    async def get_large(self, key: str, size: int, parts: int) -> list[Any]:
        async def part(start: int, end: int) -> bytes:
            headers = {"Range": f"bytes={start}-{end - 1}"}
            async with self.session.get(self._url(key), headers=headers) as response:
                response.raise_for_status()
                return await response.read()

        return await asyncio.gather(*(part(s, e) for s, e in split_ranges(size, parts)))

    async def put_one(self, key: str, data: bytes, create: bool) -> None:
        if create:
            raise Unsupported("conditional writes (unsigned PUT to s3rver only)")
        async with self.session.put(self._url(key), data=data) as response:
            response.raise_for_status()


# --- Azure (Azurite): target.endpoint is the account's blob endpoint, bucket the container,
# --- access_key_id the account name and secret_access_key the account key ---------------------


def _azure_connection_string(target: Target) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={target.access_key_id};"
        f"AccountKey={target.secret_access_key};BlobEndpoint={target.endpoint};"
    )


class OursAzure(Ours):
    id = "ours-azure"
    name = "icechunk_storage azure"
    labels: ClassVar[Mapping[str, str]] = {"azure": "icechunk_storage get_many"}

    @classmethod
    def unavailable_reason(cls, kind: str, *, credentials: bool = False) -> str | None:
        try:
            module = importlib.import_module("icechunk_storage")
        except ImportError as exc:
            return f"icechunk_storage is not importable ({exc})"
        if not hasattr(module, "azure_storage"):
            return "icechunk_storage.azure_storage does not exist yet"
        try:
            importlib.import_module("azure.storage.blob")
        except ImportError as exc:
            return f"the azure extra is not installed ({exc})"
        return None

    async def open(self) -> None:
        if self.credentials is not None:
            raise Unsupported("refreshable credentials (not benchmarked on Azure)")
        self._limit()
        target = self.target
        storage = ours("azure_storage")(
            account=target.access_key_id,
            container=target.bucket,
            prefix=None,
            access_key=target.secret_access_key,
            config={"endpoint": target.endpoint, "allow_http": "true"},
        )
        if self.parts > 1 and self.large_size:
            part_size = -(-self.large_size // self.parts)
            storage = storage.with_settings(
                ours("StorageSettings")(
                    concurrency=ours("StorageConcurrencySettings")(
                        max_concurrent_requests_for_object=self.parts,
                        ideal_concurrent_request_size=part_size,
                    )
                )
            )
        self.storage = storage


class OursAzureGet(OursAzure):
    id = "ours-azure-get"
    name = "icechunk_storage azure (get + sem)"
    labels: ClassVar[Mapping[str, str]] = {"azure": "icechunk_storage get (sem)"}
    batch = False


class ObstoreAzure(Obstore):
    id = "obstore-azure"
    name = "obstore AzureStore"
    labels: ClassVar[Mapping[str, str]] = {"azure": "obstore AzureStore get_async + bytes_async"}

    async def open(self) -> None:
        if self.credentials is not None:
            raise Unsupported("refreshable credentials (not benchmarked on Azure)")
        from obstore.store import AzureStore

        target = self.target
        self.store = AzureStore(
            target.bucket,
            account_name=target.access_key_id,
            account_key=target.secret_access_key,
            endpoint=target.endpoint,
            client_options={"allow_http": True},
        )


class Adlfs(Client):
    """adlfs, as a Zarr-on-fsspec user gets it: ``_cat(paths, batch_size=C)``."""

    id = "adlfs"
    name = "adlfs"
    labels: ClassVar[Mapping[str, str]] = {"azure": "adlfs _cat (batch_size=C)"}
    modules = ("adlfs",)

    async def open(self) -> None:
        if self.credentials is not None:
            raise Unsupported("refreshable credentials (not benchmarked on Azure)")
        adlfs: Any = importlib.import_module("adlfs")  # untyped, bench-only
        self.fs = adlfs.AzureBlobFileSystem(
            connection_string=_azure_connection_string(self.target),
            asynchronous=True,
            skip_instance_cache=True,
            max_concurrency=max(self.concurrency, self.parts),
        )

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.fs.service_client.close()

    def _path(self, key: str) -> str:
        return f"{self.target.bucket}/{key}"

    async def get_one(self, key: str, size: int | None) -> int:
        return len(await self.fs._cat_file(self._path(key)))

    async def get_small(self, keys: Sequence[str], size: int | None) -> int:
        found = await self.fs._cat([self._path(k) for k in keys], batch_size=self.concurrency)
        return sum(len(data) for data in found.values())

    async def get_large(self, key: str, size: int, parts: int) -> list[Any]:
        ranges = split_ranges(size, parts)
        found = await self.fs._cat_ranges(
            [self._path(key)] * len(ranges),
            [start for start, _ in ranges],
            [end for _, end in ranges],
            batch_size=len(ranges),
        )
        for item in found:
            if isinstance(item, BaseException):
                raise item
        return list(found)


# --- local files and memory baselines ---------------------------------------------------------


def _read_file(path: str) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return len(os.read(fd, os.fstat(fd).st_size))
    finally:
        os.close(fd)


class Aiofiles(Client):
    id = "aiofiles"
    name = "aiofiles"
    labels: ClassVar[Mapping[str, str]] = {"local": "aiofiles"}
    modules = ("aiofiles",)

    async def get_one(self, key: str, size: int | None) -> int:
        # Looked up at run time: aiofiles (and its stubs) are optional, bench-only.
        aiofiles: Any = importlib.import_module("aiofiles")
        async with aiofiles.open(self.path(key), "rb") as file:
            return len(await file.read())


class ThreadPool(Client):
    id = "threadpool"
    name = "threadpool(8) os.read"
    labels: ClassVar[Mapping[str, str]] = {"local": "threadpool(8) os.read"}

    async def open(self) -> None:
        self.pool = ThreadPoolExecutor(8)

    async def aclose(self) -> None:
        self.pool.shutdown()

    async def get_one(self, key: str, size: int | None) -> int:
        return await asyncio.get_running_loop().run_in_executor(
            self.pool, _read_file, self.path(key)
        )


class SyncRead(Client):
    id = "sync-read"
    name = "sync os.read loop (floor)"
    labels: ClassVar[Mapping[str, str]] = {"local": "sync os.read loop (floor)"}

    async def get_one(self, key: str, size: int | None) -> int:
        return _read_file(self.path(key))

    async def get_small(self, keys: Sequence[str], size: int | None) -> int:
        return sum(_read_file(self.path(key)) for key in keys)


class DictBaseline(Client):
    id = "dict"
    name = "dict via asyncio tasks (floor)"
    labels: ClassVar[Mapping[str, str]] = {"memory": "dict via asyncio tasks (floor)"}

    async def load(self, items: Mapping[str, bytes]) -> None:
        self.data = dict(items)

    async def get_one(self, key: str, size: int | None) -> int:
        return len(self.data[key])


CLIENTS: tuple[type[Client], ...] = (
    Ours,
    OursGet,
    Obstore,
    ObstoreRange,
    Aiobotocore,
    S3fs,
    Gcsfs,
    Aiohttp,
    Aiofiles,
    ThreadPool,
    SyncRead,
    DictBaseline,
    OursAzure,
    OursAzureGet,
    ObstoreAzure,
    Adlfs,
)


def client_class(client_id: str) -> type[Client]:
    for cls in CLIENTS:
        if cls.id == client_id:
            return cls
    known = ", ".join(cls.id for cls in CLIENTS)
    raise ValueError(f"Unknown client {client_id!r}; known clients: {known}.")
