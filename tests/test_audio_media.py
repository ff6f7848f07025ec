"""Real talking-head audio through the ComfyUI AUDIO path: right length for the video, long clips."""

from __future__ import annotations

import av
import pytest
import torch

from lipforcing_core.audio import encode_audio, features_at, load_audio, load_wav2vec2, normalize, prepare_waveform
from lipforcing_core.audio.features import CHUNK_DEVIATION


@pytest.fixture(scope="module")
def encoder(golden_root):
    return load_wav2vec2(golden_root / "audio" / "wav2vec2_tiny")


def _comfy_audio(path) -> dict:
    wave, rate = load_audio(path)
    return {"waveform": wave[None], "sample_rate": rate}  # ComfyUI AUDIO: [B, C, T]


def _video_frames(path) -> tuple[int, float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.frames, float(stream.average_rate)


@torch.inference_mode()
def test_dub_audio_covers_video_frames(encoder, media_root):
    """demo1: 9.6 s of 16 kHz mono speech dubbed onto a 250-frame 25 fps video."""
    frames, fps = _video_frames(media_root / "latentsync_demo1_video.mp4")
    audio = _comfy_audio(media_root / "latentsync_demo1_audio.wav")
    emb = encode_audio(encoder, audio["waveform"], audio["sample_rate"], num_frames=frames, fps=fps)
    assert (frames, fps) == (250, 25.0)
    assert emb.shape == (1, 250, encoder.config.feature_dim) and torch.isfinite(emb).all()
    own = encode_audio(encoder, audio["waveform"], audio["sample_rate"], fps=fps)
    assert own.shape == (1, 240, 128)  # default: floor(9.6 s * 25)


@torch.inference_mode()
def test_video_audio_track_stereo_44k(encoder, media_root):
    """The video's own AAC 44.1 kHz stereo track, as ComfyUI's video loader hands it over."""
    audio = _comfy_audio(media_root / "latentsync_demo1_video.mp4")
    assert audio["waveform"].shape[:2] == (1, 2) and audio["sample_rate"] == 44100
    mono = prepare_waveform(audio["waveform"], audio["sample_rate"])[:, None]
    assert mono.shape == (1, 1, -(-audio["waveform"].shape[-1] * 16000 // 44100))
    emb = encode_audio(encoder, audio["waveform"], audio["sample_rate"], num_frames=250)
    assert emb.shape == (1, 250, 128) and torch.isfinite(emb).all()
    # the mono 16 kHz waveform is itself a valid AUDIO waveform: same features
    assert torch.equal(encode_audio(encoder, mono, 16000, num_frames=250), emb)


@torch.inference_mode()
def test_chunked_long_clip_matches_one_shot(encoder, media_root):
    """19.8 s real clip: the memory-bounded CNN chunking stays within CHUNK_DEVIATION."""
    audio = _comfy_audio(media_root / "latentsync_demo2_audio.wav")
    iv = normalize(prepare_waveform(audio["waveform"], audio["sample_rate"]))
    full = features_at(encoder, iv, 496)
    for chunk in (25, 100):
        assert (features_at(encoder, iv, 496, chunk=chunk) - full).abs().max() < CHUNK_DEVIATION
    default = encode_audio(encoder, audio["waveform"], audio["sample_rate"])  # chunk 250 < 496 frames
    assert default.shape == (1, 496, 128)
    assert (default - full).abs().max() < CHUNK_DEVIATION
