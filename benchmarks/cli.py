"""``python -m benchmarks``: run the workloads, print tables, write JSON and a PNG chart.

The default run (every workload, its default clients, 3 rounds) takes a few minutes on two
cores. Every size, count and round number is a flag; ``--workloads`` and ``--clients`` pick
a subset. Servers are started as needed and always stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.clients import CLIENTS, client_class
from benchmarks.report import check_targets, format_report, write_chart, write_json
from benchmarks.runner import run_workload
from benchmarks.servers import ServerPool, sigterm_as_exit
from benchmarks.workloads import WORKLOADS, Environment, Options, workload_class

__all__ = ["build_parser", "main"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench-results"
VERSIONED = (
    "icechunk-storage",
    "obstore",
    "s3fs",
    "adlfs",
    "azure-storage-blob",
    "fsspec",
    "aiobotocore",
    "botocore",
    "aiohttp",
    "aiofiles",
    "moto",
    "snailmail",
    "zarr",
    "xarray",
    "dask",
    "distributed",
    "matplotlib",
    "psutil",
)

_HELP = {
    "rounds": "rounds per workload; clients alternate within each round",
    "concurrency": "requests in flight for P1, P3 and writes",
    "warmup": "untimed reads before each timed run (warm connection pools)",
    "p1_count": "P1: number of small objects",
    "p1_size_kib": "P1: object size in KiB",
    "p2_size_mib": "P2: large object size in MiB",
    "p2_parts": "P2: concurrent ranges",
    "p2_rounds": "P2: rounds (default: --rounds)",
    "p3_count": "P3: number of files / memory objects",
    "p3_size_kib": "P3: object size in KiB",
    "p3_min_seconds": "P3: repeat passes over the keys until this much time passed",
    "p4_seconds": "P4: duration of each run",
    "p4_lifetime": "P4: credential lifetime in seconds",
    "p4_concurrency": "P4: requests in flight",
    "p4_rounds": "P4: rounds",
    "put_count": "writes: number of PUTs",
    "put_size_kib": "writes: object size in KiB",
    "create_count": "conditional create: number of PUTs (moto)",
    "fresh_copies": "put-fresh: unpickled copies, each written 4 times",
    "list_count": "listing: number of keys (moto)",
    "list_repeats": "listing: listings per timed run",
    "net_rtt_ms": "net-*: snailmail's fixed delay per request, ms",
    "net_mbs": "net-*: snailmail's shared pipe, MB/s (0: unlimited)",
    "net_rounds": "net-*: rounds",
    "net_count": "net-get-many: number of objects",
    "net_size_kib": "net-get-many: object size in KiB",
    "net_zarr_mib": "net-dask-zarr: dataset size in MiB (uncompressed float64)",
    "net_chunk_mib": "net-dask-zarr: chunk size in MiB",
    "net_repo_chunks": "net-repo: 64 KiB chunks written before the commit",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="icechunk_storage against obstore, s3fs, aiobotocore, aiohttp, aiofiles "
        "in the same run. Method: docs/benchmarks.md.",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(w.id for w in WORKLOADS),
        help="comma-separated workloads (default: all): " + ", ".join(w.id for w in WORKLOADS),
    )
    parser.add_argument(
        "--clients",
        default="",
        help="comma-separated clients instead of each workload's defaults: "
        + ", ".join(c.id for c in CLIENTS),
    )
    defaults = Options()
    for option in fields(Options):
        value = getattr(defaults, option.name)
        kind: Any = type(value) if value is not None else int
        parser.add_argument(
            "--" + option.name.replace("_", "-"),
            type=kind,
            default=value,
            help=f"{_HELP.get(option.name, option.name)} (default: {value})",
        )
    parser.add_argument("--json", type=Path, default=DEFAULT_OUT / "benchmark.json")
    parser.add_argument("--png", type=Path, default=DEFAULT_OUT / "benchmark.png")
    parser.add_argument("--no-png", action="store_true", help="skip the chart")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("ICECHUNK_BENCH_CACHE", DEFAULT_OUT / "cache")),
        help="where s3rver is installed with npm (env ICECHUNK_BENCH_CACHE)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    node = shutil.which("node")
    if node is not None:
        done = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
        found["node"] = done.stdout.strip() or None
    return found


def _machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg_before": list(load) if load else None,
    }


async def _run(options: Options, args: argparse.Namespace, env_log: Any) -> dict[str, Any]:
    workload_ids = [w.strip() for w in args.workloads.split(",") if w.strip()]
    workload_classes = [workload_class(w) for w in workload_ids]
    requested = [c.strip() for c in args.clients.split(",") if c.strip()]
    for client_id in requested:
        client_class(client_id)  # unknown names fail before any work
    work_dir = Path(tempfile.mkdtemp(prefix="icechunk-bench-"))
    results: dict[str, Any] = {}
    try:
        with ServerPool(args.cache_dir, work_dir) as servers:
            env = Environment(servers=servers, work_dir=work_dir, options=options, log=env_log)
            for cls in workload_classes:
                clients = requested or list(cls.default_clients)
                results[cls.id] = await run_workload(cls, env, clients)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = Options(**{option.name: getattr(args, option.name) for option in fields(Options)})

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    started = time.time()
    machine = _machine()
    try:
        with sigterm_as_exit():
            workloads = asyncio.run(_run(options, args, log))
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        return 130
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    machine["loadavg_after"] = list(load) if load else None
    document: dict[str, Any] = {
        "meta": {
            "started": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
            "duration_s": round(time.time() - started, 1),
            "command": "python -m benchmarks "
            + " ".join(argv if argv is not None else sys.argv[1:]),
            "options": options.as_dict(),
            "machine": machine,
            "versions": _versions(),
        },
        "workloads": workloads,
        "targets": check_targets(workloads),
    }
    print(format_report(document))
    write_json(args.json, document)
    log(f"JSON written to {args.json}")
    if not args.no_png and write_chart(args.png, workloads):
        log(f"chart written to {args.png}")
    return 0
