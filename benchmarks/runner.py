"""Runs workloads: every client, round after round, alternating; summaries per metric.

A client that cannot run is kept in the results with a status instead of stopping the run:
``unavailable`` (its library, or our constructor, is missing), ``unsupported`` (it does not
offer the operation or the target), ``error`` (it failed; the message is kept). Round ``r``
runs the clients in an order rotated by ``r``, so no client always goes first or last.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import statistics
import time
import traceback
from typing import Any

from benchmarks.clients import Client, Unsupported, client_class
from benchmarks.servers import ServerUnavailableError
from benchmarks.workloads import Environment, Slot, Workload

__all__ = ["run_workload", "summarize"]


def summarize(values: list[float]) -> dict[str, float] | None:
    """Median with min and max over rounds, ignoring NaN; None without values."""
    clean = [v for v in values if not math.isnan(v)]
    if not clean:
        return None
    return {"median": statistics.median(clean), "min": min(clean), "max": max(clean)}


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text[:500]


async def run_workload(
    workload_cls: type[Workload], env: Environment, client_ids: list[str]
) -> dict[str, Any]:
    """Run one workload and return its JSON-ready result."""
    workload = workload_cls(env)
    log = env.log
    result: dict[str, Any] = {
        "title": workload.title,
        "kind": workload.kind,
        "params": workload.params(),
        "rounds": workload.rounds,
        "metrics": [
            {
                "key": m.key,
                "label": m.label,
                "unit": m.unit,
                "better": m.better,
                "fmt": m.fmt,
                "chart": m.chart,
                "note": m.note,
            }
            for m in workload.metrics
        ],
        "clients": {},
    }
    entries: dict[str, dict[str, Any]] = result["clients"]
    selected = [cid for cid in client_ids if workload.kind in client_class(cid).labels]
    for cid in selected:
        cls = client_class(cid)
        entries[cid] = {
            "label": workload.label(cls),
            "status": "ok",
            "reason": None,
            "rounds": [],
            "summary": {},
        }
    log(f"== {workload.id}: {workload.title} {result['params']}")
    try:
        target = await workload.setup()
    except (ServerUnavailableError, ImportError) as exc:
        result["server"] = f"unavailable: {exc}"
        for entry in entries.values():
            entry.update(status="unavailable", reason=f"server/setup unavailable: {exc}")
        log(f"   skipped: {exc}")
        return result
    result["server"] = workload.server_label()
    if workload.server is not None:
        await asyncio.to_thread(_settle)

    slots: dict[str, Slot] = {}
    try:
        for cid in selected:
            cls, entry = client_class(cid), entries[cid]
            reason = cls.unavailable_reason(workload.kind, credentials=workload.needs_credentials)
            if reason is not None:
                entry.update(status="unavailable", reason=reason)
                log(f"   {cid}: unavailable ({reason})")
                continue
            slot = Slot(cls)
            if workload.persistent_clients:
                try:
                    client: Client = workload.make_client(cls, target)
                    slot.client = client
                    await client.open()
                    await workload.prepare(client)
                except Unsupported as exc:
                    entry.update(status="unsupported", reason=str(exc))
                    await _close(slot)
                    continue
                except Exception as exc:
                    entry.update(status="error", reason=_short(exc))
                    log(f"   {cid}: error while opening: {_short(exc)}")
                    await _close(slot)
                    continue
            slots[cid] = slot

        for round_index in range(workload.rounds):
            order = list(slots)
            if order:
                shift = round_index % len(order)
                order = order[shift:] + order[:shift]
            for cid in order:
                entry = entries[cid]
                try:
                    sample = await workload.run_round(slots[cid], round_index)
                except Unsupported as exc:
                    entry.update(status="unsupported", reason=str(exc))
                    await _close(slots.pop(cid))
                    continue
                except Exception as exc:
                    entry.update(status="error", reason=_short(exc))
                    log(f"   {cid}: error: {_short(exc)}")
                    log("".join(traceback.format_exception(exc)[-3:]).rstrip())
                    await _close(slots.pop(cid))
                    continue
                entry["rounds"].append(sample)
                log(f"   round {round_index + 1} {cid}: " + _brief(workload, sample))
    finally:
        for slot in slots.values():
            await _close(slot)
        await workload.teardown()

    for entry in entries.values():
        keys = {key for sample in entry["rounds"] for key in sample}
        entry["summary"] = {
            key: summarize([float(sample.get(key, math.nan)) for sample in entry["rounds"]])
            for key in sorted(keys)
        }
    return result


def _settle() -> None:
    """Flush the data set to disk and let the server go idle, so the kernel's writeback and
    the server's own bookkeeping do not land in the first timed run."""
    os.sync()
    time.sleep(0.3)


def _brief(workload: Workload, sample: dict[str, float]) -> str:
    parts = []
    for metric in workload.metrics[:3]:
        value = sample.get(metric.key)
        if value is not None and not math.isnan(value):
            parts.append(f"{metric.label} {metric.fmt.format(value)}")
    return ", ".join(parts)


async def _close(slot: Slot) -> None:
    if slot.client is None:
        return
    client, slot.client = slot.client, None
    with contextlib.suppress(Exception):  # a half-opened client may not close cleanly
        await client.aclose()
