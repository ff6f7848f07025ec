"""The demo recipe in miniature: a few training steps of the VAE and the SyncNet on tiny batches,
saved and reloaded through the shipped-weight loaders, plus the per-model latent normalisation."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lipforcing_core.cli import build_parser
from lipforcing_core.demo.dataset import HELDOUT_BASE, ClipBank, clip_seeds
from lipforcing_core.face.mask import load_mouth_mask
from lipforcing_core.demo.recipe import (
    DEMO_VAE,
    add_metadata,
    load_demo_syncnet,
    load_demo_vae,
    read_metadata,
    save_weights,
)
from lipforcing_core.demo.sync_model import SmallSyncNet, SmallSyncNetConfig
from lipforcing_core.demo.syncnet_train import (
    SyncTrainConfig,
    _window_batch,
    clip_mfcc,
    shift_audio,
    train_syncnet,
    vae_view,
)
from lipforcing_core.demo.vae_train import VAETrainConfig, latent_statistics, train_vae
from lipforcing_core.syncnet import evaluate_sync
from lipforcing_core.vae import WanVAE, WanVAEConfig

pytestmark = pytest.mark.usefixtures("single_thread")


def test_seed_splits_are_disjoint():
    train, held = clip_seeds(50, "train"), clip_seeds(50, "heldout")
    assert all(i < HELDOUT_BASE and u < HELDOUT_BASE for i, u in train)
    assert all(i >= HELDOUT_BASE and u >= HELDOUT_BASE for i, u in held)
    assert len(set(train)) == 50
    with pytest.raises(ValueError, match="split"):
        clip_seeds(1, "test")


def test_bank_windows_layout():
    bank = ClipBank.render(2, duration_s=0.4, size=16)
    assert bank.frames.shape == (2, 10, 16, 16, 3) and bank.frames.dtype == torch.uint8
    win = bank.windows(3, 5, torch.Generator().manual_seed(0))
    assert win.shape == (3, 3, 5, 16, 16) and -1 <= win.min() and win.max() <= 1
    assert torch.equal(bank.video(0)[:, 0], bank.frames[0, 0].float().div(127.5).sub(1).permute(2, 0, 1))


def test_vae_recipe_trains_saves_and_reloads(tmp_path):
    bank = ClipBank.render(1, duration_s=0.24, size=16)
    arch = dataclasses.replace(DEMO_VAE, dim=4)
    cfg = VAETrainConfig(steps=8, batch=1, crop=16, size=16, lr=3e-3, log_every=100)
    model, losses = train_vae(arch, cfg, log=lambda s: None, bank=bank)
    assert len(losses) == 8 and sum(losses[-2:]) < sum(losses[:2])

    mean, std = latent_statistics(model, bank)
    assert len(mean) == len(std) == 16 and all(s > 0 for s in std)
    model.config = dataclasses.replace(model.config, latent_mean=mean, latent_std=std)
    path = tmp_path / "vae.safetensors"
    save_weights(model, path, metrics={"psnr_face_db": 1.0})
    loaded = load_demo_vae(path)
    assert loaded.config == model.config and read_metadata(path)["metrics"] == {"psnr_face_db": 1.0}
    video = bank.video(0)[None, :, :5]
    latent = loaded.encode(video)
    assert torch.equal(latent, model.encode(video))
    raw = loaded.encode(video, normalize=False)
    expect = (raw - torch.tensor(mean).view(1, -1, 1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1, 1)
    assert torch.allclose(latent, expect, atol=1e-5)
    assert torch.allclose(loaded.decode(latent, clamp=False), model.decode(latent, clamp=False))


def test_default_latent_stats_are_the_official_constants():
    vae = WanVAE(WanVAEConfig(dim=4, num_res_blocks=1)).eval()
    video = torch.rand(1, 3, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        from lipforcing_core.vae import normalize_latent
        assert torch.equal(vae.encode(video), normalize_latent(vae.encode(video, normalize=False)))


def test_syncnet_recipe_trains_saves_reloads_and_scores(tmp_path):
    bank = ClipBank.render(4, duration_s=1.0, size=32, seed=1)
    arch = SmallSyncNetConfig(lip_size=32, lip_channels=(8, 8, 8, 8), audio_channels=(8, 8, 8, 8), hidden=32,
                              embed_dim=16)
    cfg = SyncTrainConfig(steps=15, batch=4, window_frames=12, lr=3e-3, log_every=100)
    model, losses = train_syncnet(arch, cfg, log=lambda s: None, bank=bank)
    assert len(losses) == 15 and sum(losses[-3:]) < sum(losses[:3])

    path = tmp_path / "sync.safetensors"
    save_weights(model, path)
    loaded = load_demo_syncnet(path)
    assert isinstance(loaded, SmallSyncNet) and loaded.config == arch
    i = int(bank.audio.abs().amax(1).argmax())  # a clip that is not all silence
    result = evaluate_sync(loaded, bank.frames[i], bank.audio[i], vshift=5)
    assert torch.allclose(result.dists, evaluate_sync(model, bank.frames[i], bank.audio[i], vshift=5).dists)
    assert len(result.dists) == 11 and 0 <= result.lse_d <= 2 and -5 <= result.offset <= 5


def test_vae_view_is_the_full_clip_reconstruction():
    bank = ClipBank.render(3, duration_s=0.5, size=32, seed=1)  # 12 frames -> the first 9 are encodable
    vae = WanVAE(WanVAEConfig(dim=4, num_res_blocks=1)).eval()
    view = vae_view(vae, bank, batch=2)
    assert view.frames.shape == (3, 9, 32, 32, 3) and view.frames.dtype == torch.uint8
    with torch.no_grad():
        expect = vae.decode(vae.encode(bank.video(2)[None, :, :9]))[0].movedim(0, -1).add(1).mul(127.5)
    assert (view.frames[2].float() - expect).abs().max() <= 0.5 + 1e-4
    assert torch.equal(view.audio, bank.audio)


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_syncnet_batches_draw_clips_from_the_vae_view_with_its_probability(p):
    bank = ClipBank.render(2, duration_s=0.5, size=32, seed=1)
    views = [torch.zeros(2, 9, 32, 32, 3, dtype=torch.uint8), torch.full((2, 9, 32, 32, 3), 255, dtype=torch.uint8)]
    cfg = SyncTrainConfig(batch=400, window_frames=8, vae_view=p)
    frames, mf = _window_batch(views, clip_mfcc(bank), cfg, torch.Generator().manual_seed(0))
    assert frames.shape == (400, 8, 3, 32, 32) and mf.shape == (400, 13, 32)
    per_clip = frames.flatten(1).mean(1)
    assert set(per_clip.unique().tolist()) <= {0.0, 1.0}  # whole windows come from one view
    assert abs(per_clip.mean().item() - p) < 0.08


def test_shift_audio_moves_content_by_whole_frames():
    audio = torch.arange(3200, dtype=torch.float32)
    assert torch.equal(shift_audio(audio, 2)[:1920], audio[1280:])
    assert torch.equal(shift_audio(audio, -1)[640:], audio[:-640])
    assert torch.equal(shift_audio(audio, 0), audio)


def test_loaders_reject_foreign_files(tmp_path):
    from lipforcing_core.checkpoints import CheckpointError

    path = tmp_path / "x.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="config"):
        load_demo_vae(path)


def test_cli_has_train_demo():
    args = build_parser().parse_args(["train-demo", "--only", "vae", "--only", "eval", "--quick"])
    assert args.command == "train-demo" and args.only == ["vae", "eval"] and args.quick
    with pytest.raises(SystemExit):  # the trainers' command does not take the demo's flags
        build_parser().parse_args(["train", "df", "--quick"])


@pytest.fixture(scope="module")
def heldout_clip() -> ClipBank:
    bank = ClipBank.render(3, "heldout", duration_s=2.0, size=64, seed=7)
    i = int(bank.audio.abs().amax(1).argmax())
    return ClipBank(bank.frames[i:i + 1], bank.audio[i:i + 1], bank.seeds[i:i + 1])


def test_shipped_weights_fit_the_budget_and_carry_metrics():
    from lipforcing_core.demo.constants import STUDENT_FILE, SYNCNET_FILE, TEACHER_FILE, VAE_FILE

    files = (VAE_FILE, SYNCNET_FILE, TEACHER_FILE, STUDENT_FILE)
    assert sum(f.stat().st_size for f in files) <= 50 * 2**20  # the budget for all of them
    for f in (TEACHER_FILE, STUDENT_FILE):
        assert {"psnr_lips_db", "checks", "speed"} <= read_metadata(f)["metrics"].keys()
    assert {"psnr_face_db", "psnr_mouth_db", "steps"} <= read_metadata(VAE_FILE)["metrics"].keys()
    assert {"offset_within_1", "shift_within_1", "lse_c"} <= read_metadata(SYNCNET_FILE)["metrics"].keys()


def test_shipped_vae_reconstructs_a_heldout_clip(heldout_clip):
    from lipforcing_core.demo.constants import VAE_FILE
    from lipforcing_core.demo.vae_train import evaluate_vae

    vae = load_demo_vae()
    assert vae.config.z_dim == 16 and vae.config.latent_std != WanVAEConfig().latent_std
    video = heldout_clip.video(0)[None, :, :49]
    latent = vae.encode(video)
    assert latent.shape == (1, 16, 13, 8, 8)
    assert abs(float(latent.mean())) < 0.5 and 0.5 < float(latent.std()) < 2  # its own normalisation
    recorded = read_metadata(VAE_FILE)["metrics"]["psnr_face_db"]  # measured on 12+ held-out clips
    assert evaluate_vae(vae, heldout_clip)["psnr_face_db"] > recorded - 3


def test_shipped_syncnet_finds_the_offset_of_a_heldout_clip(heldout_clip):
    from lipforcing_core.demo.syncnet_train import shift_audio

    net = load_demo_syncnet()
    frames, audio = heldout_clip.frames[0], heldout_clip.audio[0]
    assert abs(evaluate_sync(net, frames, audio).offset) <= 1
    assert abs(evaluate_sync(net, frames, shift_audio(audio, 4)).offset - 4) <= 1


def test_mouth_weight_reweighs_the_reconstruction_loss():
    from lipforcing_core.demo.vae_train import loss_weight, vae_loss

    weight = loss_weight(64, 10.0)
    mouth = torch.from_numpy(load_mouth_mask(size=64) < 0.5)
    assert set(weight[mouth].unique().tolist()) == {10.0} and set(weight[~mouth].unique().tolist()) == {1.0}
    vae = WanVAE(dataclasses.replace(DEMO_VAE, dim=4)).eval()
    video = torch.rand(1, 3, 5, 64, 64) * 2 - 1
    torch.manual_seed(0)
    plain, _ = vae_loss(vae, video, 0.0)
    torch.manual_seed(0)
    uniform, _ = vae_loss(vae, video, 0.0, torch.ones(64, 64) * 3)  # any constant weight is the plain loss
    torch.manual_seed(0)
    weighted, recon = vae_loss(vae, video, 0.0, weight)
    assert torch.allclose(plain, uniform)
    err = (recon - video).abs() + (recon - video).square()
    expect = (err * weight / weight.mean()).mean()
    assert torch.allclose(weighted, expect) and not torch.allclose(weighted, plain)


def test_motion_map_marks_the_pixels_that_change_within_a_window():
    from lipforcing_core.demo.vae_train import motion_map

    video = torch.zeros(2, 3, 5, 8, 8)
    video[0, 1, 3, 2, 5] = 0.5  # one pixel of clip 0 changes in one channel and one frame
    video[1, :, :, 4, 4] = 0.7  # clip 1: a pixel that is bright but static
    moving = motion_map(video)
    assert moving.shape == (2, 1, 1, 8, 8)
    assert moving[0, 0, 0, 2, 5] == 1 and moving.sum() == 1


def test_add_metadata_adds_entries_and_keeps_the_rest_byte_for_byte(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.arange(3.0)}, str(path), metadata={"preset": '"demo"', "format": "pt"})
    add_metadata(path, metrics={"gain": 1.5})
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"preset": '"demo"', "format": "pt", "metrics": '{"gain": 1.5}'}
        assert torch.equal(f.get_tensor("w"), torch.arange(3.0))
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary file left
