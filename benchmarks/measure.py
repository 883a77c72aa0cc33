"""What one timed run costs: wall time, this process's CPU, the server's CPU, everyone else's.

Client CPU is ``resource.getrusage(RUSAGE_SELF)`` user + system: it covers every thread of
the process (tokio workers of obstore, executor threads, the event loop), which is why it is
the main metric. The server's CPU comes from its process (psutil); "other" is the machine's
busy time minus both, as a noise indicator (percent of one core). Peak RSS is reset and read
through ``/proc/self/clear_refs`` and ``VmHWM`` (Linux), so it covers only the timed run.
"""

from __future__ import annotations

import gc
import resource
import time
from types import TracebackType
from typing import Any

__all__ = ["Meter", "current_rss", "peak_rss", "reset_peak_rss"]


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _busy_total() -> float | None:
    try:
        import psutil
    except ImportError:
        return None
    times = psutil.cpu_times()
    busy: float = times.user + times.nice + times.system
    busy += getattr(times, "irq", 0.0) + getattr(times, "softirq", 0.0)
    return busy


class Meter:
    """``with Meter(server_pid) as m: ...`` then read ``m.wall_s``, ``m.cpu_s`` and the rest."""

    def __init__(self, server_pid: int | None = None) -> None:
        self._server: Any = None
        if server_pid is not None:
            try:
                import psutil

                self._server = psutil.Process(server_pid)
            except Exception:  # no psutil, or the server is gone: no server column
                self._server = None
        self.wall_s = 0.0
        self.cpu_s = 0.0
        self.server_cpu_s: float | None = None
        self.other_cpu_pct: float | None = None

    def _server_cpu(self) -> float | None:
        if self._server is None:
            return None
        try:
            times = self._server.cpu_times()
        except Exception:
            return None
        return float(times.user + times.system)

    def __enter__(self) -> Meter:
        gc.collect()
        self._server0 = self._server_cpu()
        self._busy0 = _busy_total()
        self._cpu0 = _cpu_self()
        self._wall0 = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.wall_s = time.perf_counter() - self._wall0
        self.cpu_s = _cpu_self() - self._cpu0
        busy1 = _busy_total()
        server1 = self._server_cpu()
        if server1 is not None and self._server0 is not None:
            self.server_cpu_s = server1 - self._server0
        if busy1 is not None and self._busy0 is not None and self.wall_s > 0:
            other = busy1 - self._busy0 - self.cpu_s - (self.server_cpu_s or 0.0)
            self.other_cpu_pct = max(other, 0.0) / self.wall_s * 100


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def current_rss() -> int:
    """Resident set size now, in bytes (0 where /proc is missing)."""
    return (_status_kib("VmRSS") or 0) * 1024


def reset_peak_rss() -> bool:
    """Reset the peak-RSS mark (Linux >= 4.0); False where that is impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        return False
    return True


def peak_rss() -> int:
    """Peak RSS since the last reset (VmHWM), else since start (ru_maxrss), in bytes."""
    peak = _status_kib("VmHWM")
    if peak is not None:
        return peak * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
