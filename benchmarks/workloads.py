"""The workloads: what is measured, on which server, with which clients, and how.

Each workload sets up its data once (untimed), then the runner (``benchmarks.runner``) calls
``run_round`` for every client in turn, round after round, so slow drift of the machine hits
every client alike. A round warms the client's connection pool first (untimed), then times one
run with :class:`benchmarks.measure.Meter` and returns plain numbers.

To add a cloud (GCS against fake-gcs-server, Azure against Azurite): give the server a starter
in ``servers.py``, the clients a label for the new target kind in ``clients.py``, and add the
kind to ``SmallGets.kinds``/``LargeRanges.kinds`` (see docs/benchmarks.md).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from benchmarks.clients import Client, Ours, Target, Unsupported, ours
from benchmarks.credentials import CredentialSource
from benchmarks.measure import Meter
from benchmarks.servers import Server, ServerPool, moto_control

__all__ = ["WORKLOADS", "Metric", "Options", "Slot", "Workload", "workload_class"]

KIB = 1024
MIB = 1024 * 1024
BUCKET = "bench"
ROOT = str(Path(__file__).resolve().parent.parent)


@dataclass
class Options:
    """Every size, count and duration; the command-line flags set these."""

    rounds: int = 3
    concurrency: int = 64
    warmup: int = 128
    p1_count: int = 2000
    p1_size_kib: int = 16
    p2_size_mib: int = 256
    p2_parts: int = 16
    p2_rounds: int | None = None
    p3_count: int = 2000
    p3_size_kib: int = 16
    p3_min_seconds: float = 0.3
    p4_seconds: float = 10.0
    p4_lifetime: float = 2.0
    p4_concurrency: int = 64
    p4_rounds: int = 1
    put_count: int = 500
    put_size_kib: int = 16
    create_count: int = 200
    fresh_copies: int = 20
    list_count: int = 2000
    list_repeats: int = 3
    net_rtt_ms: float = 20.0
    net_mbs: float = 50.0
    net_rounds: int = 1
    net_count: int = 64
    net_size_kib: int = 1024
    net_zarr_mib: int = 64
    net_chunk_mib: int = 2
    net_repo_chunks: int = 8

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Metric:
    """One number a workload reports per round."""

    key: str
    label: str
    unit: str
    better: str | None = None  # "higher", "lower" or None (context only)
    fmt: str = "{:,.0f}"
    chart: bool = False
    note: str | None = None  # another metric shown next to the client's name in the chart


@dataclass
class Slot:
    """A client of one workload: its class, and the opened instance (persistent workloads)."""

    cls: type[Client]
    client: Client | None = None


@dataclass
class Environment:
    servers: ServerPool
    work_dir: Path
    options: Options
    log: Any = field(default=print)


class Workload(abc.ABC):
    id: ClassVar[str]
    title: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]] = ("s3",)
    server: ClassVar[str | None] = None
    metrics: ClassVar[tuple[Metric, ...]]
    default_clients: ClassVar[tuple[str, ...]]
    keys: list[str]
    persistent_clients: ClassVar[bool] = True  # False: run_round builds its own client
    needs_credentials: ClassVar[bool] = False

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.options = env.options
        self.server_info: Server | None = None
        self.target: Target | None = None

    @property
    def rounds(self) -> int:
        return self.options.rounds

    @property
    def kind(self) -> str:
        return self.kinds[0]

    @abc.abstractmethod
    def params(self) -> dict[str, Any]:
        """The sizes and counts this workload ran with (for the report)."""

    @property
    def server_pid(self) -> int | None:
        return None if self.server_info is None else self.server_info.pid

    def server_label(self) -> str:
        if self.server_info is None:
            return "none (in process)"
        return f"{self.server_info.name} {self.server_info.version}"

    async def setup(self) -> Target:
        """Start the server and write the data (untimed); the target clients will use."""
        if self.server is None:
            raise NotImplementedError
        server = self.env.servers.get(self.server)
        self.server_info = server
        self.target = Target(
            kind=self.kind,
            endpoint=server.endpoint,
            bucket=BUCKET,
            access_key_id=server.access_key_id,
            secret_access_key=server.secret_access_key,
            anonymous_reads=server.anonymous_reads,
        )
        await ensure_bucket(self.target)
        return self.target

    def label(self, cls: type[Client]) -> str:
        """How the client is named in this workload's table."""
        return cls.name

    def make_client(self, cls: type[Client], target: Target) -> Client:
        return cls(target, concurrency=self.options.concurrency)

    async def prepare(self, client: Client) -> None:  # noqa: B027 (optional hook)
        """Per-client untimed preparation (memory clients load their data here)."""

    @abc.abstractmethod
    async def run_round(self, slot: Slot, round_index: int) -> dict[str, float]:
        """One timed run of one client; the metrics, keyed as in ``metrics``."""

    async def teardown(self) -> None:  # noqa: B027 (optional hook)
        """Release what setup made (servers are stopped by the pool)."""


# --- helpers -----------------------------------------------------------------------------------


async def _setup_client(target: Target) -> Any:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import AioSession

    return AioSession().create_client(
        "s3",
        endpoint_url=target.endpoint,
        region_name=target.region,
        aws_access_key_id=target.access_key_id,
        aws_secret_access_key=target.secret_access_key,
        # Over https botocore would send its CRC32 as an aws-chunked trailer, which s3rver
        # stores as part of the object; a checksum only when the operation requires one.
        config=AioConfig(
            max_pool_connections=32,
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
        ),
    )


def _gcs_request(target: Target, method: str, path: str, body: bytes, kind: str) -> None:
    import urllib.request

    request = urllib.request.Request(
        target.endpoint + path, data=body, method=method, headers={"Content-Type": kind}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=60) as response:
        response.read()


async def ensure_bucket(target: Target) -> None:
    if target.kind == "gcs":
        body = json.dumps({"name": target.bucket}).encode()
        path, kind = "/storage/v1/b?project=bench", "application/json"
        with contextlib.suppress(OSError):  # 409: it exists already
            await asyncio.to_thread(_gcs_request, target, "POST", path, body, kind)
        return
    async with await _setup_client(target) as s3:
        try:
            await s3.head_bucket(Bucket=target.bucket)
        except Exception:
            await s3.create_bucket(Bucket=target.bucket)


async def upload(target: Target, items: Sequence[tuple[str, bytes]]) -> None:
    """Write the data set (untimed setup): aiobotocore on S3, plain media uploads on GCS."""
    if target.kind == "gcs":
        from urllib.parse import quote

        def put_all() -> None:
            for key, data in items:
                path = f"/upload/storage/v1/b/{target.bucket}/o?uploadType=media&name="
                _gcs_request(
                    target, "POST", path + quote(key, safe=""), data, "application/octet-stream"
                )

        await asyncio.to_thread(put_all)
        return
    async with await _setup_client(target) as s3:
        semaphore = asyncio.Semaphore(32)

        async def put(item: tuple[str, bytes]) -> None:
            async with semaphore:
                await s3.put_object(Bucket=target.bucket, Key=item[0], Body=item[1])

        await asyncio.gather(*(put(item) for item in items))


def small_objects(prefix: str, count: int, size: int) -> list[tuple[str, bytes]]:
    return [(f"{prefix}/{index:05d}", os.urandom(size)) for index in range(count)]


def stamped_object(size: int) -> bytearray:
    """``size`` bytes of 1 MiB random blocks, each starting with its index (see ``verify``)."""
    block = os.urandom(MIB)
    data = bytearray(size)
    for index, start in enumerate(range(0, size, MIB)):
        chunk = (index.to_bytes(8, "big") + block[8:])[: size - start]
        data[start : start + len(chunk)] = chunk
    return data


def verify_stamped(parts: Sequence[Any], size: int) -> None:
    """Check the parts of a stamped object: total length and every block's index."""
    views = [memoryview(part).cast("B") for part in parts]
    total = sum(len(view) for view in views)
    if total != size:
        raise ValueError(f"read {total} bytes, expected {size}")
    offset = 0
    for view in views:
        block = -(-offset // MIB)
        while block * MIB + 8 <= offset + len(view):
            local = block * MIB - offset
            if int.from_bytes(view[local : local + 8], "big") != block:
                raise ValueError(f"wrong data at byte {block * MIB}")
            block += 1
        offset += len(view)


def _per(value: float | None, count: float, scale: float) -> float:
    return float("nan") if value is None or count == 0 else value / count * scale


# --- P1: small chunks --------------------------------------------------------------------------


class SmallGets(Workload):
    id = "p1"
    title = "P1 small chunks: N GETs of S KiB, C in flight"
    server = "s3rver"
    metrics = (
        Metric("cpu_us_per_get", "client CPU µs/GET", "µs", "lower", chart=True),
        Metric("gets_per_s", "GETs/s", "GET/s", "higher", chart=True),
        Metric("server_cpu_us_per_get", "server CPU µs/GET", "µs"),
        Metric("wall_s", "wall s", "s", fmt="{:.2f}"),
        Metric("other_cpu_pct", "other procs CPU %", "%"),
    )
    default_clients: ClassVar[tuple[str, ...]] = (
        "ours",
        "ours-get",
        "obstore",
        "obstore-range",
        "aiobotocore",
        "s3fs",
        "aiohttp",
    )

    def params(self) -> dict[str, Any]:
        o = self.options
        return {"count": o.p1_count, "size_kib": o.p1_size_kib, "concurrency": o.concurrency}

    @property
    def size(self) -> int:
        return self.options.p1_size_kib * KIB

    def label(self, cls: type[Client]) -> str:
        return cls.labels[self.kind]

    async def setup(self) -> Target:
        target = await super().setup()
        items = small_objects("small", self.options.p1_count, self.size)
        self.keys = [key for key, _ in items]
        await upload(target, items)
        return target

    async def run_round(self, slot: Slot, round_index: int) -> dict[str, float]:
        assert slot.client is not None
        client, keys, count = slot.client, self.keys, len(self.keys)
        await client.get_small(keys[: self.options.warmup], self.size)  # warm the pool
        with Meter(self.server_pid) as meter:
            total = await client.get_small(keys, self.size)
        if total != count * self.size:
            raise ValueError(f"read {total} bytes, expected {count * self.size}")
        return {
            "cpu_us_per_get": meter.cpu_s / count * 1e6,
            "gets_per_s": count / meter.wall_s,
            "server_cpu_us_per_get": _per(meter.server_cpu_s, count, 1e6),
            "wall_s": meter.wall_s,
            "other_cpu_pct": meter.other_cpu_pct if meter.other_cpu_pct is not None else 0.0,
        }


# --- P2: one large object as concurrent ranges ----------------------------------------------------


class LargeRanges(Workload):
    """Each client runs in its own subprocess (``benchmarks._worker``), so its peak RSS is its
    own: no other library's allocations, no earlier round's garbage."""

    id = "p2"
    title = "P2 large object as concurrent ranges"
    server = "s3rver"
    persistent_clients = False
    metrics = (
        Metric("mib_per_s", "MiB/s", "MiB/s", "higher", chart=True),
        Metric("cpu_ms_per_mib", "client CPU ms/MiB", "ms", "lower", fmt="{:.2f}"),
        Metric("rss_ratio", "peak RSS growth / size", "x", "lower", fmt="{:.2f}", chart=True),
        Metric("peak_rss_mib", "peak RSS growth MiB", "MiB", "lower"),
        Metric("server_cpu_ms_per_mib", "server CPU ms/MiB", "ms", fmt="{:.2f}"),
        Metric("wall_s", "wall s", "s", fmt="{:.3f}"),
    )
    default_clients: ClassVar[tuple[str, ...]] = (
        "ours",
        "obstore",
        "aiobotocore",
        "s3fs",
        "aiohttp",
    )

    @property
    def rounds(self) -> int:
        return self.options.p2_rounds or self.options.rounds

    def params(self) -> dict[str, Any]:
        o = self.options
        return {"size_mib": o.p2_size_mib, "parts": o.p2_parts}

    async def setup(self) -> Target:
        target = await super().setup()
        size = self.options.p2_size_mib * MIB
        warm = small_objects("p2warm", max(self.options.p2_parts, 1), 4 * KIB)
        self.warm_keys = [key for key, _ in warm]
        await upload(target, [*warm, ("large/object", bytes(stamped_object(size)))])
        return target

    async def run_round(self, slot: Slot, round_index: int) -> dict[str, float]:
        assert self.target is not None
        spec = {
            "client": slot.cls.id,
            "target": self.target.as_dict(),
            "key": "large/object",
            "size": self.options.p2_size_mib * MIB,
            "parts": self.options.p2_parts,
            "warm_keys": self.warm_keys,
            "warm_size": 4 * KIB,
            "server_pid": self.server_pid,
        }
        result = await run_worker(spec)
        if "unsupported" in result:
            raise Unsupported(str(result["unsupported"]))
        if "error" in result:
            raise RuntimeError(str(result["error"]))
        return {key: float(value) for key, value in result.items()}


class _OverTls(Workload):
    """The same workload on s3rver over HTTPS, as every real S3 request is: TLS decryption and
    its plumbing join the client's cost. Clients trust the test CA through ``AWS_CA_BUNDLE``,
    as a user would; obstore, which reads no such setting here, skips verification instead
    (it costs only at the handshake, and connections are kept alive). The aiohttp floor is
    left out: it would need its own TLS setup."""

    server = "s3rver-tls"
    default_clients: ClassVar[tuple[str, ...]] = ("ours", "obstore", "aiobotocore", "s3fs")
    _previous_bundle: str | None = None

    async def setup(self) -> Target:
        server = self.env.servers.get(self.server)
        assert server.ca_bundle is not None
        self._previous_bundle = os.environ.get("AWS_CA_BUNDLE")
        os.environ["AWS_CA_BUNDLE"] = str(server.ca_bundle)  # worker processes inherit it
        return await super().setup()

    async def teardown(self) -> None:
        if self._previous_bundle is None:
            os.environ.pop("AWS_CA_BUNDLE", None)
        else:
            os.environ["AWS_CA_BUNDLE"] = self._previous_bundle
        await super().teardown()


class SmallGetsTls(_OverTls, SmallGets):
    id = "p1-tls"
    title = "P1 over TLS: N GETs of S KiB, C in flight, HTTPS"
    default_clients = _OverTls.default_clients


class LargeRangesTls(_OverTls, LargeRanges):
    id = "p2-tls"
    title = "P2 over TLS: large object as concurrent ranges, HTTPS"
    default_clients = _OverTls.default_clients


class GcsSmallGets(SmallGets):
    id = "p1-gcs"
    title = "P1 small chunks on GCS (fake-gcs-server): N GETs of S KiB, C in flight"
    kinds = ("gcs",)
    server = "fake-gcs"
    default_clients: ClassVar[tuple[str, ...]] = ("ours", "obstore", "gcsfs")


class GcsLargeRanges(LargeRanges):
    id = "p2-gcs"
    title = "P2 large object as concurrent ranges on GCS (fake-gcs-server)"
    kinds = ("gcs",)
    server = "fake-gcs"
    default_clients: ClassVar[tuple[str, ...]] = ("ours", "obstore", "gcsfs")


# --- P1 and P2 on Azure (Azurite) -----------------------------------------------------------------


async def azure_upload(target: Target, items: Sequence[tuple[str, bytes]]) -> None:
    """Create the container and write the data set with azure-storage-blob (untimed)."""
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob.aio import BlobServiceClient

    connection = (
        f"DefaultEndpointsProtocol=http;AccountName={target.access_key_id};"
        f"AccountKey={target.secret_access_key};BlobEndpoint={target.endpoint};"
    )
    async with BlobServiceClient.from_connection_string(connection) as service:
        container = service.get_container_client(target.bucket)
        with contextlib.suppress(ResourceExistsError):
            await container.create_container()
        semaphore = asyncio.Semaphore(32)

        async def put(item: tuple[str, bytes]) -> None:
            async with semaphore:
                await container.upload_blob(item[0], item[1], overwrite=True, max_concurrency=4)

        await asyncio.gather(*(put(item) for item in items))


class _OnAzurite(Workload):
    """A workload whose data lives in a container on Azurite."""

    kinds = ("azure",)
    server = "azurite"

    async def _azure_target(self) -> Target:
        server = self.env.servers.get("azurite")
        self.server_info = server
        self.target = Target(
            kind="azure",
            endpoint=server.endpoint,
            bucket=BUCKET,
            access_key_id=server.access_key_id,
            secret_access_key=server.secret_access_key,
        )
        return self.target


class SmallGetsAzure(_OnAzurite, SmallGets):
    id = "p1-azure"
    title = "P1 on Azure (Azurite): N GETs of S KiB, C in flight"
    default_clients: ClassVar[tuple[str, ...]] = (
        "ours-azure",
        "ours-azure-get",
        "obstore-azure",
        "adlfs",
    )

    async def setup(self) -> Target:
        target = await self._azure_target()
        items = small_objects("small", self.options.p1_count, self.size)
        self.keys = [key for key, _ in items]
        await azure_upload(target, items)
        return target


class LargeRangesAzure(_OnAzurite, LargeRanges):
    id = "p2-azure"
    title = "P2 on Azure (Azurite): large object as concurrent ranges"
    default_clients: ClassVar[tuple[str, ...]] = ("ours-azure", "obstore-azure", "adlfs")

    async def setup(self) -> Target:
        target = await self._azure_target()
        size = self.options.p2_size_mib * MIB
        warm = small_objects("p2warm", max(self.options.p2_parts, 1), 4 * KIB)
        self.warm_keys = [key for key, _ in warm]
        await azure_upload(target, [*warm, ("large/object", bytes(stamped_object(size)))])
        return target


async def run_worker(spec: dict[str, Any], limit_s: float = 600) -> dict[str, Any]:
    """Run ``benchmarks._worker`` on ``spec``; its last stdout line is the JSON result."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH", "")) if p)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks._worker",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(json.dumps(spec).encode()), limit_s)
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    lines = out.decode().strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise RuntimeError(
            f"worker exited with {process.returncode} without a result: "
            f"{err.decode(errors='replace')[-1500:]}"
        ) from None
    return result


# --- P3: local files and memory ------------------------------------------------------------------


class _InProcessReads(Workload):
    metrics = (
        Metric("ops_per_s", "reads/s", "op/s", "higher", chart=True),
        Metric("cpu_us_per_op", "client CPU µs/read", "µs", "lower", fmt="{:,.1f}"),
        Metric("passes", "passes timed", "", fmt="{:.0f}"),
    )

    def params(self) -> dict[str, Any]:
        o = self.options
        return {
            "count": o.p3_count,
            "size_kib": o.p3_size_kib,
            "concurrency": o.concurrency,
            "min_seconds": o.p3_min_seconds,
        }

    @property
    def size(self) -> int:
        return self.options.p3_size_kib * KIB

    def label(self, cls: type[Client]) -> str:
        return cls.labels[self.kind]

    async def run_round(self, slot: Slot, round_index: int) -> dict[str, float]:
        assert slot.client is not None
        client, keys = slot.client, self.keys
        await client.get_small(keys[: self.options.warmup], self.size)
        passes = 0
        with Meter(None) as meter:
            start = time.perf_counter()
            while True:
                total = await client.get_small(keys, self.size)
                passes += 1
                if total != len(keys) * self.size:
                    raise ValueError(f"read {total} bytes, expected {len(keys) * self.size}")
                if time.perf_counter() - start >= self.options.p3_min_seconds or passes >= 1000:
                    break
        ops = passes * len(keys)
        return {
            "ops_per_s": ops / meter.wall_s,
            "cpu_us_per_op": meter.cpu_s / ops * 1e6,
            "passes": float(passes),
        }


class LocalReads(_InProcessReads):
    id = "p3-local"
    title = "P3 local files: N reads of S KiB (page cache hot)"
    kinds = ("local",)
    default_clients = ("ours", "ours-get", "obstore", "aiofiles", "threadpool", "sync-read")

    async def setup(self) -> Target:
        root = self.env.work_dir / "p3-local"
        items = small_objects("small", self.options.p3_count, self.size)
        for key, data in items:
            path = root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        self.keys = [key for key, _ in items]
        self.target = Target(kind="local", root=str(root))
        return self.target


class MemoryReads(_InProcessReads):
    id = "p3-memory"
    title = "P3 memory: N reads of S KiB"
    kinds = ("memory",)
    default_clients = ("ours", "ours-get", "obstore", "dict")

    async def setup(self) -> Target:
        self.items = dict(small_objects("small", self.options.p3_count, self.size))
        self.keys = list(self.items)
        self.target = Target(kind="memory")
        return self.target

    async def prepare(self, client: Client) -> None:
        await client.load(self.items)


# --- P4: refreshable credentials ---------------------------------------------------------------


class RefreshingCredentials(Workload):
    """Credentials living ``p4_lifetime`` s, ``p4_concurrency`` GETs in flight for
    ``p4_seconds``; moto (via the harness's expiry check) refuses expired keys."""

    id = "p4"
    title = "P4 refreshable credentials under load"
    server = "moto"
    persistent_clients = False
    needs_credentials = True
    metrics = (
        Metric("failed", "failed requests", "", "lower"),
        Metric(
            "calls_per_lifetime",
            "callback calls / lifetime",
            "",
            "lower",
            fmt="{:.2f}",
            chart=True,
            note="failed",
        ),
        Metric("callback_calls", "callback calls", ""),
        Metric("lifetimes", "lifetimes in run", "", fmt="{:.1f}"),
        Metric("refused_by_server", "refused by server", "", "lower"),
        Metric("requests", "requests ok", ""),
        Metric("requests_per_s", "requests/s", "req/s"),
    )
    default_clients = ("ours", "obstore", "aiobotocore")

    @property
    def rounds(self) -> int:
        return self.options.p4_rounds

    def params(self) -> dict[str, Any]:
        o = self.options
        return {
            "seconds": o.p4_seconds,
            "lifetime_s": o.p4_lifetime,
            "concurrency": o.p4_concurrency,
        }

    async def setup(self) -> Target:
        target = await super().setup()
        items = small_objects("cred", 64, KIB)
        self.keys = [key for key, _ in items]
        await upload(target, items)
        return target

    async def run_round(self, slot: Slot, round_index: int) -> dict[str, float]:
        assert self.target is not None
        assert self.server_info is not None
        options = self.options
        source = CredentialSource(f"p4-{slot.cls.id}-{uuid.uuid4().hex}", options.p4_lifetime)
        client = slot.cls(self.target, concurrency=options.p4_concurrency, credentials=source)
        server = self.server_info
        stats0: Any = await asyncio.to_thread(moto_control, server, "/_bench/stats")
        ok = failed = 0
        errors: dict[str, int] = {}
        await client.open()
        try:
            loop = asyncio.get_running_loop()
            start = loop.time()
            deadline = start + options.p4_seconds

            async def worker(offset: int) -> None:
                nonlocal ok, failed
                index = offset
                while loop.time() < deadline:
                    key = self.keys[index % len(self.keys)]
                    index += options.p4_concurrency
                    try:
                        await client.get_one(key, KIB)
                    except Unsupported:
                        raise
                    except Exception as exc:
                        failed += 1
                        text = f"{type(exc).__name__}: {exc}"[:160]
                        errors[text] = errors.get(text, 0) + 1
                    else:
                        ok += 1

            await asyncio.gather(*(worker(i) for i in range(options.p4_concurrency)))
            elapsed = loop.time() - start
        finally:
            await client.aclose()
        stats1: Any = await asyncio.to_thread(moto_control, server, "/_bench/stats")
        refused = (stats1["expired"] - stats0["expired"]) + (
            stats1["bad_token"] - stats0["bad_token"]
        )
        lifetimes = elapsed / options.p4_lifetime
        if errors:
            self.env.log(f"    {slot.cls.id}: errors {dict(list(errors.items())[:3])}")
        return {
            "failed": float(failed),
            "calls_per_lifetime": source.calls / lifetimes,
            "callback_calls": float(source.calls),
            "lifetimes": lifetimes,
            "refused_by_server": float(refused),
            "requests": float(ok),
            "requests_per_s": ok / elapsed,
        }


# --- writes and listing --------------------------------------------------------------------------


class SmallPuts(Workload):
    id = "put"
    title = "Writes: N PUTs of S KiB, C in flight"
    server = "s3rver"
    create = False
    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("cpu_us_per_put", "client CPU µs/PUT", "µs", "lower", chart=True),
        Metric("puts_per_s", "PUTs/s", "PUT/s", "higher", chart=True),
        Metric("server_cpu_us_per_put", "server CPU µs/PUT", "µs"),
        Metric("wall_s", "wall s", "s", fmt="{:.2f}"),
    )
    default_clients: ClassVar[tuple[str, ...]] = (
        "ours",
        "obstore",
        "aiobotocore",
        "s3fs",
        "aiohttp",
    )

    @property
    def count(self) -> int:
        return self.options.put_count

    def params(self) -> dict[str, Any]:
        o = self.options
        return {"count": self.count, "size_kib": o.put_size_kib, "concurrency": o.concurrency}

    async def run_round(self, slot: Slot, round_index: int) -> dict[str, float]:
        assert slot.client is not None
        client, size = slot.client, self.options.put_size_kib * KIB
        tag = f"{slot.cls.id}/{round_index}/{uuid.uuid4().hex[:8]}"
        payload = os.urandom(size)
        warm = [(f"putwarm/{tag}/{i:05d}", payload) for i in range(min(self.options.warmup, 64))]
        items = [(f"put/{tag}/{i:05d}", payload) for i in range(self.count)]
        await client.put_small(warm, create=self.create)
        with Meter(self.server_pid) as meter:
            await client.put_small(items, create=self.create)
        result = {
            "cpu_us_per_put": meter.cpu_s / self.count * 1e6,
            "puts_per_s": self.count / meter.wall_s,
            "server_cpu_us_per_put": _per(meter.server_cpu_s, self.count, 1e6),
            "wall_s": meter.wall_s,
        }
        if self.create:
            try:
                await client.put_small(items[:1], create=True)
            except Exception:
                result["refused_existing"] = 1.0
            else:
                result["refused_existing"] = 0.0
        return result


class ConditionalPuts(SmallPuts):
    id = "put-create"
    title = "Conditional create (If-None-Match: *) of N new keys"
    server = "moto"
    create = True
    metrics: ClassVar[tuple[Metric, ...]] = (
        SmallPuts.metrics[0],
        Metric("puts_per_s", "PUTs/s", "PUT/s", "higher"),
        SmallPuts.metrics[2],
        Metric("refused_existing", "refuses an existing key", "", fmt="{:.0f}"),
    )
    default_clients = ("ours", "obstore", "aiobotocore", "s3fs")

    @property
    def count(self) -> int:
        return self.options.create_count


class ConditionalPutsKeepAlive(ConditionalPuts):
    """The same conditional creates against s3rver, which keeps connections alive (as S3
    does) but does not enforce the condition: the client's cost of the request itself,
    without moto's new connection per request."""

    id = "put-create-s3rver"
    title = "Conditional create (If-None-Match: *) of N new keys, keep-alive server (s3rver)"
    server = "s3rver"
    metrics: ClassVar[tuple[Metric, ...]] = ConditionalPuts.metrics[:3]

    async def run_round(self, slot: Slot, round_index: int) -> dict[str, float]:
        result = await super().run_round(slot, round_index)
        result.pop("refused_existing", None)  # s3rver does not enforce If-None-Match
        return result


class FreshPuts(Workload):
    """What a dask task pays: the store is unpickled, then written once; the first PUT's
    client CPU against the same copy's later PUTs (issue 17: at most 2 ms more)."""

    id = "put-fresh"
    title = "First PUT of a freshly unpickled store vs its later PUTs"
    server = "s3rver"
    metrics = (
        Metric("first_extra_us", "first PUT's extra CPU", "µs", "lower", fmt="{:,.0f}"),
        Metric("first_put_us", "first PUT CPU", "µs", "lower", fmt="{:,.0f}"),
        Metric("later_put_us", "later PUT CPU", "µs", "lower", fmt="{:,.0f}"),
        Metric("unpickle_us", "unpickle CPU", "µs", "lower", fmt="{:,.0f}"),
    )
    default_clients = ("ours", "obstore")

    def params(self) -> dict[str, Any]:
        return {"copies": self.options.fresh_copies, "size_kib": self.options.put_size_kib}

    async def run_round(self, slot: Slot, round_index: int) -> dict[str, float]:
        assert slot.client is not None
        client, later_puts = slot.client, 3
        payload = os.urandom(self.options.put_size_kib * KIB)
        tag = f"fresh/{slot.cls.id}/{round_index}/{uuid.uuid4().hex[:8]}"
        await client.put_small([(f"{tag}/warm", payload)], create=False)  # the pool is warm
        firsts, laters, unpickles = [], [], []
        for copy_index in range(self.options.fresh_copies):
            with Meter(None) as unpickled:
                copy = client.fresh_copy()
            unpickles.append(unpickled.cpu_s)
            try:
                with Meter(None) as first:
                    await client.put_to(copy, f"{tag}/{copy_index}/0", payload)
                firsts.append(first.cpu_s)
                for index in range(1, later_puts + 1):
                    with Meter(None) as later:
                        await client.put_to(copy, f"{tag}/{copy_index}/{index}", payload)
                    laters.append(later.cpu_s)
            finally:
                await client.close_copy(copy)
        first_s, later_s = statistics.median(firsts), statistics.median(laters)
        return {
            "first_extra_us": (first_s - later_s) * 1e6,
            "first_put_us": first_s * 1e6,
            "later_put_us": later_s * 1e6,
            "unpickle_us": statistics.median(unpickles) * 1e6,
        }


class Listing(Workload):
    id = "list"
    title = "Listing: list N keys under a prefix"
    server = "moto"
    metrics = (
        Metric("cpu_us_per_key", "client CPU µs/key", "µs", "lower", fmt="{:,.1f}", chart=True),
        Metric("keys_per_s", "keys/s", "key/s", "higher"),
        Metric("ms_per_listing", "ms/listing", "ms", "lower", fmt="{:,.1f}"),
        Metric("server_cpu_us_per_key", "server CPU µs/key", "µs", fmt="{:,.1f}"),
    )
    default_clients = ("ours", "obstore", "aiobotocore", "s3fs")

    def params(self) -> dict[str, Any]:
        o = self.options
        return {"count": o.list_count, "repeats": o.list_repeats}

    async def setup(self) -> Target:
        target = await super().setup()
        assert self.server_info is not None
        count = self.options.list_count
        try:
            await asyncio.to_thread(
                moto_control,
                self.server_info,
                "/_bench/seed",
                {"bucket": BUCKET, "prefix": "list/", "count": count, "size": 16},
            )
        except Exception:
            await upload(target, [(f"list/{i:05d}", b"x" * 16) for i in range(count)])
        return target

    async def run_round(self, slot: Slot, round_index: int) -> dict[str, float]:
        assert slot.client is not None
        client, count, repeats = slot.client, self.options.list_count, self.options.list_repeats
        await client.list_keys("list")  # warm
        with Meter(self.server_pid) as meter:
            for _ in range(repeats):
                found = await client.list_keys("list")
                if found != count:
                    raise ValueError(f"listed {found} keys, expected {count}")
        keys = count * repeats
        return {
            "cpu_us_per_key": meter.cpu_s / keys * 1e6,
            "keys_per_s": keys / meter.wall_s,
            "ms_per_listing": meter.wall_s / repeats * 1e3,
            "server_cpu_us_per_key": _per(meter.server_cpu_s, keys, 1e6),
        }


# --- a realistic network: snailmail ---------------------------------------------------------------


class _OnSnailmail(Workload):
    """A workload against moto behind snailmail's fixed delay per request and shared pipe
    (``benchmarks._snail_server``); one server per (delay, bandwidth), for every net-*."""

    server = "snailmail"

    @property
    def rounds(self) -> int:
        return self.options.net_rounds

    def _net(self) -> dict[str, Any]:
        return {"rtt_ms": self.options.net_rtt_ms, "bandwidth_mbs": self.options.net_mbs}

    async def setup(self) -> Target:
        from benchmarks.servers import start_snailmail

        o, pool = self.options, self.env.servers
        name = f"snailmail-{o.net_rtt_ms:g}ms-{o.net_mbs:g}MBs"
        server = pool.get(name, lambda: start_snailmail(pool.work_dir, o.net_rtt_ms, o.net_mbs))
        self.server_info = server
        self.target = Target(
            kind=self.kind,
            endpoint=server.endpoint,
            bucket=BUCKET,
            access_key_id=server.access_key_id,
            secret_access_key=server.secret_access_key,
        )
        await asyncio.to_thread(self._control, "/_bench/seed", _SEED_NOTHING)
        return self.target

    def _control(self, path: str, payload: dict[str, Any] | None = None) -> Any:
        assert self.server_info is not None
        return moto_control(self.server_info, path, payload)

    async def server_requests(self) -> int:
        stats = await asyncio.to_thread(self._control, "/_bench/stats")
        return int(stats["n_requests"])

    def pipe_fraction(self, nbytes: int, seconds: float) -> float:
        """Share of the pipe used: bytes moved over what the pipe moves in ``seconds``."""
        return nbytes / seconds / (self.options.net_mbs * 1e6) if self.options.net_mbs else 0.0


_SEED_NOTHING = {"bucket": BUCKET, "prefix": "", "count": 0, "size": 0}


class NetGetMany(_OnSnailmail):
    """``get_many`` of N chunks at library defaults (ours: no limit set; peers: every read
    started at once, as ``asyncio.gather`` would), against the pipe's capacity."""

    id = "net-get-many"
    title = "Net: N GETs of S KiB at default settings, fixed delay per request, shared pipe"
    metrics = (
        Metric("pipe_pct", "% of the pipe", "%", "higher", fmt="{:.1f}", chart=True),
        Metric("wall_s", "wall s", "s", "lower", fmt="{:.3f}"),
        Metric("mb_per_s", "MB/s", "MB/s", "higher", fmt="{:.1f}"),
        Metric("cpu_ms", "client CPU ms", "ms", "lower", fmt="{:,.0f}"),
        Metric("server_requests", "requests (server)", "", fmt="{:.0f}"),
    )
    default_clients: ClassVar[tuple[str, ...]] = ("ours", "obstore", "s3fs")

    def params(self) -> dict[str, Any]:
        o = self.options
        return {**self._net(), "count": o.net_count, "size_kib": o.net_size_kib}

    def make_client(self, cls: type[Client], target: Target) -> Client:
        return cls(target, concurrency=self.options.net_count, defaults=True)

    def label(self, cls: type[Client]) -> str:
        return cls.labels[self.kind]

    async def setup(self) -> Target:
        target = await super().setup()
        o = self.options
        seed = {"bucket": BUCKET, "prefix": "net/", "count": o.net_count}
        await asyncio.to_thread(
            self._control, "/_bench/seed", {**seed, "size": o.net_size_kib * KIB}
        )
        self.keys = [f"net/{index:05d}" for index in range(o.net_count)]
        return target

    async def run_round(self, slot: Slot, round_index: int) -> dict[str, float]:
        assert slot.client is not None
        client, size = slot.client, self.options.net_size_kib * KIB
        await client.get_small(self.keys[:2], size)  # warm the server and the client
        before = await self.server_requests()
        with Meter(None) as meter:
            total = await client.get_small(self.keys, size)
        requests = await self.server_requests() - before
        if total != len(self.keys) * size:
            raise ValueError(f"read {total} bytes, expected {len(self.keys) * size}")
        return {
            "pipe_pct": 100 * self.pipe_fraction(total, meter.wall_s),
            "wall_s": meter.wall_s,
            "mb_per_s": total / meter.wall_s / 1e6,
            "cpu_ms": meter.cpu_s * 1e3,
            "server_requests": float(requests),
        }


class NetDaskZarr(_OnSnailmail):
    """xarray ``to_zarr``, then ``open_zarr`` and a mean, on a dask ``LocalCluster`` of two
    worker processes; each client is the zarr Store the workers get (pickled)."""

    id = "net-dask-zarr"
    title = "Net: dask to_zarr, then open_zarr + mean, LocalCluster(2 worker processes)"
    persistent_clients = True
    metrics = (
        Metric("write_s", "write s", "s", "lower", fmt="{:.2f}", chart=True),
        Metric("read_s", "read s", "s", "lower", fmt="{:.2f}", chart=True),
        Metric("write_pipe_pct", "write % of pipe", "%", "higher", fmt="{:.0f}"),
        Metric("read_pipe_pct", "read % of pipe", "%", "higher", fmt="{:.0f}"),
        Metric("write_requests", "write requests (server)", "", fmt="{:.0f}"),
        Metric("read_requests", "read requests (server)", "", fmt="{:.0f}"),
    )
    default_clients: ClassVar[tuple[str, ...]] = ("ours", "obstore", "s3fs")

    def params(self) -> dict[str, Any]:
        o = self.options
        return {**self._net(), "size_mib": o.net_zarr_mib, "chunk_mib": o.net_chunk_mib}

    def label(self, cls: type[Client]) -> str:
        return {
            "ours": "ZarrStore(s3_storage)",
            "obstore": "zarr ObjectStore(obstore S3Store)",
            "s3fs": "zarr FsspecStore(s3fs)",
        }.get(cls.id, cls.name)

    async def setup(self) -> Target:
        target = await super().setup()
        self.dask: tuple[Any, Any] | None = await asyncio.to_thread(_start_cluster)
        return target

    async def teardown(self) -> None:
        dask = getattr(self, "dask", None)
        if dask is not None:
            self.dask = None
            await asyncio.to_thread(_stop_cluster, dask)

    async def run_round(self, slot: Slot, round_index: int) -> dict[str, float]:
        assert slot.client is not None
        dask = self.dask
        assert dask is not None
        o = self.options
        prefix = f"zarr/{slot.cls.id}-{round_index}-{uuid.uuid4().hex[:8]}"
        writer = slot.client.zarr_store(prefix)
        reader = slot.client.zarr_store(prefix, read_only=True)
        chunk = o.net_chunk_mib * MIB // 8
        count = max(1, o.net_zarr_mib * MIB // 8 // chunk)
        nbytes = count * chunk * 8
        # untimed: the workers import the store's library and build their clients
        warm = slot.client.zarr_store(prefix + "-warm")
        await asyncio.to_thread(_dask_write, dask, warm, 2, 1024)
        warm = slot.client.zarr_store(prefix + "-warm", read_only=True)
        await asyncio.to_thread(_dask_read, dask, warm, 2 * 1024)
        before = await self.server_requests()
        write_s = await asyncio.to_thread(_dask_write, dask, writer, count, chunk)
        middle = await self.server_requests()
        read_s = await asyncio.to_thread(_dask_read, dask, reader, count * chunk)
        after = await self.server_requests()
        return {
            "write_s": write_s,
            "read_s": read_s,
            "write_pipe_pct": 100 * self.pipe_fraction(nbytes, write_s),
            "read_pipe_pct": 100 * self.pipe_fraction(nbytes, read_s),
            "write_requests": float(middle - before),
            "read_requests": float(after - middle),
        }


def _start_cluster() -> tuple[Any, Any]:
    from distributed import Client as DaskClient
    from distributed import LocalCluster

    cluster = LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=2,
        threads_per_worker=2,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
    try:
        return cluster, DaskClient(cluster, set_as_default=False)  # type: ignore[no-untyped-call]
    except BaseException:
        cluster.close()
        raise


def _stop_cluster(dask: tuple[Any, Any]) -> None:
    cluster, client = dask
    try:
        client.close()
    finally:
        cluster.close()


def _dask_write(dask: tuple[Any, Any], store: Any, count: int, chunk: int) -> float:
    """``to_zarr`` of ``count`` uncompressed chunks of ``chunk`` float64 (values 0, 1, ...,
    so the mean is known); the wall time of the whole call (metadata and chunks)."""
    import dask.array as da
    import xarray as xr

    client = dask[1]
    data = da.arange(count * chunk, dtype="float64", chunks=chunk).reshape(count, chunk)
    dataset = xr.Dataset({"v": (("t", "x"), data.rechunk((1, chunk)))})
    encoding = {"v": {"chunks": (1, chunk), "compressors": None}}
    started = time.perf_counter()
    delayed = dataset.to_zarr(store, mode="w", consolidated=False, encoding=encoding, compute=False)
    client.compute(delayed).result()
    return time.perf_counter() - started


def _dask_read(dask: tuple[Any, Any], store: Any, elements: int) -> float:
    """``open_zarr`` and the mean of every value, computed on the workers; checked."""
    import xarray as xr

    client = dask[1]
    started = time.perf_counter()
    dataset = xr.open_zarr(store, consolidated=False)
    mean = float(client.compute(dataset["v"].data.mean()).result())
    elapsed = time.perf_counter() - started
    if abs(mean - (elements - 1) / 2) > 1e-6 * elements:
        raise ValueError(f"mean {mean} read back, expected {(elements - 1) / 2}")
    return elapsed


class NetRepository(_OnSnailmail):
    """Our ``Repository``: create, open, a writable session, K chunks written through zarr,
    commit; round trips per operation counted by ``InstrumentedStorage`` (and, to check it,
    by the server)."""

    id = "net-repo"
    title = "Net: Repository create, open, session, write K chunks, commit: round trips"
    persistent_clients = False
    metrics = (
        Metric("open_ms", "open ms", "ms", "lower", fmt="{:.0f}", chart=True),
        Metric("open_requests", "open requests", "", "lower", fmt="{:.0f}"),
        Metric("session_ms", "writable_session ms", "ms", "lower", fmt="{:.0f}"),
        Metric("session_requests", "writable_session requests", "", "lower", fmt="{:.0f}"),
        Metric("commit_ms", "commit ms", "ms", "lower", fmt="{:.0f}", chart=True),
        Metric("commit_requests", "commit requests", "", "lower", fmt="{:.0f}"),
        Metric("create_ms", "create ms", "ms", "lower", fmt="{:.0f}"),
        Metric("create_requests", "create requests", "", "lower", fmt="{:.0f}"),
        Metric("write_requests", "write requests", "", fmt="{:.0f}"),
        Metric("server_minus_client", "server - client requests", "", fmt="{:.0f}"),
    )
    default_clients: ClassVar[tuple[str, ...]] = ("ours",)

    def params(self) -> dict[str, Any]:
        return {**self._net(), "chunks": self.options.net_repo_chunks}

    def label(self, cls: type[Client]) -> str:
        return "icechunk_storage Repository" if cls.id == "ours" else cls.name

    async def run_round(self, slot: Slot, round_index: int) -> dict[str, float]:
        from icechunk_storage.zarr import ZarrStore

        if slot.cls.id != "ours":
            raise Unsupported("only our Repository")
        assert self.target is not None
        client = Ours(self.target, concurrency=1, defaults=True)
        client._limit()
        kwargs = client._s3_kwargs()
        kwargs.update(
            prefix=f"repo/{round_index}-{uuid.uuid4().hex[:8]}",
            access_key_id=self.target.access_key_id,
            secret_access_key=self.target.secret_access_key,
        )
        warm = {**kwargs, "prefix": kwargs["prefix"] + "-warm"}
        repository = ours("Repository")
        storage = ours("InstrumentedStorage")(ours("s3_storage")(**kwargs))
        result: dict[str, float] = {}
        client_total = 0

        async def step(name: str, operation: Any) -> Any:
            nonlocal client_total
            storage.reset()
            started = time.perf_counter()
            value = await operation
            result[f"{name}_ms"] = (time.perf_counter() - started) * 1e3
            requests = storage.totals().requests
            result[f"{name}_requests"] = float(requests)
            client_total += requests
            return value

        try:
            await _repository_cycle(ours("s3_storage")(**warm), self.options)  # untimed
            server_total = await self.server_requests()
            await step("create", repository.create_async(storage))
            repo = await step("open", repository.open_async(storage))
            session = await step("session", repo.writable_session_async("main"))
            await step("write", _write_array(ZarrStore(session.storage), self.options))
            await step("commit", session.commit_async("net-repo"))
        finally:
            await storage.aclose()
        server = await self.server_requests() - server_total
        result["server_minus_client"] = float(server - client_total)
        return result


async def _repository_cycle(storage: Any, options: Options) -> None:
    """create, open, session, write, commit: warms what a repository uses (the lean
    transport)."""
    from icechunk_storage.zarr import ZarrStore

    repo = await ours("Repository").create_async(storage)
    session = await repo.writable_session_async("main")
    await _write_array(ZarrStore(session.storage), options)
    await session.commit_async("warm")
    await storage.aclose()


async def _write_array(store: Any, options: Options) -> None:
    """A float64 array of ``net_repo_chunks`` uncompressed 64 KiB chunks, through zarr."""
    import numpy as np
    import zarr.api.asynchronous as zarr_async

    count, chunk = options.net_repo_chunks, 8 * KIB
    array = await zarr_async.create_array(
        store,
        name="v",
        shape=(count, chunk),
        chunks=(1, chunk),
        dtype="float64",
        compressors=None,
    )
    await array.setitem(
        slice(None), np.arange(count * chunk, dtype="float64").reshape(count, chunk)
    )


WORKLOADS: tuple[type[Workload], ...] = (
    SmallGets,
    LargeRanges,
    SmallGetsTls,
    LargeRangesTls,
    GcsSmallGets,
    GcsLargeRanges,
    LocalReads,
    MemoryReads,
    RefreshingCredentials,
    SmallPuts,
    ConditionalPuts,
    ConditionalPutsKeepAlive,
    FreshPuts,
    Listing,
    SmallGetsAzure,
    LargeRangesAzure,
    NetGetMany,
    NetDaskZarr,
    NetRepository,
)


def workload_class(workload_id: str) -> type[Workload]:
    for cls in WORKLOADS:
        if cls.id == workload_id:
            return cls
    known = ", ".join(cls.id for cls in WORKLOADS)
    raise ValueError(f"Unknown workload {workload_id!r}; known workloads: {known}.")
