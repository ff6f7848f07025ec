"""Prepared-clip datasets, deterministic batching, configs and activation checkpointing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from lipforcing_core.training.config import DF_WINDOWS, DFConfig, DMDConfig, TeacherConfig
from lipforcing_core.training.data import (ClipFolder, InMemoryClips, batch_indices, check_clip, conditioning,
                                           load_batch, rank_slice, save_clip)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_clips import random_clip  # noqa: E402  (a helper module beside the tests)


def test_clip_folder_round_trip_and_conditioning(tmp_path):
    for s in range(3):
        save_clip(tmp_path / f"c{s}.safetensors", random_clip(frames=6, hw=(4, 4), seed=s))
    ds = ClipFolder(tmp_path)
    assert len(ds) == 3
    clip = ds[1]
    torch.testing.assert_close(clip["latents"], random_clip(frames=6, hw=(4, 4), seed=1)["latents"])
    assert torch.equal(clip["neg_text"], torch.zeros_like(clip["text"]))
    batch = load_batch(ds, step=0, global_batch=2, seed=0)
    batch["ref_sequence"] = batch["ref_sequence"] + 1  # a dubbing pair: the source differs from the target
    y = conditioning(batch)
    assert y.shape == (2, 49, 6, 4, 4)
    torch.testing.assert_close(y[:, :16], batch["ref_sequence"][:, :, :1].expand(-1, -1, 6, -1, -1))
    torch.testing.assert_close(y[:, 16], (1 - batch["mask"])[:, None].expand(-1, 6, -1, -1))
    torch.testing.assert_close(y[:, 17:33], batch["masked_video"])
    torch.testing.assert_close(y[:, 33:], batch["ref_sequence"])


def test_bad_clips_are_named(tmp_path):
    clip = random_clip(frames=6, hw=(4, 4))
    with pytest.raises(ValueError, match="lacks \\['audio'\\]"):
        check_clip({k: v for k, v in clip.items() if k != "audio"})
    with pytest.raises(ValueError, match="mask must be the latent grid"):
        check_clip({**clip, "mask": torch.ones(8, 8)})
    with pytest.raises(ValueError, match="audio must be"):
        check_clip({**clip, "audio": clip["audio"][:5]})
    with pytest.raises(FileNotFoundError, match="no prepared clips"):
        ClipFolder(tmp_path)


def test_batches_are_deterministic_epochs_and_rank_slices_cover_the_global_batch():
    first = [batch_indices(s, 4, 10, seed=3) for s in range(5)]
    assert first == [batch_indices(s, 4, 10, seed=3) for s in range(5)]
    flat = sum(first, [])
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    ds = InMemoryClips([random_clip(frames=3, hw=(2, 2), seed=s) for s in range(4)])
    whole = load_batch(ds, 1, 4, 0)
    parts = [load_batch(ds, 1, 4, 0, rank=r, world=2) for r in range(2)]
    torch.testing.assert_close(torch.cat([p["latents"] for p in parts]), whole["latents"])
    with pytest.raises(ValueError, match="divisible"):
        rank_slice(3, 0, 2)


def test_configs_have_paper_defaults_and_load_with_overrides(tmp_path):
    dmd, df = DMDConfig(), DFConfig()
    assert (dmd.guidance_scale, dmd.sync_band, dmd.reward_beta) == (4.5, (0.556, 0.882), 2.0)
    assert (dmd.student_update_every, dmd.batch_size, dmd.steps, dmd.t_range) == (5, 16, 600, (0.001, 0.999))
    assert (dmd.betas, dmd.lr, dmd.critic_lr, dmd.grad_clip, dmd.ema_decay) == ((0.0, 0.999), 2e-6, 2e-6, 10.0, 0.9999)
    assert (df.lr, df.steps, df.batch_size, df.windows, df.t_list) == (1e-5, 5000, 16, DF_WINDOWS, (0.999, 0.769, 0.0))
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"steps": 7, "betas": [0.5, 0.9]}))
    cfg = TeacherConfig.load(path, ["lr=0.01", "data=/x/y"])
    assert (cfg.steps, cfg.betas, cfg.lr, cfg.data) == (7, (0.5, 0.9), 0.01, "/x/y")
    assert DFConfig.load(None, ["windows=[[7, 1], [9, 3]]"]).windows == ((7, 1), (9, 3))
    yaml_path = tmp_path / "cfg.yaml"
    yaml_path.write_text("steps: 9\nwindows:\n  - [7, 1]\n")
    pytest.importorskip("yaml")
    assert (DFConfig.load(yaml_path).steps, DFConfig.load(yaml_path).windows) == (9, ((7, 1),))
    with pytest.raises(ValueError, match="unknown TeacherConfig keys \\['stepz'\\]"):
        TeacherConfig.load(None, ["stepz=3"])
    with pytest.raises(ValueError, match="taehv"):
        DMDConfig(syncnet="s.pth")


def test_activation_checkpointing_gives_the_same_gradients(monkeypatch):
    from lipforcing_core.training import distributed
    from lipforcing_core.training.diffusion_forcing import DiffusionForcingTrainer

    used = []
    real = distributed.checkpoint
    monkeypatch.setattr(distributed, "checkpoint", lambda *a, **k: used.append(1) or real(*a, **k))

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ds = InMemoryClips([random_clip(frames=6, hw=(2, 2), seed=0)])
        grads = []
        for ac in (False, True):
            trainer = DiffusionForcingTrainer(DFConfig(batch_size=1, activation_checkpointing=ac), ds)
            trainer.loss(trainer.batch()).backward()
            grads.append({n: p.grad.clone() for n, p in trainer.nets["student"].named_parameters()})
    finally:
        torch.set_num_threads(old)
    assert len(used) == 6  # every block of the tiny preset, in the checkpointed run only
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-7, msg=name)
