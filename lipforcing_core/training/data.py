"""Prepared training clips: cached latents, audio features and text embeddings.

One clip is a dict of tensors (docs/design.md §8), stored as one ``.safetensors`` file:

* ``latents`` ``[16, T, H, W]`` - VAE latents of the aligned 25-fps source video;
* ``masked_video`` ``[16, T, H, W]`` - latents of the video with the mouth region greyed out;
* ``ref_sequence`` ``[16, T, H, W]`` - latents of the unmasked reference video (often = latents);
* ``mask`` ``[H, W]`` - mouth *keep* mask on the latent grid (1 = keep, 0 = generate);
* ``audio`` ``[4T-3, 10752]`` - wav2vec2 features per video frame;
* ``text`` ``[L, 4096]`` - UMT5 prompt embedding; optional ``neg_text`` (default zeros);
* optional ``waveform`` ``[samples]`` - 16 kHz audio for the SyncNet reward.

Batches are drawn deterministically from ``(seed, step)`` so that every rank of a ``torchrun``
job can take its slice of the same global batch and a resumed run sees the same data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file

from ..errors import InputError
from ..pipeline import build_y

Clip = dict[str, torch.Tensor]
REQUIRED = ("latents", "masked_video", "ref_sequence", "mask", "audio", "text")


def check_clip(clip: Clip, source: str = "clip") -> Clip:
    """Validate the keys and shapes of one clip; return it with ``neg_text`` filled in."""
    missing = [k for k in REQUIRED if k not in clip]
    if missing:
        raise InputError(f"{source} lacks {missing}; a prepared clip needs {list(REQUIRED)}")
    c, t, h, w = clip["latents"].shape
    for key in ("masked_video", "ref_sequence"):
        if clip[key].shape != clip["latents"].shape:
            raise InputError(f"{source}: {key} {tuple(clip[key].shape)} must match latents {(c, t, h, w)}")
    if clip["mask"].shape != (h, w):
        raise InputError(f"{source}: mask must be the latent grid [{h}, {w}], got {tuple(clip['mask'].shape)}")
    if clip["audio"].ndim != 2 or clip["audio"].shape[0] < 4 * t - 3:
        raise InputError(f"{source}: audio must be [>= {4 * t - 3} frames, dim], got {tuple(clip['audio'].shape)}")
    out = dict(clip)
    out["audio"] = clip["audio"][: 4 * t - 3]
    out.setdefault("neg_text", torch.zeros_like(clip["text"]))
    return out


class ClipFolder(torch.utils.data.Dataset):
    """Every ``*.safetensors`` clip in a folder (sorted by name), read lazily."""

    def __init__(self, folder: str | Path):
        self.files = sorted(Path(folder).glob("*.safetensors"))
        if not self.files:
            raise FileNotFoundError(f"no prepared clips (*.safetensors) in {folder}")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Clip:
        return check_clip(load_file(str(self.files[i])), str(self.files[i]))


class InMemoryClips(torch.utils.data.Dataset):
    """A list of clip dicts (tests, notebooks)."""

    def __init__(self, clips: Sequence[Clip]):
        self.clips = [check_clip(c, f"clip {i}") for i, c in enumerate(clips)]

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> Clip:
        return self.clips[i]


def save_clip(path: str | Path, clip: Clip) -> None:
    """Write one prepared clip (contiguous tensors) to ``path``."""
    save_file({k: v.contiguous() for k, v in check_clip(clip).items()}, str(path))


def batch_indices(step: int, global_batch: int, size: int, seed: int) -> list[int]:
    """Dataset indices of the global batch at ``step``: epochs of seeded permutations."""
    out: list[int] = []
    pos = step * global_batch
    while len(out) < global_batch:
        epoch, offset = divmod(pos, size)
        perm = torch.randperm(size, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        take = perm[offset: offset + global_batch - len(out)].tolist()
        out += take
        pos += len(take)
    return out


def rank_slice(global_batch: int, rank: int, world: int) -> slice:
    """This rank's part of a global batch (equal parts)."""
    if global_batch % world:
        raise InputError(f"batch_size {global_batch} must be divisible by the {world} processes")
    n = global_batch // world
    return slice(rank * n, (rank + 1) * n)


def load_batch(dataset: torch.utils.data.Dataset, step: int, global_batch: int, seed: int,
               rank: int = 0, world: int = 1, device: str | torch.device = "cpu") -> Clip:
    """Stack this rank's clips of the global batch at ``step`` into ``[B, ...]`` tensors."""
    idx = batch_indices(step, global_batch, len(dataset), seed)[rank_slice(global_batch, rank, world)]
    clips = [dataset[i] for i in idx]
    return {k: torch.stack([c[k] for c in clips]).to(device) for k in clips[0]}


def conditioning(batch: Clip) -> torch.Tensor:
    """The 49 conditioning channels ``y``, built as at inference: the reference latent is frame 0
    of the *source* (``ref_sequence``), so dubbing pairs cannot leak the target's first mouth."""
    source = batch["ref_sequence"]
    return build_y(source[:, :, :1], batch["mask"], batch["masked_video"], source)