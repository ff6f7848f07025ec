"""Teacher sampler: Euler on the shifted grid, CFG combination (golden case A), sync-window rule."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from lipforcing_core.sampling.schedule import teacher_timesteps
from lipforcing_core.sampling.teacher import (
    SYNC_BAND,
    cfg_combine,
    cfg_scale_at,
    sample_teacher,
    teacher_passes,
)


class ConstantX0:
    """A stand-in teacher whose x0 prediction is fixed per text condition: flow = (x - x0) / t."""

    def __init__(self, x0_cond, x0_neg):
        self.x0_cond, self.x0_neg, self.calls = x0_cond, x0_neg, []

    def __call__(self, x, t, y, context, audio):
        self.calls.append((t, bool(context.abs().sum() > 0)))
        x0 = self.x0_cond if context.abs().sum() > 0 else self.x0_neg
        return (x - x0) / t


def test_cfg_scale_at_band_edges_and_tensors():
    assert cfg_scale_at(0.3, 4.5) == 4.5
    assert cfg_scale_at(0.556, 4.5, SYNC_BAND) == 4.5 and cfg_scale_at(0.882, 4.5, SYNC_BAND) == 4.5
    assert cfg_scale_at(0.5559, 4.5, SYNC_BAND) == 1.0 and cfg_scale_at(0.8821, 4.5, SYNC_BAND) == 1.0
    t = torch.tensor([0.2, 0.7, 0.95], dtype=torch.float64)
    assert cfg_scale_at(t, 4.5, SYNC_BAND).tolist() == [1.0, 4.5, 1.0]
    assert cfg_scale_at(t, 3.0).tolist() == [3.0, 3.0, 3.0]


def test_cfg_combine_matches_golden_case_a(golden_root):
    a = load_file(golden_root / "dit" / "cases_A_teacher.safetensors")
    torch.testing.assert_close(cfg_combine(a["x0.cond"], a["x0.neg"], 4.5), a["x0.cfg4.5"], atol=1e-6, rtol=0)
    per_sample = cfg_combine(a["x0.cond"], a["x0.neg"], torch.tensor([4.5], dtype=torch.float64))
    torch.testing.assert_close(per_sample, a["x0.cfg4.5"], atol=1e-6, rtol=0)


def test_euler_with_cfg_reaches_guided_x0_and_counts_passes():
    g = torch.Generator().manual_seed(0)
    x0c, x0n, noise = (torch.randn(1, 16, 3, 4, 4, generator=g) for _ in range(3))
    text = torch.ones(1, 2, 4096)
    model = ConstantX0(x0c, x0n)
    seen = []
    out = sample_teacher(model, noise, None, text, None, steps=10, cfg_scale=4.5,
                         callback=lambda i, t, x0: seen.append((i, t)))
    torch.testing.assert_close(out, x0c + 3.5 * (x0c - x0n), atol=1e-5, rtol=1e-5)
    assert [t for t, _ in model.calls[::2]] == teacher_timesteps(10, 5.0).tolist()[:-1]
    assert len(model.calls) == teacher_passes(10, 5.0, 4.5) == 20 and len(seen) == 10


def test_sync_window_runs_negative_pass_only_inside_band():
    g = torch.Generator().manual_seed(1)
    x0c, x0n, noise = (torch.randn(1, 16, 3, 4, 4, generator=g) for _ in range(3))
    model = ConstantX0(x0c, x0n)
    guided = []
    out = sample_teacher(model, noise, None, torch.ones(1, 2, 4096), None, steps=50, cfg_scale=4.5,
                         sync_band=SYNC_BAND, callback=lambda i, t, x0: guided.append(x0))
    ts = teacher_timesteps(50, 5.0).tolist()[:-1]
    negative_at = [t for t, cond in model.calls if not cond]
    assert negative_at == [t for t in ts if SYNC_BAND[0] <= t <= SYNC_BAND[1]] and len(negative_at) == 19
    assert len(model.calls) == teacher_passes(50, 5.0, 4.5, SYNC_BAND) == 69
    torch.testing.assert_close(guided[30], x0c + 3.5 * (x0c - x0n), atol=1e-5, rtol=1e-5)  # t = 0.769
    torch.testing.assert_close(out, x0c, atol=1e-5, rtol=1e-5)  # last step t = 0.093 is unguided


def test_steps_must_be_positive():
    with pytest.raises(ValueError, match="steps"):
        sample_teacher(ConstantX0(None, None), torch.zeros(1), None, torch.zeros(1, 1, 4096), None, steps=0)
