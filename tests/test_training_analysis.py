"""The teacher trajectory analysis command: per-step CFG vs no-CFG table and plot."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from lipforcing_core.cli import main
from lipforcing_core.config import get_preset
from lipforcing_core.models.dit import LipForcingDiT
from lipforcing_core.sampling.schedule import teacher_timesteps
from lipforcing_core.training.analysis import teacher_trajectory
from lipforcing_core.training.data import save_clip

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_clips import random_clip  # noqa: E402  (a helper module beside the tests)


@pytest.fixture(scope="module")
def teacher():
    return LipForcingDiT(get_preset("tiny")).init_weights(torch.Generator().manual_seed(0), affine_std=0.3).eval()


def test_analyze_command_writes_table_and_plot(teacher, tmp_path):
    ckpt, clip = tmp_path / "teacher.safetensors", tmp_path / "clip.safetensors"
    save_file(teacher.state_dict(), str(ckpt))
    save_clip(clip, random_clip(frames=3, hw=(4, 4)))
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["analyze", "--teacher", str(ckpt), "--clip", str(clip), "--out", str(tmp_path / "out"),
                     "--steps", "10"]) == 0
    finally:
        torch.set_num_threads(old)
    rows = json.loads((tmp_path / "out" / "trajectory.json").read_text())
    assert [r["step"] for r in rows] == list(range(10))
    torch.testing.assert_close(torch.tensor([r["t"] for r in rows], dtype=torch.float64), teacher_timesteps(10)[:-1])
    assert [r["in_sync_band"] for r in rows] == [float(0.556 <= r["t"] <= 0.882) for r in rows]
    assert sum(r["in_sync_band"] for r in rows) > 0
    assert all(r["mouth_cfg_shift"] > 0 and r["mse_in_cfg"] != r["mse_in_nocfg"] for r in rows)
    with (tmp_path / "out" / "trajectory.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 10 and float(table[3]["mse_out_cfg"]) == pytest.approx(rows[3]["mse_out_cfg"])
    assert Image.open(tmp_path / "out" / "trajectory.png").size == (900, 620)


def test_without_guidance_cfg_and_nocfg_coincide_and_scorer_is_used(teacher):
    clip = random_clip(frames=3, hw=(4, 4))
    scored = []

    def scorer(x0, batch):
        scored.append(x0.shape)
        return x0.mean((1, 2, 3, 4))

    with torch.no_grad():
        rows = teacher_trajectory(teacher, clip, steps=4, guidance=1.0, scorer=scorer)
    assert len(scored) == 8 and scored[0] == (1, 16, 3, 4, 4)
    for r in rows:
        assert r["mouth_cfg_shift"] == 0 and r["mse_in_cfg"] == r["mse_in_nocfg"]
        assert r["sync_cfg"] == r["sync_nocfg"] and r["mse_out_cfg"] == r["mse_out_nocfg"]
