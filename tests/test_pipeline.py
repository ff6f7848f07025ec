"""Streaming pipeline: length rule, ping-pong, masks, chunked encode/decode, generator == whole clip, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from lipforcing_core.config import STREAM_FULL, STREAM_WINDOW, get_preset
from lipforcing_core.face.mask import load_mouth_mask
from lipforcing_core.models.dit import LipForcingDiT
from lipforcing_core.pipeline import (
    HostCopy,
    LipSyncPipeline,
    PrecomputedLatents,
    SourceFrames,
    StageTimer,
    StreamingEncoder,
    chunk_frames,
    composite_mouth,
    composite_mouth_device,
    frames_to_uint8,
    generation_length,
    latent_mask,
    pingpong_indices,
    pixel_mask,
)
from lipforcing_core.sampling.causal import ReplayNoise
from lipforcing_core.vae.wan_vae import WanVAE, WanVAEConfig

SIZE = 32


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: one thread is fastest


@pytest.fixture(scope="module")
def dit():
    return LipForcingDiT(get_preset("tiny")).init_weights(torch.Generator().manual_seed(0)).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return WanVAE(WanVAEConfig(dim=4)).eval().requires_grad_(False)


def clip(frames: int, audio_frames: int | None = None, seed: int = 0):
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 256, (frames, SIZE, SIZE, 3), dtype=np.uint8)
    audio = torch.from_numpy(rng.standard_normal((audio_frames or frames, 10752), dtype=np.float32))
    return video, audio, load_mouth_mask(None, 256)


@pytest.mark.parametrize("audio,expected", [(9, (3, 9)), (45, (12, 45)), (50, (12, 45)), (57, (15, 57)), (4, (3, 9))])
def test_generation_length(audio, expected):
    assert generation_length(audio) == expected


def test_chunk_frames_and_pingpong():
    assert [chunk_frames(k) for k in range(3)] == [(0, 9), (9, 21), (21, 33)]
    assert pingpong_indices(3, 8).tolist() == [0, 1, 2, 1, 0, 1, 2, 1]
    assert pingpong_indices(1, 3).tolist() == [0, 0, 0]
    assert pingpong_indices(5, 3).tolist() == [0, 1, 2]
    assert pingpong_indices(4, 20)[:10].tolist() == pingpong_indices(4, 10).tolist()  # prefix-stable


def test_source_frames_layouts_agree():
    video = clip(5)[0]
    nchw = torch.from_numpy(video).float().div(255).mul(2).sub(1).permute(3, 0, 1, 2)[None]
    a, b = SourceFrames(video, 8), SourceFrames(nchw, 8)
    assert len(a) == 8 and a.size == (SIZE, SIZE)
    torch.testing.assert_close(a[2:7], b[2:7], atol=0, rtol=0)
    torch.testing.assert_close(a[5:6], b[3:4], atol=0, rtol=0)  # ping-pong: frame 5 -> source frame 3


def test_masks_follow_the_official_resizes():
    mask = np.ones((256, 256), np.float32)
    mask[128:, 64:192] = 0.0  # mouth block
    lat = latent_mask(mask, (8, 8))
    expected = torch.ones(8, 8)
    expected[4:, 2:6] = 0
    torch.testing.assert_close(lat, expected)
    px = pixel_mask(mask, (64, 64))
    assert px.shape == (64, 64) and set(px.unique().tolist()) == {0.0, 1.0}
    assert px[40:, 20:44].sum() == 0 and px[:30].min() == 1


def test_streaming_encoder_equals_whole_clip_encode(vae):
    video = SourceFrames(clip(21)[0])
    keep = pixel_mask(load_mouth_mask(None, 256), (SIZE, SIZE))
    enc = StreamingEncoder(vae, video, keep)
    parts = [enc(0), enc(1)]
    full = vae.encode(video[0:21])
    torch.testing.assert_close(torch.cat([p[2] for p in parts], 2), full, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(torch.cat([p[1] for p in parts], 2), vae.encode(video[0:21] * keep), atol=1e-6, rtol=1e-5)
    assert parts[1][0] is parts[0][0] and torch.equal(parts[0][0], parts[0][2][:, :, :1])


def test_generator_equals_whole_clip_and_streamed_decode(dit, vae):
    pipe = LipSyncPipeline(dit, vae)
    video, audio, mask = clip(33)
    info = {}
    chunks = list(pipe.stream(video, audio, mask, seed=3, info=info))
    assert info["latent_frames"] == 9 and info["video_adjust"] == "none"
    assert [(c.frame_start, c.frames.shape[2]) for c in chunks] == [(0, 9), (9, 12), (21, 12)]
    whole = pipe.run(video, audio, mask, seed=3)
    assert whole.shape == (1, 3, 33, SIZE, SIZE)
    torch.testing.assert_close(torch.cat([c.frames for c in chunks], 2), whole, atol=0, rtol=0)
    latents = torch.cat([c.latents for c in chunks], 2)
    torch.testing.assert_close(whole, vae.decode(latents), atol=1e-6, rtol=1e-5)
    assert not torch.equal(pipe.run(video, audio, mask, seed=4), whole)
    assert frames_to_uint8(whole).shape == (1, 33, SIZE, SIZE, 3)


def test_window_and_full_attention_agree_until_eviction(dit):
    rng = torch.Generator().manual_seed(0)
    lat = lambda: torch.randn(1, 16, 9, 4, 4, generator=rng)
    source = PrecomputedLatents(lat(), lat())
    audio, noise, eps = torch.randn(1, 33, 10752, generator=rng), lat(), [lat()[:, :, :3] for _ in range(3)]
    out = {}
    for name, spec in (("window", STREAM_WINDOW), ("full", STREAM_FULL)):
        pipe = LipSyncPipeline(dit, spec=spec)
        out[name] = [c.latents for c in pipe.stream_latents(source, audio, torch.ones(4, 4), 9, (4, 4),
                                                            noise=ReplayNoise(noise, eps))]
    for k in (0, 1):
        torch.testing.assert_close(out["window"][k], out["full"][k], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out["window"][2], out["full"][2], atol=1e-4)


@pytest.mark.parametrize("t_list", [[0.999, 0.0], [0.999, 0.9, 0.769, 0.5, 0.0]])
def test_step_schedule_is_data(dit, t_list):
    source = PrecomputedLatents(torch.zeros(1, 16, 3, 4, 4), torch.zeros(1, 16, 3, 4, 4))
    steps = len(t_list) - 1
    noise = ReplayNoise(torch.randn(1, 16, 3, 4, 4), [torch.randn(1, 16, 3, 4, 4) for _ in range(steps - 1)])
    pipe = LipSyncPipeline(dit, t_list=t_list)
    records = []
    (chunk,) = pipe.stream_latents(source, torch.randn(1, 9, 10752), torch.ones(4, 4), 3, (4, 4), noise=noise,
                                   records=records)
    assert pipe.sampler.passes_per_chunk == steps + 1
    assert sorted(k for k in records[0] if k.startswith("flow_step")) == [f"flow_step{i}" for i in range(1, steps + 1)]
    assert torch.equal(chunk.latents, records[0][f"x0_step{steps}"])
    assert noise._used == steps - 1


def test_zero_text_default_equals_512_zero_rows(dit):
    source = PrecomputedLatents(torch.randn(1, 16, 3, 4, 4), torch.randn(1, 16, 3, 4, 4))
    pipe, audio, init = LipSyncPipeline(dit), torch.randn(1, 9, 10752), torch.randn(1, 16, 3, 4, 4)
    runs = [next(iter(pipe.stream_latents(source, audio, torch.ones(4, 4), 3, (4, 4), text=text,
                                          noise=ReplayNoise(init, [init])))).latents
            for text in (None, torch.zeros(1, 512, 4096))]
    torch.testing.assert_close(runs[0], runs[1], atol=1e-5, rtol=1e-5)


def test_length_mismatch_is_reported(dit, vae):
    pipe = LipSyncPipeline(dit, vae)
    video, audio, mask = clip(5, audio_frames=23)
    info = {}
    with pytest.warns(UserWarning, match="ping-pong extended to 21"):
        out = pipe.run(video, audio, mask, info=info)
    assert out.shape[2] == 21 and info["video_adjust"] == "ping-pong extended" and info["audio_frames_used"] == 21
    long_video = clip(40, audio_frames=21)[0]
    with pytest.warns(UserWarning, match="cut to 21"):
        pipe.prepare(long_video, audio[:21], mask, info)
    assert info["video_adjust"] == "cut"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe.prepare(clip(21)[0], audio[:21], mask)


@pytest.mark.parametrize("case,match", [
    ("size", "multiples of 16"), ("short_audio", "at least 9"), ("mask_aspect", "aspect ratio"),
    ("mask_ndim", "2-D"), ("layout", r"\[T, H, W, 3\]"), ("text", "4096"), ("mask_range", r"\[0, 1\]"),
    ("audio_width", "160 features per frame but the model takes 10752")])
def test_bad_input_raises_clear_errors(dit, vae, case, match):
    pipe = LipSyncPipeline(dit, vae)
    video, audio, mask = clip(9)
    kwargs = {}
    if case == "size":
        video = np.zeros((9, 40, 32, 3), np.uint8)
    elif case == "short_audio":
        audio = audio[:8]
    elif case == "mask_aspect":
        mask = np.ones((32, 64))
    elif case == "mask_ndim":
        mask = np.ones((32, 32, 3))
    elif case == "layout":
        video = np.zeros((9, 3, 32, 32), np.uint8)
    elif case == "text":
        kwargs["text"] = torch.zeros(1, 4, 768)
    elif case == "mask_range":
        mask = np.full((32, 32), 255.0)
    elif case == "audio_width":  # e.g. the demo log-mel features wired to a wav2vec2 model
        audio = audio[:, :160]
    with pytest.raises(ValueError, match=match):
        next(pipe.stream(video, audio, mask, **kwargs))


def test_batched_channels_first_input(dit, vae):
    video, audio, mask = clip(9)
    nchw = torch.from_numpy(video).float().div(255).mul(2).sub(1).permute(3, 0, 1, 2)[None]
    pipe = LipSyncPipeline(dit, vae)
    torch.testing.assert_close(pipe.run(nchw, audio, mask, seed=5), pipe.run(video, audio, mask, seed=5), atol=1e-6, rtol=0)
    both = pipe.run(nchw.expand(2, -1, -1, -1, -1), audio, mask, seed=5)
    assert both.shape == (2, 3, 9, SIZE, SIZE) and torch.isfinite(both).all()
    assert not torch.allclose(both[0], both[1])  # one noise tensor for the batch: each sample its own draws


# ------------------------------------------------------------------------------------------ fast paths
def test_batched_encode_equals_two_streams(vae):
    video = SourceFrames(clip(21)[0])
    keep = pixel_mask(load_mouth_mask(None, 256), (SIZE, SIZE))
    enc = StreamingEncoder(vae, video, keep)
    plain, masked = vae.new_encode_stream(), vae.new_encode_stream()
    for k in range(2):
        a, b = chunk_frames(k)
        _, got_masked, got_plain = enc(k)
        torch.testing.assert_close(got_plain, vae.encode_chunk(video[a:b], plain), atol=1e-6, rtol=0)
        torch.testing.assert_close(got_masked, vae.encode_chunk(video[a:b] * keep, masked), atol=1e-6, rtol=0)


def test_device_composite_is_bit_identical_to_numpy():
    rng = np.random.default_rng(0)
    generated = torch.from_numpy(rng.uniform(-1.2, 1.2, (1, 3, 5, SIZE, SIZE)).astype(np.float32))
    source = rng.integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)
    for keep in (pixel_mask(load_mouth_mask(None, 256), (SIZE, SIZE)), torch.rand(SIZE, SIZE)):
        out = composite_mouth_device(generated, torch.from_numpy(source), keep)
        assert out.dtype == torch.uint8
        np.testing.assert_array_equal(HostCopy(out).wait().numpy(), composite_mouth(generated, source, keep))


def test_stage_timer_only_when_given(dit):
    source = PrecomputedLatents(torch.zeros(1, 16, 6, 4, 4), torch.zeros(1, 16, 6, 4, 4))
    args = (source, torch.randn(1, 21, 10752), torch.ones(4, 4), 6, (4, 4))
    pipe = LipSyncPipeline(dit)
    assert pipe.timer is None and len(list(pipe.stream_latents(*args))) == 2
    timer = StageTimer()
    pipe = LipSyncPipeline(dit, timer=timer)
    list(pipe.stream_latents(*args))
    assert set(timer.seconds) == {"setup", "encode", "denoise", "cache_write"}
    assert all(s > 0 for s in timer.seconds.values())
