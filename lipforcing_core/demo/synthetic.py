"""Procedural talking-face clips: a cartoon identity speaking a synthetic utterance, in sync.

The clip's frame ``k`` shows the mouth at the middle of its 1/fps interval, ``(k + ½)/fps`` s, the
same audio span that the per-frame audio features of frame ``k`` summarise (samples
``[k·sr/fps, (k+1)·sr/fps)``). Everything is deterministic in the seeds::

    clip = make_clip(identity_seed=3, utterance_seed=7, duration_s=2.0, size=64)
    clip.frames  # [50, 64, 64, 3] float32 in 0..1
    clip.audio   # [32000] float32, 16 kHz

Rendering the same identity and motion seed with another utterance changes only the mouth and jaw,
which gives the exact ground truth for dubbing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..audio.io import SAMPLE_RATE
from ..config import FPS
from .constants import DEMO_SIZE
from .face_render import HeadMotion, Identity, render_frames
from .phonemes import Utterance, mouth_trace
from .speech import synthesize_speech


@dataclass(frozen=True)
class Clip:
    """A rendered talking-face clip with its audio and the mouth parameters that drove it."""

    frames: Tensor  # [T,H,W,3] float32 0..1
    audio: Tensor  # [T · sample_rate / fps] float32
    sample_rate: int
    fps: float
    mouth_params: Tensor  # [T,4] (open, width, round, teeth)
    identity: Identity
    utterance: Utterance


def num_frames(duration_s: float, fps: float = FPS) -> int:
    """Video frames covering ``duration_s``: ``floor(duration_s · fps)`` (the wav2vec2 feature rule)."""
    return math.floor(duration_s * fps + 1e-9)


def frame_times(count: int, fps: float = FPS) -> Tensor:
    """Mid-interval times ``(k + ½)/fps`` of ``count`` frames, in seconds."""
    return (torch.arange(count, dtype=torch.float64) + 0.5) / fps


def render_face(identity: Identity, utterance: Utterance, fps: float = FPS, size: int = DEMO_SIZE,
                motion_seed: int | None = None) -> Tensor:
    """Frames ``[floor(duration·fps), size, size, 3]`` float32 of ``identity`` saying ``utterance``.

    Head motion and blinks come from ``motion_seed`` (default: the identity's seed), never from
    the utterance.
    """
    count = num_frames(utterance.duration_s, fps)
    motion = HeadMotion.sample(identity.seed if motion_seed is None else motion_seed, count, fps)
    return render_frames(identity, mouth_trace(utterance, frame_times(count, fps)), motion, size)


def make_clip(identity_seed: int, utterance_seed: int, duration_s: float = 2.0, size: int = 64,
              fps: float = FPS, sample_rate: int = SAMPLE_RATE, motion_seed: int | None = None) -> Clip:
    """A clip of ``Identity.sample(identity_seed)`` saying ``Utterance.sample(utterance_seed, duration_s)``.

    The audio is cut to exactly ``T · sample_rate / fps`` samples for the clip's ``T`` frames.
    """
    if (sample_rate / fps) % 1:
        raise ValueError(f"sample_rate/fps must be a whole number of samples per frame, got {sample_rate}/{fps}")
    identity = Identity.sample(identity_seed)
    utterance = Utterance.sample(utterance_seed, duration_s)
    frames = render_face(identity, utterance, fps, size, motion_seed)
    count = frames.shape[0]
    mouth = mouth_trace(utterance, frame_times(count, fps))
    audio = synthesize_speech(utterance, sample_rate)[: count * int(sample_rate / fps)]
    return Clip(frames, audio, sample_rate, fps, mouth, identity, utterance)
