"""A small SyncNet for the demo domain, with SyncNet v2's interface so the same metrics score it.

Two streams like SyncNet v2: an audio CNN on 13x20 MFCC windows (0.2 s, syncnet's front end) and
a lip CNN on 5-frame windows of the lower half of the 64x64 face, each with an FC head. Only the
lip CNN's first conv looks across time (kernel 5, no temporal padding), so
:meth:`SmallSyncNet.forward_lip_clip` embeds every stride-1 window of a clip in one pass, exactly
as :class:`~lipforcing_core.syncnet.SyncNetV2` does. Embeddings are L2-normalised, so distances
lie in [0, 2] (the real SyncNet's are unnormalised, LSE-D around 7): compare scores between
models of the same kind only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from ..syncnet.model import LIP_FRAMES, MFCC_WINDOW


@dataclass(frozen=True)
class SmallSyncNetConfig:
    lip_size: int = 64  # frames are resized to lip_size x lip_size before the crop
    crop_top: float = 0.5  # rows above this fraction of the height are dropped (the mouth is below)
    lip_channels: tuple[int, ...] = (32, 48, 64, 96)
    audio_channels: tuple[int, ...] = (32, 48, 64, 96)
    hidden: int = 256
    embed_dim: int = 128


def _halved(n: int, times: int) -> int:
    """Size after ``times`` stride-2, padding-1, kernel-3 convs."""
    for _ in range(max(times, 0)):
        n = (n + 1) // 2
    return n


def _block(conv: nn.Module, bn: type[nn.Module], channels: int) -> list[nn.Module]:
    return [conv, bn(channels), nn.ReLU(inplace=True)]


def _head(in_dim: int, cfg: SmallSyncNetConfig) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, cfg.hidden), nn.BatchNorm1d(cfg.hidden), nn.ReLU(inplace=True),
                         nn.Linear(cfg.hidden, cfg.embed_dim))


class SmallSyncNet(nn.Module):
    """Audio [N,1,13,20] MFCC windows and BGR 0..255 lip clips -> L2-normalised ``embed_dim`` embeddings."""

    def __init__(self, config: SmallSyncNetConfig = SmallSyncNetConfig()):
        super().__init__()
        self.config = config
        self.lip_size = config.lip_size
        self.crop_row = round(config.lip_size * config.crop_top)
        lip: list[nn.Module] = []
        c_in, kt = 3, LIP_FRAMES
        for c in config.lip_channels:  # each conv halves height and width
            lip += _block(nn.Conv3d(c_in, c, (kt, 3, 3), (1, 2, 2), (0, 1, 1)), nn.BatchNorm3d, c)
            c_in, kt = c, 1
        self.netcnnlip = nn.Sequential(*lip)
        aud: list[nn.Module] = []
        c_in = 1
        for i, c in enumerate(config.audio_channels):  # 13x20 -> 13x10 -> 7x5 -> 4x3 (first conv keeps size)
            stride = (1, 1) if i == 0 else (1, 2) if i == 1 else (2, 2)
            aud += _block(nn.Conv2d(c_in, c, 3, stride, 1), nn.BatchNorm2d, c)
            c_in = c
        self.netcnnaud = nn.Sequential(*aud)
        lip_hw = _halved(config.lip_size - self.crop_row, len(config.lip_channels)) * _halved(
            config.lip_size, len(config.lip_channels))
        aud_hw = _halved(13, len(config.audio_channels) - 2) * _halved(MFCC_WINDOW, len(config.audio_channels) - 1)
        self.netfclip = _head(config.lip_channels[-1] * lip_hw, config)
        self.netfcaud = _head(config.audio_channels[-1] * aud_hw, config)

    def forward_aud(self, mfcc_windows: Tensor) -> Tensor:
        """[N, 1, 13, 20] MFCC windows -> [N, embed_dim]."""
        return F.normalize(self.netfcaud(self.netcnnaud(mfcc_windows).flatten(1)), dim=-1)

    def forward_lip_clip(self, clip: Tensor) -> Tensor:
        """[B, 3, T, lip_size, lip_size] BGR 0..255 -> [B, T-4, embed_dim]: every 5-frame window."""
        x = clip[..., self.crop_row:, :] / 127.5 - 1
        feats = self.netcnnlip(x)  # [B, C, T-4, h, w]
        feats = feats.transpose(1, 2).flatten(2)  # [B, T-4, C*h*w]
        return F.normalize(self.netfclip(feats.flatten(0, 1)), dim=-1).unflatten(0, (len(clip), -1))

    def forward_lip(self, clips: Tensor) -> Tensor:
        """[N, 3, 5, lip_size, lip_size] BGR 0..255 windows -> [N, embed_dim]."""
        return self.forward_lip_clip(clips)[:, 0]
