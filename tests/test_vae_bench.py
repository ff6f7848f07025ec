"""Streaming-decode benchmark: memory must not grow with clip length (sizes kept tiny; no timing asserts)."""

from __future__ import annotations

import pytest
import torch

from lipforcing_core.tools.vae_bench import LiveTensorPeak, bench_stream_decode


def test_tracker_sees_live_tensors_and_ignores_inputs():
    base = torch.zeros(1000)
    with LiveTensorPeak(exclude=[base]) as tracker:
        kept = [base[:10] + 1 for _ in range(4)]  # 4 x 40 bytes alive together
        del kept
        _ = base.view(10, 100)
    assert tracker.peak_bytes == 4 * 40


@pytest.mark.parametrize("kind", ["wan", "taehv"])
def test_stream_decode_memory_does_not_grow(kind):
    report = bench_stream_decode(kind, latent_frames=(3, 9), latent_hw=(2, 2))
    assert [r["frames"] for r in report["runs"]] == [9, 33]
    assert all(r["fps"] > 0 and r["peak_tensor_bytes"] > 0 for r in report["runs"])
    assert report["memory_ratio"] <= 1.1


def test_tracker_would_catch_a_growing_stream():
    with LiveTensorPeak() as short:
        frames = [torch.ones(256) for _ in range(3)]
    with LiveTensorPeak() as long:
        frames = [torch.ones(256) for _ in range(9)]
    del frames
    assert long.peak_bytes / short.peak_bytes == 3
