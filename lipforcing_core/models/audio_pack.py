"""OmniAvatar's AudioPack: wav2vec2 features per video frame -> one vector per latent frame."""

from __future__ import annotations

import torch
from torch import nn


class AudioPack(nn.Module):
    """Groups 4 video frames of audio features per latent frame, then Linear + LayerNorm.

    Input ``[B, V, audio_dim]`` with ``V = 4T - 3`` rows (one per 25-fps video frame). Row 0 is
    repeated three times in front so that latent frame 0 sees ``A[0]`` four times and latent
    frame j sees ``A[4j-3 .. 4j]``; each group is concatenated time-major. Output ``[B, T, hidden]``.
    """

    def __init__(self, audio_dim: int, frames_per_latent: int, hidden: int):
        super().__init__()
        self.frames_per_latent = frames_per_latent
        self.proj = nn.Linear(audio_dim * frames_per_latent, hidden)
        self.norm_out = nn.LayerNorm(hidden)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        group = self.frames_per_latent
        if audio.ndim != 3 or audio.shape[-1] * group != self.proj.in_features:
            raise ValueError(f"audio features must be [B, V, {self.proj.in_features // group}], "
                             f"got {tuple(audio.shape)}")
        padded = torch.cat([audio[:, :1].expand(-1, group - 1, -1), audio], dim=1)
        if padded.shape[1] % group:
            raise ValueError(f"audio has {audio.shape[1]} video frames; expected {group}*T-{group - 1} "
                             f"for T latent frames (e.g. {group * 3 - group + 1} for T=3)")
        packed = padded.reshape(padded.shape[0], padded.shape[1] // group, -1)
        return self.norm_out(self.proj(packed))
