"""Dubbing in the demo domain: one identity, two utterances, and the exact ground truth.

A :class:`DubbingPair` is what a user of the real system has (a video of someone speaking, and new
speech) plus what they never have: the rendering of the same person, with the same head motion
and blinks, actually saying the new speech. :func:`dub` runs the shipped streaming pipeline on it
exactly as ``sync`` does on a real video (encode two streams, two denoising steps per chunk, cache
write, decode, mouth-only composite), timing it chunk by chunk.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..audio.io import SAMPLE_RATE
from ..config import FPS
from ..pipeline import LipSyncPipeline, composite_mouth, generation_length, pingpong_indices, pixel_mask
from .constants import DEMO_SIZE
from .dataset import clip_seeds
from .synthetic import make_clip


@dataclass(frozen=True)
class DubbingPair:
    """One identity (and head motion) saying a source and a target utterance, rendered frame-exactly."""

    source: Tensor  # [T, H, W, 3] float32 0..1: the video to dub
    target: Tensor  # [T, H, W, 3]: the same face saying the target utterance (the ground truth)
    source_audio: Tensor  # [T * 640] float32 at 16 kHz
    target_audio: Tensor  # [T * 640]: the speech to dub to
    seeds: tuple[int, int, int]  # identity, source utterance, target utterance

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    def window(self, start: int, frames: int) -> DubbingPair:
        """Frames ``start .. start + frames`` and their audio samples."""
        spf = SAMPLE_RATE // FPS
        if start < 0 or start + frames > len(self.source):
            raise ValueError(f"window {start}..{start + frames} is outside the pair's {len(self.source)} frames")
        a = slice(start * spf, (start + frames) * spf)
        return DubbingPair(self.source[start:start + frames], self.target[start:start + frames],
                           self.source_audio[a], self.target_audio[a], self.seeds)


def dubbing_pair(identity_seed: int, source_seed: int, target_seed: int, duration_s: float = 3.0,
                 size: int = DEMO_SIZE) -> DubbingPair:
    """Render ``identity_seed`` saying utterance ``source_seed`` and, identically moving, ``target_seed``."""
    if source_seed == target_seed:
        raise ValueError("source_seed and target_seed are the same utterance: nothing to dub")
    source = make_clip(identity_seed, source_seed, duration_s, size, sample_rate=SAMPLE_RATE)
    target = make_clip(identity_seed, target_seed, duration_s, size, sample_rate=SAMPLE_RATE)
    return DubbingPair(source.frames, target.frames, source.audio, target.audio,
                       (identity_seed, source_seed, target_seed))


def heldout_pairs(count: int, duration_s: float = 3.0, size: int = DEMO_SIZE, seed: int = 0) -> list[DubbingPair]:
    """``count`` dubbing pairs whose identities and utterances were never used in training."""
    targets = clip_seeds(count, "heldout", seed)
    sources = clip_seeds(count, "heldout", seed + 1)
    return [dubbing_pair(ident, src, tgt, duration_s, size)
            for (ident, tgt), (_, src) in zip(targets, sources, strict=True)]


@dataclass
class DubResult:
    """Composited frames ``[n, H, W, 3]`` uint8 and how long they took."""

    frames: np.ndarray
    seconds: float
    ttff_s: float  # time to the first composited chunk
    chunk_s: list[float]

    @property
    def fps(self) -> float:
        return len(self.frames) / self.seconds


def to_uint8(frames: Tensor | np.ndarray) -> np.ndarray:
    """Frames in 0..1 (float) or uint8 -> uint8 ``[T, H, W, 3]`` as a video file would hold them."""
    if isinstance(frames, np.ndarray) and frames.dtype == np.uint8:
        return frames
    return (torch.as_tensor(frames).float() * 255).round().clamp(0, 255).to(torch.uint8).numpy()


@torch.no_grad()
def dub(pipe: LipSyncPipeline, source: Tensor | np.ndarray, features: Tensor, keep: Tensor | np.ndarray, *,
        seed: int = 0, on_chunk: Callable[[int, int], None] | None = None) -> DubResult:
    """Stream ``source`` frames (uint8 or 0..1) driven by per-frame ``features``; composite each chunk.

    ``keep`` is the mouth keep-mask (1 = keep) at frame size; ``on_chunk(done, total)`` is called
    after every chunk (progress bars).
    """
    n = generation_length(len(features), pipe.sampler.chunk_size)[1]
    frames = to_uint8(source)
    frames = frames[pingpong_indices(len(frames), n)]
    keep_px = pixel_mask(keep, frames.shape[1:3])
    info: dict = {}
    out, chunk_s = [], []
    began = last = time.perf_counter()
    for chunk in pipe.stream(frames, features, keep, seed=seed, info=info):
        s = slice(chunk.frame_start, chunk.frame_start + chunk.frames.shape[2])
        out.append(composite_mouth(chunk.frames, frames[s], keep_px))
        now = time.perf_counter()
        chunk_s.append(now - last)
        last = now
        if on_chunk is not None:
            on_chunk(len(chunk_s), info["latent_frames"] // pipe.sampler.chunk_size)
    return DubResult(np.concatenate(out), last - began, chunk_s[0], chunk_s)
