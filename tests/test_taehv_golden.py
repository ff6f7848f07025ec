"""TAEHV (taew2_1) against the official golden vectors (shared/golden/taehv, fp32 from fp16 weights)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lipforcing_core.vae import TAEHV, load_taehv

TOL = 1e-4  # README §5


@pytest.fixture(scope="module")
def golden(golden_root):
    root = golden_root / "taehv"
    return (load_file(str(root / "cases.safetensors")), json.loads((root / "config.json").read_text()),
            json.loads((root / "traces.json").read_text()))


@pytest.fixture(scope="module")
def tae(golden_root) -> TAEHV:
    return load_taehv(golden_root / "taehv" / "weights.safetensors")


def close(ours: torch.Tensor, ref: torch.Tensor, tol: float = TOL) -> None:
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() <= tol


def test_architecture_matches_golden(tae, golden, golden_root):
    _, config, _ = golden
    cfg = config["model_config"]
    assert [type(b).__name__ for b in tae.encoder] == cfg["encoder_layers"]
    assert [type(b).__name__ for b in tae.decoder] == cfg["decoder_layers"]
    assert (tae.t_downscale, tae.t_upscale, tae.frames_to_trim) == (cfg["t_downscale"], cfg["t_upscale"], cfg["frames_to_trim"])
    keys = [line.split("\t")[0] for line in (golden_root / "taehv" / "keys.txt").read_text().splitlines()]
    assert sorted(tae.state_dict()) == sorted(keys)
    assert all(p.dtype == torch.float32 for p in tae.parameters())


def test_parallel_decode(tae, golden):
    cases, _, _ = golden
    with torch.no_grad():
        raw = tae.decode_video(cases["latent"], trim=False)
        decoded = tae.decode_video(cases["latent"])
    close(raw, cases["decoded_raw_untrimmed_preclamp"].clamp(0, 1))
    close(decoded, cases["decoded"])
    assert torch.equal(decoded, raw[:, 3:])


def test_streaming_decode_one_latent_per_call(tae, golden):
    cases, config, traces = golden
    latent = cases["latent"]
    stream = tae.new_decode_stream()
    per_latent, calls = [], []
    with torch.no_grad():
        for t in range(latent.shape[1]):
            first = tae.decode_step(stream, latent[:, t:t + 1])
            rest = tae.flush_decoder(stream)
            per_latent.append([first, *rest])
            calls.append(1 + len(rest) + 1)  # the feeding call, the frames after it, the final None
        flushed = tae.flush_decoder(stream)
        sequential = tae.decode_video(latent, parallel=False)
    assert [len(f) for f in per_latent] == config["stream_decode_frames_per_latent"]
    assert len(flushed) == config["stream_decode_frames_from_flush"]
    assert sum(calls) == len(traces["stream_decode_calls"])
    streamed = torch.cat([f for frames in per_latent for f in frames], 1)
    close(streamed, cases["stream_decoded"])
    assert torch.equal(streamed, sequential)


def test_encode_cases(tae, golden):
    cases, _, _ = golden
    video = cases["video"]
    aligned = video[:, : video.shape[1] // 4 * 4]
    with torch.no_grad():
        close(tae.encode_video(aligned), cases["encoded_aligned"])
        close(tae.encode_video(aligned, parallel=False), cases["encoded_aligned_sequential"])
        close(tae.encode_video(video), cases["encoded_endpad"])
        close(tae.encode_video(video, parallel=False, pad="front"), cases["encoded_frontpad_sequential"])
        close(tae.encode(video.mul(2).sub(1).transpose(1, 2)).transpose(1, 2), cases["encoded_frontpad_sequential"])


def test_streaming_encode_one_frame_per_call(tae, golden):
    cases, _, traces = golden
    video = cases["video"]
    stream = tae.new_encode_stream()
    latents, returned_at = [], []
    with torch.no_grad():
        for i in range(video.shape[1]):
            latent = tae.encode_step(stream, video[:, i:i + 1])
            if latent is not None:
                latents.append(latent)
                returned_at.append(i)
        flushed = tae.flush_encoder(stream)
        sequential = tae.encode_video(video, parallel=False)
    expected_at = [c["fed_frame"] for c in traces["stream_encode_calls"] if c.get("returned_latent") is not None]
    assert returned_at == expected_at
    assert len(flushed) == traces["stream_encode_calls"][-1]["flush_encoder_returned"]
    streamed = torch.cat(latents + flushed, 1)
    close(streamed, cases["stream_encoded"])
    assert torch.equal(streamed, sequential)


def test_half_precision_stream_decode_stays_close(golden_root, golden):
    """Lip Forcing streams TAEHV in fp16 on GPU; bf16 is the CPU-portable reduced precision check."""
    cases, _, _ = golden
    tae_bf16 = load_taehv(golden_root / "taehv" / "weights.safetensors", dtype=torch.bfloat16)
    with torch.no_grad():
        decoded = tae_bf16.decode_video(cases["latent"].bfloat16(), parallel=False)
    assert decoded.dtype == torch.bfloat16
    close(decoded.float(), cases["stream_decoded"], tol=0.1)
