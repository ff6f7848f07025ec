"""Per-video-frame wav2vec2 features, the OmniAvatar / Lip Forcing recipe.

16 kHz mono → normalise over the whole clip → zero-pad to whole video frames → CNN features →
linear interpolation (align_corners=True) to the video frame count → feature projection →
transformer → per frame ``[last_hidden_state, hidden_states[0..L]]`` (14 × 768 = 10752 for
base-960h).

Long clips: the memory of a one-shot pass is dominated by the CNN, whose first layers run at
3.2 kHz with 512 channels: about 16 MB per second of audio in float32 (measured on CPU with a
base-size model: 2.9 GB above the model for 180 s; 0.49 GB with the default chunk, of which
0.18 GB is the output itself).
With ``chunk`` set, the CNN runs on overlapping sample slices of ``chunk`` video frames, with
the layer-0 GroupNorm statistics gathered over the whole clip first, so the result is the
whole-clip result up to float rounding (``CHUNK_DEVIATION``). The transformer always sees the
whole clip, as in the official code: torch's SDPA kernels keep attention memory linear in the
frame count, and its activations cost well under 1 MB per second of audio. Truncated
attention windows were measured and rejected: with 100 frames of context either side they
changed the golden tiny model's features by up to 2.2 (of 4.9).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lipforcing_core.audio.io import SAMPLE_RATE, prepare_waveform
from lipforcing_core.audio.wav2vec2 import AudioEncoder
from lipforcing_core.config import FPS
from lipforcing_core.errors import InputError

NORM_EPS = 1e-7
MIN_FRAMES = 9  # one generation chunk of the student: shorter audio is rejected as a likely mistake
DEFAULT_CHUNK = 250  # video frames (10 s at 25 fps) of audio per CNN chunk
# Bound on max |chunked - one-shot| feature difference (float rounding of the GroupNorm
# statistics). Measured: 5e-6 with the golden tiny model on the 19.8 s real clip (chunk 25),
# 4e-6 with a random base-size model on 180 s (chunk 250); features reach about 5.
CHUNK_DEVIATION = 1e-4


def normalize(x: Tensor) -> Tensor:
    """HF Wav2Vec2FeatureExtractor: zero mean, unit (population) variance per clip, in float32."""
    x = x.float()
    mean = x.mean(-1, keepdim=True)
    var = (x - mean).square().mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + NORM_EPS)


def check_duration(num_samples: int, sample_rate: int, fps: float = 25.0, name: str = "") -> int:
    """Whole video frames covered by the audio; an :class:`~lipforcing_core.errors.InputError` when
    that is less than one generation chunk (:data:`MIN_FRAMES`)."""
    frames = frames_in(num_samples, fps, sample_rate)
    if frames < MIN_FRAMES:
        raise InputError(f"{name}{num_samples / sample_rate:.3f} s of audio is {frames} frames at {fps:g} fps; "
                         f"at least {MIN_FRAMES} frames ({MIN_FRAMES / fps:.2f} s, one generation chunk) expected")
    return frames


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
    fps: float = FPS,
    chunk: int | None = None,
) -> Tensor:
    """Features ``[B, seq_len, D]`` of normalised ``[B, N]`` input encoded at exactly ``seq_len`` frames.

    The input is zero-padded (never trimmed) to ``seq_len`` whole frames; the CNN features are
    interpolated to ``seq_len`` frames over the whole padded clip (the official behaviour).
    """
    pad = samples_for(seq_len, fps) - input_values.shape[-1]
    x = torch.nn.functional.pad(input_values, (0, max(pad, 0))).to(encoder.device, encoder.dtype)
    cnn_chunk = None if chunk is None else max(1, samples_for(chunk, fps) // encoder.config.hop)
    cnn = encoder.cnn_features(x, cnn_chunk)
    cnn = torch.nn.functional.interpolate(cnn.transpose(1, 2), size=seq_len, mode="linear", align_corners=True)
    x = encoder.project(cnn.transpose(1, 2))
    hidden = x.shape[-1]
    out = x.new_empty(*x.shape[:2], encoder.config.feature_dim)
    for i, state in enumerate(encoder.hidden_states(x), start=1):  # written in place: no stacked copy
        out[..., i * hidden : (i + 1) * hidden] = state
    out[..., :hidden] = state  # last_hidden_state leads the concatenation
    return out


@torch.no_grad()  # not inference_mode: training code may feed the result into autograd
def encode_audio(
    encoder: AudioEncoder,
    waveform: Tensor,
    sample_rate: int,
    num_frames: int | None = None,
    fps: float = FPS,
    chunk: int | None = DEFAULT_CHUNK,
) -> Tensor:
    """wav2vec2 features for ``num_frames`` video frames at ``fps`` from any-rate, any-channel audio.

    ``encoder`` is a wav2vec2 model, or any module with ``frame_features(mono_16k [B, N], num_frames,
    fps) -> [B, num_frames, D]`` (the demo model's :class:`~lipforcing_core.demo.LogMelFeatures`).

    ``waveform`` is ``[T]``, ``[C, T]`` or ``[B, C, T]`` at ``sample_rate``; it is mixed to mono,
    resampled to 16 kHz with soxr HQ and normalised. ``num_frames`` defaults to
    floor(duration · fps). As the Lip Forcing inference helper does, the clip is encoded at
    max(ceil(duration · fps), num_frames) frames (so audio is never time-stretched) and the
    first ``num_frames`` rows are returned: ``[num_frames, D]``, or ``[B, num_frames, D]`` for
    batched input. ``chunk`` bounds the CNN's memory (see the module docstring); ``None``
    runs it in one pass. Silent audio is valid (it normalises to zeros and encodes as silence).
    """
    if not fps > 0:
        raise ValueError(f"fps: expected a positive video frame rate, got {fps!r}")
    mono = prepare_waveform(waveform, sample_rate)
    audio_frames = check_duration(mono.shape[-1], SAMPLE_RATE, fps, "waveform: ")
    if num_frames is None:
        num_frames = audio_frames
    elif not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames: expected a positive int (video frame count), got {num_frames!r}")
    if hasattr(encoder, "frame_features"):  # a download-free front end such as the demo's log-mel
        features = encoder.frame_features(mono, num_frames, fps)
    else:
        seq_len = max(math.ceil(mono.shape[-1] * fps / SAMPLE_RATE - 1e-9), num_frames)
        features = features_at(encoder, normalize(mono), seq_len, fps, chunk)[:, :num_frames]
    return features if waveform.ndim == 3 else features[0]
