"""Per-video-frame wav2vec2 features, the OmniAvatar / Lip Forcing recipe.

16 kHz mono → normalise over the whole clip → zero-pad to whole video frames → CNN features →
linear interpolation (align_corners=True) to the video frame count → feature projection →
transformer → per frame ``[last_hidden_state, hidden_states[0..L]]`` (14 × 768 = 10752 for
base-960h).

Long clips: with ``window`` set, the CNN runs in exact chunks (whole-clip GroupNorm statistics)
and the transformer in windows of ``window`` frames that each see ``context`` extra frames on
both sides. A clip no longer than ``window + 2 * context`` frames is encoded in one pass, exactly
as the official code does. Beyond that the transformer's attention and positional conv lose the
context outside each window; the measured deviation is listed in ``WINDOW_DEVIATION``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lipforcing_core.audio.io import SAMPLE_RATE, prepare_waveform
from lipforcing_core.audio.wav2vec2 import AudioEncoder

NORM_EPS = 1e-7
MIN_FRAMES = 9  # one causal chunk of the student (9 video frames at 25 fps)
DEFAULT_WINDOW = 750  # 30 s at 25 fps
DEFAULT_CONTEXT = 125  # 5 s each side: a clip up to 40 s is encoded in one exact pass
# Max |windowed - full| measured on the 19.8 s real clip (tests/test_audio_window.py,
# lipforcing_core/audio/bench.py); features reach about 5 (tiny) / 20 (random base).
WINDOW_DEVIATION = {"golden tiny, window 100, context 50": 1e-3, "random base, window 100, context 50": 1e-3}


def normalize(x: Tensor) -> Tensor:
    """HF Wav2Vec2FeatureExtractor: zero mean, unit (population) variance per clip, in float32."""
    x = x.float()
    mean = x.mean(-1, keepdim=True)
    var = (x - mean).square().mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + NORM_EPS)


def frames_in(num_samples: int, fps: float, sample_rate: int = SAMPLE_RATE) -> int:
    """Whole video frames covered by ``num_samples``: floor(duration · fps)."""
    return math.floor(num_samples * fps / sample_rate + 1e-9)


def samples_for(frames: int, fps: float, sample_rate: int = SAMPLE_RATE) -> int:
    """Samples spanned by ``frames`` video frames (640 per frame at 25 fps), rounded up."""
    return math.ceil(frames * sample_rate / fps - 1e-9)


def features_at(
    encoder: AudioEncoder,
    input_values: Tensor,
    seq_len: int,
    fps: float = 25.0,
    window: int | None = None,
    context: int = DEFAULT_CONTEXT,
) -> Tensor:
    """Features ``[B, seq_len, D]`` of normalised ``[B, N]`` input encoded at exactly ``seq_len`` frames.

    The input is zero-padded (never trimmed) to ``seq_len`` whole frames; the CNN features are
    interpolated to ``seq_len`` frames over the whole padded clip (the official behaviour).
    """
    pad = samples_for(seq_len, fps) - input_values.shape[-1]
    x = torch.nn.functional.pad(input_values, (0, max(pad, 0))).to(encoder.device, encoder.dtype)
    chunk = None if window is None else 2 * window
    cnn = encoder.cnn_features(x, chunk)
    cnn = torch.nn.functional.interpolate(cnn.transpose(1, 2), size=seq_len, mode="linear", align_corners=True)
    return _encode_windows(encoder, encoder.project(cnn.transpose(1, 2)), window, context)


def _encode_windows(encoder: AudioEncoder, x: Tensor, window: int | None, context: int) -> Tensor:
    """Run the transformer over ``[B, L, H]`` in windows; write the concatenated states per frame."""
    batch, length, hidden = x.shape
    if window is None or length <= window + 2 * context:
        window, context = length, 0
    out = x.new_empty(batch, length, encoder.config.feature_dim)
    for start in range(0, length, window):
        stop = min(start + window, length)
        lo, hi = max(start - context, 0), min(stop + context, length)
        states = encoder.hidden_states(x[:, lo:hi])
        for i, state in enumerate([states[-1], *states]):
            out[:, start:stop, i * hidden : (i + 1) * hidden] = state[:, start - lo : stop - lo]
    return out


@torch.inference_mode()
def encode_audio(
    encoder: AudioEncoder,
    waveform: Tensor,
    sample_rate: int,
    num_frames: int | None = None,
    fps: float = 25.0,
    window: int | None = DEFAULT_WINDOW,
    context: int = DEFAULT_CONTEXT,
) -> Tensor:
    """wav2vec2 features for ``num_frames`` video frames at ``fps`` from any-rate, any-channel audio.

    ``waveform`` is ``[T]``, ``[C, T]`` or ``[B, C, T]`` at ``sample_rate``; it is mixed to mono,
    resampled to 16 kHz with soxr HQ and normalised. ``num_frames`` defaults to
    floor(duration · fps). As the Lip Forcing inference helper does, the clip is encoded at
    max(ceil(duration · fps), num_frames) frames (so audio is never time-stretched) and the
    first ``num_frames`` rows are returned: ``[num_frames, D]``, or ``[B, num_frames, D]`` for
    batched input. Silent audio is valid (it normalises to zeros and encodes as silence).
    """
    mono = prepare_waveform(waveform, sample_rate)
    audio_frames = frames_in(mono.shape[-1], fps)
    if audio_frames < MIN_FRAMES:
        raise ValueError(
            f"waveform: {mono.shape[-1] / SAMPLE_RATE:.3f} s of audio is {audio_frames} frames at {fps} fps; "
            f"at least {MIN_FRAMES} frames ({MIN_FRAMES / fps:.2f} s) expected"
        )
    if num_frames is None:
        num_frames = audio_frames
    elif not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames: expected a positive int (video frame count), got {num_frames!r}")
    seq_len = max(math.ceil(mono.shape[-1] * fps / SAMPLE_RATE - 1e-9), num_frames)
    features = features_at(encoder, normalize(mono), seq_len, fps, window, context)[:, :num_frames]
    return features if waveform.ndim == 3 else features[0]
