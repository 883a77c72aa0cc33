"""Smoke test of the realistic-network workloads (``net-*``, snailmail): tiny sizes, one round.

Runs ``python -m benchmarks`` in a subprocess, which starts moto behind snailmail's delay and
pipe itself (and, for ``net-dask-zarr``, a two-process dask ``LocalCluster``) and stops them.
It checks what the workloads report, not how fast: every default client ran, the requests the
server saw match the operations (one GET per chunk from ours; the repository's own count of
round trips equals the server's), and the report judges issue 17's targets. About 25 s, most
of it the dask cluster.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.workloads import workload_class

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ("net-get-many", "net-repo", "net-dask-zarr")
COUNT = 6

pytestmark = pytest.mark.slow


def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(module) is not None for module in modules)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench-net")
    command = [
        sys.executable,
        "-m",
        "benchmarks",
        "--workloads",
        ",".join(WORKLOADS),
        *("--net-rtt-ms", "5", "--net-mbs", "200", "--net-rounds", "1"),
        *("--net-count", str(COUNT), "--net-size-kib", "16"),
        *("--net-zarr-mib", "1", "--net-chunk-mib", "1", "--net-repo-chunks", "2"),
        *("--json", str(out / "bench.json"), "--no-png"),
        *("--cache-dir", str(out / "cache")),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    document: dict[str, Any] = json.loads((out / "bench.json").read_text())
    return document


def _expected(workload: str) -> str:
    needs = {"net-dask-zarr": ("snailmail", "distributed", "xarray", "zarr")}
    return "ok" if _installed(*needs.get(workload, ("snailmail",))) else "unavailable"


def test_every_client_runs_or_says_why(run: dict[str, Any]) -> None:
    assert set(run["workloads"]) == set(WORKLOADS)
    for workload_id, result in run["workloads"].items():
        defaults = workload_class(workload_id).default_clients
        assert list(result["clients"]) == list(defaults)
        for client_id, entry in result["clients"].items():
            peer_missing = not client_id.startswith("ours") and not _installed(
                {"obstore": "obstore", "s3fs": "s3fs"}[client_id]
            )
            expected = "unavailable" if peer_missing else _expected(workload_id)
            assert entry["status"] == expected, (workload_id, client_id, entry["reason"])
            if expected == "ok":
                assert len(entry["rounds"]) == 1
                for metric in result["metrics"]:
                    assert entry["summary"][metric["key"]] is not None, metric


def test_requests_match_the_operations(run: dict[str, Any]) -> None:
    if _expected("net-repo") != "ok":
        pytest.skip("snailmail is not installed")
    get_many = run["workloads"]["net-get-many"]["clients"]["ours"]["rounds"][0]
    assert get_many["server_requests"] == COUNT  # one GET per chunk, nothing else
    assert 0 < get_many["pipe_pct"] <= 100
    repo = run["workloads"]["net-repo"]["clients"]["ours"]["rounds"][0]
    assert repo["server_minus_client"] == 0  # InstrumentedStorage saw every round trip
    assert repo["open_requests"] >= 1
    assert repo["commit_requests"] >= 1
    assert repo["write_requests"] >= 2  # the two chunks at least
    if _expected("net-dask-zarr") == "ok":
        dask = run["workloads"]["net-dask-zarr"]["clients"]["ours"]["rounds"][0]
        assert dask["write_requests"] >= 1  # the one chunk, and the metadata
        assert dask["read_requests"] >= 1


def test_the_report_judges_the_network_targets(run: dict[str, Any]) -> None:
    texts = {target["text"]: target for target in run["targets"]}
    pipe = texts["net-get-many: get_many at defaults ≥ 90% of the pipe"]
    dask = texts["net-dask-zarr: write and read s ≤ obstore"]
    if _expected("net-get-many") == "ok":
        assert pipe["status"] in {"met", "MISSED"}
    if _expected("net-dask-zarr") == "ok" and _installed("obstore"):
        assert dask["status"] in {"met", "MISSED"}
