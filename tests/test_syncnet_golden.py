"""SyncNet v2 network, syncnet_python evaluation and the Lip Forcing reward against golden/syncnet."""

import json

import pytest
import torch
from safetensors.torch import load_file

from lipforcing_core.audio.mfcc import mfcc
from lipforcing_core.syncnet import evaluate_sync, load_syncnet, mean_distances, sync_c_reward
from lipforcing_core.syncnet.metrics import audio_embeddings, lip_embeddings

ATOL = 1e-3  # golden/syncnet README §5: embeddings, distances, LSE-D, LSE-C


def expand(lowres: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The README's x4 pixel replication of the stored 56x56 images."""
    return lowres.repeat_interleave(4, h).repeat_interleave(4, w)


@pytest.fixture(scope="module")
def gdir(golden_root):
    return golden_root / "syncnet"


@pytest.fixture(scope="module")
def model(gdir):
    return load_syncnet(gdir / "syncnet_v2_random.safetensors")


@pytest.fixture(scope="module")
def clip(gdir):
    """(golden tensors, meta, RGB uint8 frames [40, 224, 224, 3], int16 audio [25600])."""
    g = load_file(gdir / "eval.safetensors")
    meta = json.loads((gdir / "eval_meta.json").read_text())
    frames_rgb = expand(g["clip_frames_lowres_bgr"], 1, 2).flip(-1)
    return g, meta, frames_rgb, g["clip_audio_int16"]


def case_inputs(clip, case):
    g, meta, frames, audio = clip
    c = meta["cases"][case]
    return frames[: c["frames"]], audio[: c["audio_samples"]], c


def test_embeddings(model, gdir):
    g = load_file(gdir / "embeddings.safetensors")
    lips = expand(g["lip_windows_lowres"].float(), 3, 4)
    with torch.no_grad():
        torch.testing.assert_close(model.netcnnlip(lips).flatten(1), g["lip_cnn"], rtol=0, atol=ATOL)
        torch.testing.assert_close(model.forward_lip(lips), g["lip_emb"], rtol=0, atol=ATOL)
        torch.testing.assert_close(model.netcnnaud(g["mfcc_windows"]).flatten(1), g["aud_cnn"], rtol=0, atol=ATOL)
        torch.testing.assert_close(model.forward_aud(g["mfcc_windows"]), g["aud_emb"], rtol=0, atol=ATOL)
        # Whole-clip lip pass == per-window pass: windows 0 and 1 concatenated hold 6 windows.
        joined = torch.cat([lips[0], lips[1]], dim=1)[None]
        per_clip = model.forward_lip_clip(joined)[0]
    torch.testing.assert_close(per_clip[[0, 5]], g["lip_emb"][:2], rtol=0, atol=ATOL)


@pytest.fixture(scope="module")
def evaluated(model, clip):
    """evaluate_sync on each case from int16 audio and uint8 frames, computed once."""
    return {case: evaluate_sync(model, *case_inputs(clip, case)[:2]) for case in ("A", "B")}


@pytest.mark.parametrize("case", ["A", "B"])
def test_syncnet_python_procedure(clip, evaluated, case):
    g, _, _, _ = clip
    _, audio, c = case_inputs(clip, case)
    ref = c["syncnet_python"]
    result = evaluated[case]
    assert result.offset == ref["offset"]
    assert len(result.frame_conf) == ref["N"]
    assert result.lse_d == pytest.approx(ref["min_dist"], abs=ATOL)
    assert result.lse_c == pytest.approx(ref["confidence"], abs=ATOL)
    torch.testing.assert_close(result.dists, g[f"case{case}_syncnet_mean_dists"], rtol=0, atol=ATOL)
    torch.testing.assert_close(result.frame_conf, g[f"case{case}_syncnet_fconfm"], rtol=0, atol=ATOL)
    torch.testing.assert_close(mfcc(audio).float(), g[f"case{case}_syncnet_mfcc"], rtol=0, atol=1e-4)


def test_comfyui_inputs(model, clip, evaluated):
    """The same clip as a ComfyUI IMAGE batch (float 0..1, channels-last) and a float waveform."""
    frames, audio, _ = case_inputs(clip, "A")
    comfy = evaluate_sync(model, frames.float() / 255, audio.float() / 32768)
    assert comfy.offset == evaluated["A"].offset
    assert comfy.lse_d == pytest.approx(evaluated["A"].lse_d, abs=ATOL)
    assert comfy.lse_c == pytest.approx(evaluated["A"].lse_c, abs=ATOL)


def test_lipforcing_intermediates(model, clip):
    g, _, _, _ = clip
    frames, audio, c = case_inputs(clip, "A")
    coeffs = mfcc(audio.float() / 32768).float()
    torch.testing.assert_close(coeffs, g["caseA_lipforcing_mfcc"], rtol=0, atol=1e-4)
    with torch.no_grad():
        lip = lip_embeddings(model, frames[None].permute(0, 1, 4, 2, 3), chunk=16)[0]
        aud = audio_embeddings(model, coeffs[None], chunk=8)[0]
    assert (len(lip), len(aud)) == (c["lipforcing"]["lip_windows"], c["lipforcing"]["audio_windows"])
    torch.testing.assert_close(lip, g["caseA_lipforcing_lip_emb"], rtol=0, atol=ATOL)
    torch.testing.assert_close(aud, g["caseA_lipforcing_aud_emb"], rtol=0, atol=ATOL)
    n = c["lipforcing"]["N"]
    dists = mean_distances(lip[:n], aud[:n], zero_pad=False)
    torch.testing.assert_close(dists, g["caseA_lipforcing_mean_dists"], rtol=0, atol=ATOL)
    assert 15 + c["lipforcing"]["argmin_shift"] == int(dists.argmin())


def test_reward_batched(model, clip):
    """Case B beside a time-reversed copy: entry 0 is still the golden sync-C (no mixing across the batch)."""
    frames, audio, c = case_inputs(clip, "B")
    wav = audio.float() / 32768
    batch = torch.stack([frames, frames.flip(0)])
    rewards = sync_c_reward(model, batch, torch.stack([wav, wav]))
    assert rewards.shape == (2,) and not rewards.requires_grad
    assert rewards[0].item() == pytest.approx(c["lipforcing"]["sync_c"], abs=ATOL)
    assert rewards[1] < rewards[0] - 1  # reversed lips no longer match the audio


def test_resize_to_224(model, clip):
    """Aligned 512 crops are resized bilinearly (align_corners=False, no antialias) to 224."""
    frames, _, _ = case_inputs(clip, "B")
    crops = expand(frames[:6], 1, 2).repeat_interleave(2, 1)[:, :512, :512]  # [6, 512, 512, 3] uint8
    expected = torch.nn.functional.interpolate(
        crops.permute(0, 3, 1, 2).float(), size=(224, 224), mode="bilinear", align_corners=False
    )
    with torch.no_grad():
        got = lip_embeddings(model, crops[None].permute(0, 1, 4, 2, 3))
        ref = lip_embeddings(model, (expected / 255)[None])
    torch.testing.assert_close(got, ref, rtol=0, atol=ATOL)
