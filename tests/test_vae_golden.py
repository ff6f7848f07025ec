"""Wan2.1 VAE against the official golden vectors (shared/golden/vae, tiny config, fp32 CPU)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lipforcing_core.vae import WanVAE, latent_scale, load_wan_vae
from lipforcing_core.vae.wan_vae import PRESETS

TOL = 1e-4  # README §6: max|ours - golden| for latents, decodes and streaming tensors


@pytest.fixture(scope="module")
def golden(golden_root):
    root = golden_root / "vae"
    return load_file(str(root / "cases.safetensors")), json.loads((root / "config.json").read_text())


@pytest.fixture(scope="module")
def vae(golden_root) -> WanVAE:
    return load_wan_vae(golden_root / "vae" / "weights.safetensors")


@pytest.fixture(scope="module")
def full(vae, golden):
    cases, _ = golden
    with torch.no_grad():
        return {"latent": vae.encode(cases["video"]), "decoded": vae.decode(cases["latent"], clamp=False)}


def close(ours: torch.Tensor, ref: torch.Tensor, tol: float = TOL) -> None:
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() <= tol


def test_config_and_keys_match_golden(vae, golden, golden_root):
    _, config = golden
    cfg = config["model_config"]
    assert vae.config == PRESETS["tiny"]
    assert (vae.config.dim, vae.config.z_dim, list(vae.config.dim_mult)) == (cfg["dim"], cfg["z_dim"], cfg["dim_mult"])
    assert list(vae.config.temperal_downsample) == cfg["temperal_downsample"]
    keys = [line.split("\t")[0] for line in (golden_root / "vae" / "keys.txt").read_text().splitlines()]
    assert list(vae.state_dict()) == keys


def test_real_config_has_the_released_layout(golden_root):
    """The wan2.1 preset has the 194 official names (same order as Wan2.1_VAE.pth) and 126.9M params."""
    with torch.device("meta"):
        real = WanVAE(PRESETS["wan2.1"])
    keys = [line.split("\t")[0] for line in (golden_root / "vae" / "keys.txt").read_text().splitlines()]
    assert list(real.state_dict()) == keys
    assert sum(p.numel() for p in real.parameters()) == 126_892_531
    assert real.encoder.conv1.weight.shape == (96, 3, 3, 3, 3)


def test_latent_scale_constants_are_bit_exact(golden):
    cases, _ = golden
    mean, inv_std = latent_scale()
    assert torch.equal(mean.flatten(), cases["scale_mean"])
    assert torch.equal(inv_std.flatten(), cases["scale_inv_std"])


def test_full_encode(vae, golden, full):
    cases, _ = golden
    close(full["latent"], cases["latent"])
    with torch.no_grad():
        mu, log_var = vae.encode_moments(cases["video"], vae.new_encode_stream())
    close(mu, cases["mu_raw"])
    close(log_var, cases["log_var"])


def test_full_decode(vae, golden, full):
    cases, _ = golden
    close(full["decoded"], cases["decoded"])
    close(full["decoded"].clamp(-1, 1), cases["decoded_clamped"])
    with torch.no_grad():
        close(vae.decode(cases["latent_rand"], clamp=False), cases["decoded_rand"])


def test_streaming_decode_one_latent_per_call(vae, golden, full):
    cases, config = golden
    stream = vae.new_decode_stream()
    with torch.no_grad():
        outs = [vae.decode_chunk(cases["latent"][:, :, t:t + 1], stream, clamp=False) for t in range(cases["latent"].shape[2])]
    assert [o.shape[2] for o in outs] == config["stream_decode_frames_per_call"]
    streamed = torch.cat(outs, 2)
    close(streamed, cases["stream_decoded"])
    assert torch.equal(streamed, full["decoded"])


def test_streaming_encode_in_official_chunks(vae, golden, full):
    cases, config = golden
    stream = vae.new_encode_stream()
    with torch.no_grad():
        outs = [vae.encode_chunk(cases["video"][:, :, a:b], stream) for a, b in config["stream_encode_chunks"]]
    assert [o.shape[2] for o in outs] == [1] * len(outs)
    streamed = torch.cat(outs, 2)
    close(streamed, cases["stream_latent"])
    assert torch.equal(streamed, full["latent"])


def test_single_image_path(vae, golden, full):
    cases, _ = golden
    with torch.no_grad():
        latent_img = vae.encode(cases["video"][:, :, :1])
        decoded_img = vae.decode(cases["latent_img"], clamp=False)
    close(latent_img, cases["latent_img"])
    close(decoded_img, cases["decoded_img"])
    assert torch.equal(latent_img, full["latent"][:, :, :1])


def test_two_interleaved_streams_share_no_state(vae, golden, full):
    cases, config = golden
    streams = {"video": vae.new_encode_stream(), "video_masked": vae.new_encode_stream()}
    outs = {name: [] for name in streams}
    with torch.no_grad():
        for a, b in config["stream_encode_chunks"]:
            for name, stream in streams.items():
                outs[name].append(vae.encode_chunk(cases[name][:, :, a:b], stream))
        masked_full = vae.encode(cases["video_masked"])
    assert torch.equal(torch.cat(outs["video"], 2), full["latent"])
    assert torch.equal(torch.cat(outs["video_masked"], 2), masked_full)
    close(masked_full, cases["latent_masked"])


def test_bfloat16_weights_stay_close(golden_root, golden):
    """Lip Forcing runs the streaming encoder in bf16; the reduced-precision path must stay near fp32."""
    cases, _ = golden
    vae_bf16 = load_wan_vae(golden_root / "vae" / "weights.safetensors", dtype=torch.bfloat16)
    with torch.no_grad():
        latent = vae_bf16.encode(cases["video"].bfloat16())
        decoded = vae_bf16.decode(cases["latent"].bfloat16(), clamp=False)
    assert latent.dtype == decoded.dtype == torch.bfloat16
    close(latent.float(), cases["latent"], tol=0.1)
    close(decoded.float(), cases["decoded"], tol=0.2)
