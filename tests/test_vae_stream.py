"""Wan VAE streaming == full clip on 9+ latent frames, input validation and checkpoint loading."""

from __future__ import annotations

import itertools

import pytest
import torch
from safetensors.torch import save_file

from lipforcing_core.checkpoints import CheckpointError
from lipforcing_core.vae import (
    WanVAE,
    denormalize_latent,
    load_wan_vae,
    normalize_latent,
    wan_vae_from_state_dict,
)
from lipforcing_core.vae.wan_vae import PRESETS


@pytest.fixture(scope="module")
def vae() -> WanVAE:
    torch.manual_seed(0)
    return WanVAE(PRESETS["tiny"]).eval().requires_grad_(False)


def test_streaming_encode_equals_full_on_9_latents(vae):
    video = torch.rand(1, 3, 33, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    full = vae.encode(video)
    assert full.shape == (1, 16, 9, 2, 2)
    stream = vae.new_encode_stream()
    bounds = [0, 1, 9, 13, 25, 33]  # 1 frame, then 2, 1, 3, 2 latents' worth per call
    chunks = [vae.encode_chunk(video[:, :, a:b], stream) for a, b in itertools.pairwise(bounds)]
    assert [c.shape[2] for c in chunks] == [1, 2, 1, 3, 2]
    assert torch.equal(torch.cat(chunks, 2), full)
    assert stream.frames_seen == 33


def test_streaming_decode_equals_full_on_9_latents(vae):
    latent = torch.randn(1, 16, 9, 2, 2, generator=torch.Generator().manual_seed(2))
    full = vae.decode(latent, clamp=False)
    assert full.shape == (1, 3, 33, 16, 16)
    stream = vae.new_decode_stream()
    bounds = [0, 3, 4, 6, 9]  # Lip Forcing decodes 3 latents per call; mix in other sizes
    chunks = [vae.decode_chunk(latent[:, :, a:b], stream, clamp=False) for a, b in itertools.pairwise(bounds)]
    assert [c.shape[2] for c in chunks] == [9, 4, 8, 12]
    assert torch.equal(torch.cat(chunks, 2), full)
    assert torch.equal(vae.decode(latent), full.clamp(-1, 1))


def test_streams_do_not_share_state(vae):
    gen = torch.Generator().manual_seed(3)
    a, b = (torch.rand(1, 3, 9, 16, 16, generator=gen) * 2 - 1 for _ in range(2))
    sa, sb = vae.new_encode_stream(), vae.new_encode_stream()
    out_a = [vae.encode_chunk(a[:, :, :1], sa)]
    out_b = [vae.encode_chunk(b[:, :, :1], sb)]
    out_a.append(vae.encode_chunk(a[:, :, 1:], sa))
    out_b.append(vae.encode_chunk(b[:, :, 1:], sb))
    assert torch.equal(torch.cat(out_a, 2), vae.encode(a))
    assert torch.equal(torch.cat(out_b, 2), vae.encode(b))


def test_normalisation_round_trip():
    mu = torch.randn(2, 16, 3, 2, 2)
    assert torch.allclose(denormalize_latent(normalize_latent(mu)), mu, atol=1e-6)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda v: v.encode(torch.zeros(1, 4, 5, 16, 16)), r"video .*3 channels.*\(1, 4, 5, 16, 16\)"),
        (lambda v: v.encode(torch.zeros(1, 3, 8, 16, 16)), r"8 frames.*1 \+ 4k frames"),
        (lambda v: v.encode(torch.zeros(1, 3, 5, 12, 16)), r"multiples of 8"),
        (lambda v: v.decode(torch.zeros(1, 8, 2, 2, 2)), r"latent .*16 channels"),
        (lambda v: v.decode(torch.zeros(16, 2, 2, 2)), r"5-D"),
    ],
)
def test_bad_input_is_named(vae, call, match):
    with pytest.raises(ValueError, match=match):
        call(vae)


def test_later_encode_chunk_needs_multiple_of_4(vae):
    stream = vae.new_encode_stream()
    vae.encode_chunk(torch.zeros(1, 3, 1, 16, 16), stream)
    with pytest.raises(ValueError, match=r"3 frames.*multiple of 4"):
        vae.encode_chunk(torch.zeros(1, 3, 3, 16, 16), stream)


def test_loads_prefixed_and_half_precision_checkpoints(vae, tmp_path):
    state = {f"model.{k}": v.to(torch.bfloat16) for k, v in vae.state_dict().items()}  # DiffSynth layout, bf16
    path = tmp_path / "wan_2.1_vae.safetensors"
    save_file(state, str(path))
    loaded = load_wan_vae(path)
    assert loaded.config == PRESETS["tiny"]
    for key, value in loaded.state_dict().items():
        assert value.dtype == torch.float32
        assert torch.equal(value, vae.state_dict()[key].to(torch.bfloat16).float())
    nested = wan_vae_from_state_dict({"state_dict": dict(vae.state_dict())})
    assert torch.equal(nested.conv2.weight, vae.conv2.weight)


def test_wrong_checkpoint_type_raises(tmp_path, golden_root):
    with pytest.raises(CheckpointError, match="not a Wan2.1 VAE checkpoint"):
        load_wan_vae(golden_root / "taehv" / "weights.safetensors")
    with pytest.raises(CheckpointError, match="diffusers-format"):
        wan_vae_from_state_dict({"decoder.conv_in.weight": torch.zeros(1)})
    state = dict(WanVAE(PRESETS["tiny"]).state_dict())
    del state["decoder.head.2.bias"]
    with pytest.raises(CheckpointError, match="does not match the Wan2.1 VAE"):
        wan_vae_from_state_dict(state)
