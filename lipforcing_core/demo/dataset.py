"""Training data for the demo models: a bank of rendered clips and random windows cut from it.

Rendering is cheap (hundreds of frames per second at 64 px) but not free, so a trainer renders a
bank of clips once and samples many windows from it. Seeds split the domain: training clips use
identity/utterance seeds below :data:`HELDOUT_BASE`, evaluation clips use seeds from it upwards, so
held-out numbers are measured on faces and sentences never seen in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .constants import DEMO_SIZE, HELDOUT_BASE
from .synthetic import make_clip


def clip_seeds(count: int, split: str, seed: int = 0) -> list[tuple[int, int]]:
    """``count`` distinct (identity_seed, utterance_seed) pairs of ``split`` ("train" or "heldout")."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    g = torch.Generator().manual_seed(seed)
    base = 0 if split == "train" else HELDOUT_BASE
    ids = torch.randperm(HELDOUT_BASE, generator=g)[:count] + base
    utts = torch.randperm(HELDOUT_BASE, generator=g)[:count] + base
    return list(zip(ids.tolist(), utts.tolist(), strict=True))


@dataclass
class ClipBank:
    """Rendered clips of equal length: ``frames`` [N,T,H,W,3] uint8, ``audio`` [N,L] float32 at 16 kHz."""

    frames: Tensor
    audio: Tensor
    seeds: list[tuple[int, int]]

    @classmethod
    def render(cls, count: int, split: str = "train", duration_s: float = 2.0, size: int = DEMO_SIZE,
               seed: int = 0) -> ClipBank:
        """Render ``count`` clips with seeds from :func:`clip_seeds`."""
        seeds = clip_seeds(count, split, seed)
        clips = [make_clip(i, u, duration_s, size) for i, u in seeds]
        frames = torch.stack([(c.frames * 255).round().to(torch.uint8) for c in clips])
        return cls(frames, torch.stack([c.audio for c in clips]), seeds)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def num_frames(self) -> int:
        return self.frames.shape[1]

    def video(self, index: int | Tensor) -> Tensor:
        """Clip(s) as float pixels in [-1, 1], ``[..., 3, T, H, W]`` (the VAE layout)."""
        return self.frames[index].float().div(127.5).sub(1).movedim(-1, -4)

    def windows(self, batch: int, length: int, generator: torch.Generator) -> Tensor:
        """``batch`` random ``length``-frame windows as ``[batch, 3, length, H, W]`` in [-1, 1]."""
        if length > self.num_frames:
            raise ValueError(f"window of {length} frames is longer than the bank's {self.num_frames}-frame clips")
        idx = torch.randint(len(self), (batch,), generator=generator)
        start = torch.randint(self.num_frames - length + 1, (batch,), generator=generator)
        frames = torch.stack([self.frames[i, s:s + length] for i, s in zip(idx.tolist(), start.tolist(), strict=True)])
        return frames.float().div(127.5).sub(1).permute(0, 4, 1, 2, 3)
