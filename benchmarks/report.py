"""Reporting: Markdown tables on stdout, the JSON document, a PNG chart, the issue-7 targets."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["check_targets", "format_report", "write_chart", "write_json"]

OURS = ("ours", "ours-get")


def _cell(summary: Mapping[str, float] | None, fmt: str) -> str:
    if not summary:
        return "-"
    median, low, high = summary["median"], summary["min"], summary["max"]
    if low == high:
        return fmt.format(median)
    return f"{fmt.format(median)} [{fmt.format(low)}-{fmt.format(high)}]"


def format_workload(workload_id: str, result: Mapping[str, Any]) -> str:
    metrics = result["metrics"]
    params = ", ".join(f"{k}={v}" for k, v in result["params"].items())
    lines = [
        f"### {workload_id}: {result['title']}",
        "",
        f"server: {result.get('server', '-')}; {params}; {result['rounds']} round(s); "
        "median [min-max] over rounds",
        "",
        "| client | " + " | ".join(m["label"] for m in metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for entry in result["clients"].values():
        if entry["status"] != "ok" or not entry["rounds"]:
            reason = entry.get("reason") or "no rounds"
            lines.append(
                f"| {entry['label']} | {entry['status']}: {reason} |" + " |" * (len(metrics) - 1)
            )
            continue
        cells = [_cell(entry["summary"].get(m["key"]), m["fmt"]) for m in metrics]
        lines.append(f"| {entry['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_targets(targets: list[dict[str, Any]]) -> str:
    lines = ["### Targets (issues 7, 17)", "", "| target | status | detail |", "|---|---|---|"]
    for target in targets:
        lines.append(f"| {target['text']} | {target['status']} | {target['detail']} |")
    return "\n".join(lines)


def format_report(document: Mapping[str, Any]) -> str:
    parts = [
        format_workload(workload_id, result)
        for workload_id, result in document["workloads"].items()
    ]
    if document.get("targets"):
        parts.append(format_targets(document["targets"]))
    return "\n\n".join(parts) + "\n"


def _median(workloads: Mapping[str, Any], workload: str, client: str, metric: str) -> float | None:
    entry = workloads.get(workload, {}).get("clients", {}).get(client)
    if not entry or entry["status"] != "ok":
        return None
    summary = entry["summary"].get(metric)
    return None if not summary else float(summary["median"])


def _target(text: str, ok: bool | None, detail: str) -> dict[str, Any]:
    status = "n/a" if ok is None else ("met" if ok else "MISSED")
    return {"text": text, "status": status, "passed": ok, "detail": detail}


def check_targets(workloads: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The issues' targets, judged on medians; "n/a" where a side did not run."""
    targets: list[dict[str, Any]] = []
    if "p1" in workloads:
        ours_cpu = _median(workloads, "p1", "ours", "cpu_us_per_get")
        peer_cpu = _median(workloads, "p1", "obstore", "cpu_us_per_get")
        ours_rate = _median(workloads, "p1", "ours", "gets_per_s")
        peer_rate = _median(workloads, "p1", "obstore", "gets_per_s")
        ok = None
        if (
            ours_cpu is not None
            and peer_cpu is not None
            and ours_rate is not None
            and peer_rate is not None
        ):
            ok = ours_cpu <= peer_cpu and ours_rate >= peer_rate
            detail = (
                f"CPU/GET {ours_cpu:.0f} vs {peer_cpu:.0f} µs; "
                f"GETs/s {ours_rate:.0f} vs {peer_rate:.0f}"
            )
        else:
            detail = "ours or obstore did not run"
        targets.append(_target("P1: CPU/GET ≤ obstore get_async and GETs/s ≥ it", ok, detail))
    if "p2" in workloads:
        ours_rate = _median(workloads, "p2", "ours", "mib_per_s")
        peer_rate = _median(workloads, "p2", "obstore", "mib_per_s")
        ratio = _median(workloads, "p2", "ours", "rss_ratio")
        ok = None
        if ours_rate is not None and peer_rate and ratio is not None:
            ok = ours_rate >= 0.9 * peer_rate and ratio <= 1.2
            detail = (
                f"MiB/s {ours_rate:.0f} vs obstore {peer_rate:.0f} "
                f"({ours_rate / peer_rate:.2f}x); peak RSS growth {ratio:.2f}x size"
            )
        else:
            detail = "ours or obstore did not run"
        targets.append(_target("P2: MiB/s ≥ 0.9 x obstore, peak RSS ≤ 1.2 x size", ok, detail))
    for workload, factor in (("p3-local", 5), ("p3-memory", 10)):
        if workload not in workloads:
            continue
        ours_rate = _median(workloads, workload, "ours", "ops_per_s")
        peer_rate = _median(workloads, workload, "obstore", "ops_per_s")
        ok = None
        detail = "ours or obstore did not run"
        if ours_rate and peer_rate:
            ok = ours_rate >= factor * peer_rate
            detail = f"{ours_rate:,.0f} vs {peer_rate:,.0f} reads/s ({ours_rate / peer_rate:.1f}x)"
        store = "LocalStore" if workload == "p3-local" else "MemoryStore"
        targets.append(_target(f"{workload}: ≥ {factor} x obstore {store}", ok, detail))
    if "p4" in workloads:
        entry = workloads["p4"]["clients"].get("ours")
        ok = None
        detail = "ours did not run"
        if entry and entry["status"] == "ok" and entry["rounds"]:
            failed = max(r["failed"] for r in entry["rounds"])
            refused = max(r["refused_by_server"] for r in entry["rounds"])
            # one call to start, then at most one per credential lifetime that passed
            worst = max(r["callback_calls"] - (r["lifetimes"] + 1) for r in entry["rounds"])
            calls = max(r["callback_calls"] for r in entry["rounds"])
            lifetimes = max(r["lifetimes"] for r in entry["rounds"])
            ok = failed == 0 and refused == 0 and worst <= 0
            detail = (
                f"{failed:.0f} failed, {refused:.0f} refused by server; {calls:.0f} callback "
                f"calls over {lifetimes:.1f} lifetimes"
            )
        targets.append(_target("P4: 0 failed requests, one callback call per lifetime", ok, detail))
    if "p1-azure" in workloads:
        ours_cpu = _median(workloads, "p1-azure", "ours-azure", "cpu_us_per_get")
        peer_cpu = _median(workloads, "p1-azure", "obstore-azure", "cpu_us_per_get")
        ok = None
        detail = "ours-azure or obstore-azure did not run"
        if ours_cpu is not None and peer_cpu:
            ok = ours_cpu <= 0.5 * peer_cpu
            detail = f"CPU/GET {ours_cpu:.0f} vs {peer_cpu:.0f} µs ({ours_cpu / peer_cpu:.2f}x)"
        targets.append(_target("P1 Azure: CPU/GET ≤ 0.5 x obstore AzureStore", ok, detail))
    targets.extend(_write_targets(workloads))
    targets.extend(_net_targets(workloads))
    return targets


def _write_targets(workloads: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Issue 17's write and listing targets: client CPU against obstore in the same run."""
    targets: list[dict[str, Any]] = []
    for workload, metric, factor, name in (
        ("put", "cpu_us_per_put", 1.0, "put: CPU/PUT ≤ obstore"),
        ("put-create", "cpu_us_per_put", 1.0, "put-create: CPU/conditional create ≤ obstore"),
        (
            "put-create-s3rver",
            "cpu_us_per_put",
            1.0,
            "put-create-s3rver: CPU/conditional create ≤ obstore (keep-alive)",
        ),
        ("list", "cpu_us_per_key", 1.5, "list: CPU/listed key ≤ 1.5 x obstore"),
    ):
        if workload not in workloads:
            continue
        ours_cpu = _median(workloads, workload, "ours", metric)
        peer_cpu = _median(workloads, workload, "obstore", metric)
        ok, detail = None, "ours or obstore did not run"
        if ours_cpu is not None and peer_cpu:
            ok = ours_cpu <= factor * peer_cpu
            detail = f"{ours_cpu:,.1f} vs {peer_cpu:,.1f} µs ({ours_cpu / peer_cpu:.2f}x)"
        targets.append(_target(name, ok, detail))
    if "put-fresh" in workloads:
        extra = _median(workloads, "put-fresh", "ours", "first_extra_us")
        ok = None if extra is None else extra <= 2000
        detail = "ours did not run" if extra is None else f"+{extra:,.0f} µs"
        targets.append(_target("put-fresh: first PUT of an unpickled copy ≤ +2 ms CPU", ok, detail))
    return targets


def _net_targets(workloads: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Issue 17's realistic-network targets (snailmail)."""
    targets: list[dict[str, Any]] = []
    if "net-get-many" in workloads:
        pipe = _median(workloads, "net-get-many", "ours", "pipe_pct")
        ok = None if pipe is None else pipe >= 90
        detail = "ours did not run" if pipe is None else f"{pipe:.1f}% of the pipe"
        targets.append(_target("net-get-many: get_many at defaults ≥ 90% of the pipe", ok, detail))
    if "net-dask-zarr" in workloads:
        found = {
            (client, metric): _median(workloads, "net-dask-zarr", client, metric)
            for client in ("ours", "obstore")
            for metric in ("write_s", "read_s")
        }
        ok, detail = None, "ours or obstore did not run"
        if None not in found.values():
            values = {key: float(value or 0) for key, value in found.items()}
            ok = all(values["ours", m] <= values["obstore", m] for m in ("write_s", "read_s"))
            detail = ", ".join(
                f"{m[:-2]} {values['ours', m]:.2f} vs {values['obstore', m]:.2f} s"
                for m in ("write_s", "read_s")
            )
        targets.append(_target("net-dask-zarr: write and read s ≤ obstore", ok, detail))
    return targets


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=False, default=str) + "\n")


def _chart_label(entry: Mapping[str, Any], metric: Mapping[str, Any]) -> str:
    note = metric.get("note")
    summary = entry["summary"].get(note) if note else None
    if not summary:
        return str(entry["label"])
    return f"{entry['label']} ({summary['median']:,.0f} {note})"


def write_chart(path: Path, workloads: Mapping[str, Any]) -> bool:
    """One panel per charted metric: medians with min-max bars; ours in orange. False
    if matplotlib is missing or there is nothing to draw."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels: list[tuple[str, dict[str, Any], list[tuple[str, str, dict[str, float]]]]] = []
    for workload_id, result in workloads.items():
        for metric in result["metrics"]:
            if not metric["chart"]:
                continue
            rows = [
                (cid, _chart_label(entry, metric), entry["summary"][metric["key"]])
                for cid, entry in result["clients"].items()
                if entry["status"] == "ok" and entry["summary"].get(metric["key"])
            ]
            if rows:
                panels.append((workload_id, metric, rows))
    if not panels:
        return False
    columns = 2
    rows_count = math.ceil(len(panels) / columns)
    heights = [max(len(p[2]) for p in panels[i : i + columns]) for i in range(0, len(panels), 2)]
    figure, axes = plt.subplots(
        rows_count,
        columns,
        figsize=(13, sum(0.42 * h + 1.1 for h in heights)),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for index, (workload_id, metric, rows) in enumerate(panels):
        ax = axes[index // columns][index % columns]
        labels = [label for _, label, _ in rows]
        medians = [s["median"] for _, _, s in rows]
        errors = [
            [s["median"] - s["min"] for _, _, s in rows],
            [s["max"] - s["median"] for _, _, s in rows],
        ]
        colors = ["#e8710a" if cid in OURS else "#5b7fa6" for cid, _, _ in rows]
        positions = list(range(len(rows)))
        bars = ax.barh(positions, medians, xerr=errors, color=colors, capsize=3)
        ax.bar_label(
            bars,
            labels=[metric["fmt"].format(m) for m in medians],
            padding=4,
            fontsize=7,
            label_type="edge",
        )
        ax.set_yticks(positions, labels, fontsize=8)
        ax.invert_yaxis()
        better = {"higher": " (higher is better)", "lower": " (lower is better)"}.get(
            metric["better"] or "", ""
        )
        ax.set_title(f"{workload_id}: {metric['label']}{better}", fontsize=9)
        positive = [m for m in medians if m > 0]
        if positive and max(positive) / min(positive) > 50:
            ax.set_xscale("log")
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    for index in range(len(panels), rows_count * columns):
        axes[index // columns][index % columns].axis("off")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
