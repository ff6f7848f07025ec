"""The demo DiT recipe in miniature: dubbing clips from a tiny random VAE, a few steps of teacher, stage 1
and stage 2 (with the SyncNet reward on VAE-decoded frames), float16 export, reload and one streaming pass."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from lipforcing_core.checkpoints import load_dit
from lipforcing_core.config import STREAM_WINDOW, get_preset
from lipforcing_core.demo.audio_features import LogMelFeatures
from lipforcing_core.demo.dit_recipe import (
    PrepareConfig,
    VAEFrames,
    build_trainer,
    dubbing_seeds,
    latent_keep_mask,
    pixel_keep_mask,
    prepare,
    prepare_clip,
    ship,
    stage_configs,
    to_video,
)
from lipforcing_core.demo.sync_model import SmallSyncNet, SmallSyncNetConfig
from lipforcing_core.demo.synthetic import make_clip
from lipforcing_core.training.data import ClipFolder, InMemoryClips, conditioning
from lipforcing_core.training.rollout import self_rollout
from lipforcing_core.vae import WanVAE
from lipforcing_core.vae.wan_vae import PRESETS as VAE_PRESETS

pytestmark = pytest.mark.usefixtures("single_thread")

# 21 frames: the shortest clip the sync-C reward takes
SMALL = PrepareConfig(clips=3, latent_frames=6, size=32, render_s=1.2)


@pytest.fixture(scope="module")
def vae() -> WanVAE:
    torch.manual_seed(0)
    return WanVAE(VAE_PRESETS["tiny"]).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def data(vae, tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo_clips")
    prepare(vae, folder, SMALL, log=lambda s: None)
    return folder


def test_demo_preset_size():
    cfg = get_preset("demo")
    from lipforcing_core.models.dit import LipForcingDiT

    with torch.device("meta"):
        params = sum(p.numel() for p in LipForcingDiT(cfg).parameters())
    assert cfg.audio_dim == LogMelFeatures().config.dim and cfg.head_dim == 32
    assert 2 * 2 * params < 30 * 2**20  # teacher + student in float16


def test_prepared_clips_are_reproducible_dubbing_pairs(vae, data):
    files = ClipFolder(data)
    assert len(files) == 3
    clip = files[0]
    assert clip["latents"].shape == (16, 6, 4, 4) and clip["masked_video"].shape == (16, 6, 4, 4)
    assert clip["audio"].shape == (21, 160) and clip["waveform"].shape == (21 * 640,)
    assert clip["text"].shape == (1, 4096) and not clip["text"].any()
    mask = clip["mask"]
    assert set(mask.unique().tolist()) == {0.0, 1.0} and mask[0].all() and not mask[-1].all()
    # the source says another utterance: its latents differ from the target's (somewhere in the mouth)
    assert any(not torch.equal(c["ref_sequence"], c["latents"]) for c in files)
    again = prepare_clip(vae, LogMelFeatures(), dubbing_seeds(SMALL)[0], SMALL)
    for key, value in again.items():
        assert torch.equal(value, clip[key]), key
    manifest = json.loads((data / "prepare.json").read_text())
    assert [tuple(s) for s in manifest["seeds"]] == dubbing_seeds(SMALL)


def test_source_and_target_differ_only_in_the_mouth_region():
    ident, src, tgt, _ = dubbing_seeds(SMALL)[1]
    keep = pixel_keep_mask(SMALL.size)
    a = to_video(make_clip(ident, src, SMALL.render_s, SMALL.size).frames)
    b = to_video(make_clip(ident, tgt, SMALL.render_s, SMALL.size).frames)
    assert (a - b).abs().amax() > 0.1
    assert torch.equal(a * keep, b * keep)


def test_latent_keep_mask_is_bilinear_then_threshold():
    mask = torch.ones(8, 8)
    mask[4:, 2:6] = 0
    grid = latent_keep_mask(mask, (4, 4))
    assert torch.equal(grid, torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, 1], [1, 0, 0, 1], [1, 0, 0, 1]]))


def _loss_at_step0(trainer) -> float:
    saved, trainer.step = trainer.step, 0
    with torch.no_grad():
        loss = float(trainer.loss(trainer.batch()))
    trainer.step = saved
    return loss


def test_recipe_stages_in_miniature(vae, data, tmp_path):
    dataset = InMemoryClips(list(ClipFolder(data)))
    configs = stage_configs(str(data), tmp_path)
    fast = {"batch_size": 2, "save_every": 10**6, "ema_decay": 0.0}
    for stage, steps in (("teacher", 6), ("df", 12)):  # stage 1 starts from the teacher export
        cfg = dataclasses.replace(configs[stage], steps=steps, lr=1e-3, **fast)
        trainer = build_trainer(stage, cfg, dataset)
        before = _loss_at_step0(trainer)
        history = trainer.fit(log=None)
        assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
        assert _loss_at_step0(trainer) < 0.9 * before, stage
        trainer.export(tmp_path / f"{stage}.safetensors", "teacher" if stage == "teacher" else "student")

    syncnet = SmallSyncNet(SmallSyncNetConfig(lip_size=32, lip_channels=(4, 4, 4, 4), audio_channels=(4, 4, 4, 4),
                                              hidden=16, embed_dim=8)).eval()
    cfg = dataclasses.replace(configs["dmd"], steps=2, student_update_every=1, **fast)
    dmd = build_trainer("dmd", cfg, dataset, vae=vae, syncnet=syncnet)
    student = dmd.nets["student"]
    assert torch.equal(student.blocks[0].ffn[0].weight, load_dit(tmp_path / "df.safetensors").blocks[0].ffn[0].weight)
    start = {k: v.clone() for k, v in student.state_dict().items()}
    history = dmd.fit(log=None)
    for logs in history:
        assert {"critic_loss", "student_loss", "vsd_loss", "sync_c"} <= set(logs)
        assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    assert any(not torch.equal(start[k], v) for k, v in student.state_dict().items())

    exported = dmd.export(tmp_path / "dmd.safetensors", "student")
    shipped = ship(exported, tmp_path / "weights" / "demo_student.safetensors", train={"steps": 2})
    loaded = load_dit(shipped, preset="demo", dtype=torch.float32)
    assert next(iter(load_dit(shipped).parameters())).dtype == torch.float16
    batch = dmd.batch()
    y = conditioning(batch)
    noise = torch.randn(2, *batch["latents"].shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = self_rollout(loaded, noise, y, batch["text"], batch["audio"], t_list=(0.999, 0.769, 0.0),
                           exit_step=1, spec=STREAM_WINDOW)
        ref = self_rollout(student.eval(), noise, y, batch["text"], batch["audio"], t_list=(0.999, 0.769, 0.0),
                           exit_step=1, spec=STREAM_WINDOW)
    assert out.shape == batch["latents"].shape and torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, rtol=0, atol=0.05)


def test_vae_frames_decodes_like_taehv_interface(vae):
    latents = torch.randn(1, 16, 2, 4, 4)
    frames = VAEFrames(vae).decode_video(latents.transpose(1, 2))
    assert frames.shape == (1, 5, 3, 32, 32) and 0 <= frames.min() and frames.max() <= 1
    torch.testing.assert_close(frames, vae.decode(latents).transpose(1, 2).add(1).div(2))
