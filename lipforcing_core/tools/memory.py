"""Process memory for the benchmarks: the resident set and its peak.

Linux reports both in ``/proc/self/status`` (``VmRSS``, ``VmHWM``) and lets a process reset its peak
(``/proc/self/clear_refs``). Elsewhere the peak comes from ``resource.getrusage`` (kilobytes on
Linux, bytes on macOS) and cannot be reset, and the current resident set is unknown: those calls
return None / False instead of failing, and a benchmark records what it could measure.
"""

from __future__ import annotations

import sys

try:
    import resource
except ImportError:  # Windows
    resource = None


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_mb() -> float | None:
    """Resident set size of this process in MiB (None where the platform does not say)."""
    return _status_mb("VmRSS")


def peak_rss_mb() -> float | None:
    """Peak resident set of this process in MiB, since start or the last :func:`reset_peak_rss`."""
    peak = _status_mb("VmHWM")
    if peak is None and resource is not None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)
    return peak


def reset_peak_rss() -> bool:
    """Set the peak to the current resident set (Linux); False where the peak cannot be reset."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def rounded(mb: float | None) -> float | None:
    return None if mb is None else round(mb, 1)
