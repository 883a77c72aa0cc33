"""One P2 run of one client in a fresh process: ``python -m benchmarks._worker < spec.json``.

A fresh process per client and round isolates peak RSS: no other library's allocations and
no earlier round's garbage are in it. The worker imports only its client's library, opens it,
warms ``parts`` connections with small GETs, then resets the kernel's peak-RSS mark, notes the
RSS, and times the ranged read of the whole object. ``peak_rss_mib`` is the growth of RSS
during the read (peak minus the RSS just before it), which is what the read itself costs:
1x the object size if the parts land in one buffer, about 2x if they are joined afterwards.
The last stdout line is the JSON result.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from benchmarks.clients import Target, Unsupported, client_class
from benchmarks.measure import Meter, current_rss, peak_rss, reset_peak_rss
from benchmarks.workloads import MIB, verify_stamped


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    cls = client_class(spec["client"])
    target = Target.from_dict(spec["target"])
    size, parts = int(spec["size"]), int(spec["parts"])
    client = cls(target, concurrency=parts, parts=parts, large_size=size)
    await client.open()
    try:
        await client.get_small(spec["warm_keys"], int(spec["warm_size"]))
        await client.get_small(spec["warm_keys"], int(spec["warm_size"]))
        reset_ok = reset_peak_rss()
        rss_before = current_rss()
        with Meter(spec.get("server_pid")) as meter:
            buffers = await client.get_large(spec["key"], size, parts)
        peak = peak_rss()
        verify_stamped(buffers, size)
        del buffers
    finally:
        await client.aclose()
    growth = max(peak - rss_before, 0) if reset_ok else peak
    mib = size / MIB
    result: dict[str, Any] = {
        "mib_per_s": mib / meter.wall_s,
        "cpu_ms_per_mib": meter.cpu_s / mib * 1e3,
        "rss_ratio": growth / size,
        "peak_rss_mib": growth / MIB,
        "wall_s": meter.wall_s,
        "process_peak_rss_mib": peak / MIB,
    }
    if meter.server_cpu_s is not None:
        result["server_cpu_ms_per_mib"] = meter.server_cpu_s / mib * 1e3
    return result


def main() -> None:
    spec = json.loads(sys.stdin.read())
    try:
        result = asyncio.run(run(spec))
    except Unsupported as exc:
        result = {"unsupported": str(exc)}
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
    print(json.dumps(result), flush=True)
    sys.stderr.flush()
    # Skip interpreter teardown: a library crashing while it shuts down its threads (seen
    # once with obstore: SIGABRT at exit) must not throw away a finished measurement.
    os._exit(0)


if __name__ == "__main__":
    main()
