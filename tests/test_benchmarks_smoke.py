"""Smoke test of the benchmark harness: tiny sizes, one round, end to end, no speed checks.

Runs ``python -m benchmarks`` in a subprocess on the local-filesystem, memory and moto
workloads (moto is started and stopped by the harness itself) and checks the JSON it writes:
every workload, every default client, every metric, and the status rules (a peer whose
library is installed must run, one whose library is missing must be "unavailable"; our S3
client runs once ``s3_storage`` exists, and is "unavailable" until then).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import icechunk_storage
from benchmarks.clients import Target, Unsupported, client_class, split_ranges
from benchmarks.runner import summarize
from benchmarks.workloads import MIB, stamped_object, verify_stamped, workload_class

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ("p3-local", "p3-memory", "list", "put-create", "p4")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench")
    command = [
        sys.executable,
        "-m",
        "benchmarks",
        "--workloads",
        ",".join(WORKLOADS),
        "--rounds",
        "1",
        "--warmup",
        "4",
        "--concurrency",
        "8",
        "--p3-count",
        "20",
        "--p3-size-kib",
        "4",
        "--p3-min-seconds",
        "0",
        "--list-count",
        "20",
        "--list-repeats",
        "1",
        "--create-count",
        "10",
        "--p4-seconds",
        "0.6",
        "--p4-lifetime",
        "0.3",
        "--p4-concurrency",
        "4",
        "--json",
        str(out / "bench.json"),
        "--png",
        str(out / "bench.png"),
        "--cache-dir",
        str(out / "cache"),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    document: dict[str, Any] = json.loads((out / "bench.json").read_text())
    document["_stdout"] = done.stdout
    document["_png"] = out / "bench.png"
    return document


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _expected_status(workload: str, client: str) -> set[str]:
    if not client.startswith("ours"):
        modules = client_class(client).modules
        return {"ok"} if all(_installed(m) for m in modules) else {"unavailable"}
    kind = workload_class(workload).kinds[0]
    needed = {"local": "local_filesystem_storage", "memory": "in_memory_storage"}.get(
        kind, "s3_storage"
    )
    exists = hasattr(icechunk_storage, needed)
    if workload == "p4":
        exists = exists and hasattr(icechunk_storage, "S3StaticCredentials")
    return {"ok"} if exists else {"unavailable"}


def test_every_workload_client_and_metric_is_reported(run: dict[str, Any]) -> None:
    assert set(run["workloads"]) == set(WORKLOADS)
    for workload_id, result in run["workloads"].items():
        defaults = workload_class(workload_id).default_clients
        assert list(result["clients"]) == list(defaults)
        metric_keys = [metric["key"] for metric in result["metrics"]]
        assert metric_keys
        for client_id, entry in result["clients"].items():
            expected = _expected_status(workload_id, client_id)
            assert entry["status"] in expected, (workload_id, client_id, entry["reason"])
            if entry["status"] != "ok":
                assert entry["reason"], (workload_id, client_id)
                continue
            assert len(entry["rounds"]) == 1
            for key in metric_keys:
                if key.startswith("server_cpu") and not _installed("psutil"):
                    continue  # the server's CPU is read with psutil
                summary = entry["summary"][key]
                assert summary is not None, (workload_id, client_id, key)
                assert summary["min"] <= summary["median"] <= summary["max"]
                assert math.isfinite(summary["median"])


def test_workloads_measured_what_they_claim(run: dict[str, Any]) -> None:
    workloads = run["workloads"]
    for entry in workloads["p3-local"]["clients"].values():
        if entry["status"] == "ok":
            assert entry["summary"]["ops_per_s"]["median"] > 0
            assert entry["summary"]["passes"]["median"] >= 1
    for entry in workloads["put-create"]["clients"].values():
        if entry["status"] == "ok":  # moto enforces If-None-Match: the second create fails
            assert entry["summary"]["refused_existing"]["median"] == 1
    for entry in workloads["p4"]["clients"].values():
        if entry["status"] == "ok":
            assert entry["summary"]["requests"]["median"] > 0
            assert entry["summary"]["callback_calls"]["median"] >= 1


def test_report_outputs(run: dict[str, Any]) -> None:
    meta = run["meta"]
    assert meta["options"]["rounds"] == 1
    assert "obstore" in meta["versions"]
    for workload_id in WORKLOADS:
        assert f"### {workload_id}:" in run["_stdout"]
    texts = {target["text"].split(":")[0] for target in run["targets"]}
    assert {"p3-local", "p3-memory", "P4", "list", "put-create"} <= texts
    if _installed("matplotlib"):
        assert run["_png"].stat().st_size > 1000


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="Unknown client"):
        client_class("nope")
    with pytest.raises(ValueError, match="Unknown workload"):
        workload_class("nope")
    with pytest.raises(Unsupported):
        client_class("aiofiles")(Target(kind="s3"), concurrency=1)


def test_split_ranges_cover_the_object() -> None:
    assert split_ranges(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert split_ranges(2, 16) == [(0, 1), (1, 2)]
    assert split_ranges(0, 4) == [(0, 0)]


def test_verify_stamped_catches_wrong_data() -> None:
    size = 3 * MIB + 5
    data = stamped_object(size)
    verify_stamped([data[:100], data[100 : 2 * MIB + 3], data[2 * MIB + 3 :]], size)
    with pytest.raises(ValueError, match="expected"):
        verify_stamped([data[:-1]], size)
    swapped = data[MIB : 2 * MIB] + data[:MIB] + data[2 * MIB :]
    with pytest.raises(ValueError, match="wrong data"):
        verify_stamped([swapped], size)


def test_summarize_ignores_missing_values() -> None:
    assert summarize([3.0, float("nan"), 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0}
    assert summarize([float("nan")]) is None


def test_the_tls_workloads_certificate_is_trusted_through_its_ca_only(tmp_path: Path) -> None:
    """``p1-tls``/``p2-tls`` serve s3rver over HTTPS with :func:`tls_files`: a client that
    trusts the CA file completes a handshake for 127.0.0.1; one with the default trust
    store refuses the certificate."""
    import socket
    import ssl
    import threading

    from benchmarks.servers import tls_files

    key_path, chain_path, ca_path = tls_files(tmp_path / "tls")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(chain_path, key_path)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve(count: int) -> None:
        for _ in range(count):
            connection, _ = listener.accept()
            try:
                with server_context.wrap_socket(connection, server_side=True) as tls:
                    tls.sendall(tls.recv(5))
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, args=(2,), daemon=True)
    thread.start()
    try:
        trusting = ssl.create_default_context(cafile=str(ca_path))
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            trusting.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"hello")
            assert tls.recv(5) == b"hello"
        untrusting = ssl.create_default_context()
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            pytest.raises(ssl.SSLCertVerificationError),
        ):
            untrusting.wrap_socket(raw, server_hostname="127.0.0.1")
    finally:
        thread.join(10)
        listener.close()
