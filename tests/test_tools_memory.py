"""The benchmarks' memory probe: real numbers on Linux, graceful answers where /proc is missing."""

from __future__ import annotations

import builtins
import sys

import pytest

from lipforcing_core.tools import memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_linux_reports_resident_set_and_a_resettable_peak():
    ballast = bytearray(64 * 2**20)  # touched: 64 MiB resident
    ballast[::4096] = b"x" * len(ballast[::4096])
    assert memory.peak_rss_mb() >= memory.rss_mb() > 64
    del ballast
    assert memory.reset_peak_rss() and memory.peak_rss_mb() < memory.rss_mb() + 32


def test_without_proc_the_probe_degrades_instead_of_failing(monkeypatch):
    real_open = builtins.open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc/"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_proc)
    assert memory.rss_mb() is None and memory.reset_peak_rss() is False
    peak = memory.peak_rss_mb()  # from resource.getrusage where it exists (not on Windows)
    assert peak is None if memory.resource is None else peak > 0
    assert memory.rounded(None) is None and memory.rounded(1.26) == 1.3
