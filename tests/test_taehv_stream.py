"""TAEHV: Wan-layout streaming decode == full decode on 9 latents, independent streams, bad input."""

from __future__ import annotations

import itertools

import pytest
import torch

from lipforcing_core.checkpoints import CheckpointError
from lipforcing_core.vae import TAEHV, load_taehv, taehv_from_state_dict


@pytest.fixture(scope="module")
def tae() -> TAEHV:
    torch.manual_seed(0)
    return TAEHV().eval().requires_grad_(False)


def test_decode_chunk_equals_full_decode_on_9_latents(tae):
    latent = torch.randn(1, 16, 9, 2, 2, generator=torch.Generator().manual_seed(1))  # Wan layout
    sequential = tae.decode_video(latent.transpose(1, 2), parallel=False).mul(2).sub(1).transpose(1, 2)
    parallel = tae.decode_video(latent.transpose(1, 2)).mul(2).sub(1).transpose(1, 2)
    assert sequential.shape == (1, 3, 33, 16, 16)
    stream = tae.new_decode_stream()
    bounds = [0, 3, 4, 6, 9]
    chunks = [tae.decode_chunk(latent[:, :, a:b], stream) for a, b in itertools.pairwise(bounds)]
    assert [c.shape[2] for c in chunks] == [9, 4, 8, 12]
    streamed = torch.cat(chunks, 2)
    assert torch.equal(streamed, sequential)
    assert torch.equal(tae.decode(latent), sequential)
    assert (streamed - parallel).abs().max().item() <= 1e-4
    assert streamed.min() >= -1 and streamed.max() <= 1
    assert tae.flush_decoder(stream) == []


def test_two_decode_streams_are_independent(tae):
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randn(1, 16, 3, 2, 2, generator=gen), torch.randn(1, 16, 3, 2, 2, generator=gen)
    sa, sb = tae.new_decode_stream(), tae.new_decode_stream()
    out_a, out_b = [], []
    for t in range(3):
        out_a.append(tae.decode_chunk(a[:, :, t:t + 1], sa))
        out_b.append(tae.decode_chunk(b[:, :, t:t + 1], sb))
    assert torch.equal(torch.cat(out_a, 2), tae.decode_chunk(a, tae.new_decode_stream()))
    assert torch.equal(torch.cat(out_b, 2), tae.decode_chunk(b, tae.new_decode_stream()))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: m.decode_video(torch.zeros(1, 2, 8, 2, 2)), r"latent .*16 channels"),
        (lambda m: m.decode_chunk(torch.zeros(1, 8, 2, 2, 2), m.new_decode_stream()), r"latent .*16 channels"),
        (lambda m: m.encode_video(torch.zeros(1, 4, 4, 16, 16)), r"video .*3 channels"),
        (lambda m: m.encode_video(torch.zeros(1, 4, 3, 16, 16), pad="both"), r"pad must be"),
        (lambda m: m.encode(torch.zeros(3, 5, 16, 16)), r"5-D"),
    ],
)
def test_bad_input_is_named(tae, call, match):
    with pytest.raises(ValueError, match=match):
        call(tae)


def test_wrong_checkpoint_type_raises(golden_root):
    with pytest.raises(CheckpointError, match="not a TAEHV checkpoint"):
        load_taehv(golden_root / "vae" / "weights.safetensors")
    state = dict(TAEHV().state_dict())
    del state["decoder.22.bias"]
    with pytest.raises(CheckpointError, match="does not match the TAEHV"):
        taehv_from_state_dict(state)


def test_non_5d_input_gets_a_named_error(tae):
    with pytest.raises(ValueError, match=r"latent must be a 5-D tensor \[B, C, T, h, w\].*\(16, 2\)"):
        tae.decode_chunk(torch.zeros(16, 2), tae.new_decode_stream())
