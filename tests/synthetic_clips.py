"""Random training clips with the right shapes, for the trainers' smoke tests and dry runs."""

from __future__ import annotations

import torch

from lipforcing_core.config import TEXT_DIM
from lipforcing_core.training.data import Clip


def random_clip(frames: int = 6, hw: tuple[int, int] = (4, 4), text_len: int = 8, seed: int = 0,
                audio_dim: int = 10752, text_dim: int = TEXT_DIM) -> Clip:
    """A synthetic clip with the right shapes (smoke tests and dry runs of the trainers)."""
    g = torch.Generator().manual_seed(seed)
    h, w = hw
    lat = torch.randn(16, frames, h, w, generator=g)
    mask = torch.ones(h, w)
    mask[h // 2:, w // 4: w - w // 4] = 0
    return dict(latents=lat, masked_video=lat * mask, ref_sequence=lat.clone(), mask=mask,
                audio=torch.randn(4 * frames - 3, audio_dim, generator=g),
                text=torch.randn(text_len, text_dim, generator=g))
