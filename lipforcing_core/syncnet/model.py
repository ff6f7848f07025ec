"""SyncNet v2 (syncnet_python's "S" model): an audio CNN on MFCC windows and a lip CNN on 5-frame
BGR clips, each followed by an FC head, both producing 1024-d embeddings whose L2 distance measures
audio-visual sync. Parameter names follow ``syncnet_v2.model`` so the released file loads strictly.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..checkpoints import CheckpointError, read_state_dict
from ..registry import find_loader

EMBED_DIM = 1024
LIP_SIZE = 224  # the lip CNN only works at 224x224 (its last conv must see a 6x6 map)
LIP_FRAMES = 5  # frames per lip window
MFCC_WINDOW = 20  # MFCC columns per audio window (0.2 s)


def _conv_bn(conv: nn.Module, channels: int, bn: type[nn.Module]) -> list[nn.Module]:
    return [conv, bn(channels), nn.ReLU(inplace=True)]


def _audio_cnn() -> nn.Sequential:
    c2, b2 = nn.Conv2d, nn.BatchNorm2d
    return nn.Sequential(
        *_conv_bn(c2(1, 64, 3, padding=1), 64, b2), nn.MaxPool2d(1, 1),
        *_conv_bn(c2(64, 192, 3, padding=1), 192, b2), nn.MaxPool2d(3, (1, 2)),
        *_conv_bn(c2(192, 384, 3, padding=1), 384, b2),
        *_conv_bn(c2(384, 256, 3, padding=1), 256, b2),
        *_conv_bn(c2(256, 256, 3, padding=1), 256, b2), nn.MaxPool2d(3, 2),
        *_conv_bn(c2(256, 512, (5, 4)), 512, b2),
    )


def _lip_cnn() -> nn.Sequential:
    c3, b3 = nn.Conv3d, nn.BatchNorm3d
    return nn.Sequential(
        *_conv_bn(c3(3, 96, (5, 7, 7), (1, 2, 2)), 96, b3), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
        *_conv_bn(c3(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), 256, b3),
        nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
        *_conv_bn(c3(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, b3),
        *_conv_bn(c3(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, b3),
        *_conv_bn(c3(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, b3), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
        *_conv_bn(c3(256, 512, (1, 6, 6)), 512, b3),
    )


def _fc_head() -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Linear(512, EMBED_DIM))


class SyncNetV2(nn.Module):
    """The two-stream SyncNet. Inputs are raw: MFCC values, and BGR pixels in 0..255."""

    lip_size = LIP_SIZE  # side of the square BGR frames forward_lip_clip takes

    def __init__(self) -> None:
        super().__init__()
        self.netcnnaud = _audio_cnn()
        self.netfcaud = _fc_head()
        self.netcnnlip = _lip_cnn()
        self.netfclip = _fc_head()

    def forward_aud(self, mfcc_windows: torch.Tensor) -> torch.Tensor:
        """[N, 1, 13, 20] MFCC windows -> [N, 1024] audio embeddings."""
        return self.netfcaud(self.netcnnaud(mfcc_windows).flatten(1))

    def forward_lip(self, clips: torch.Tensor) -> torch.Tensor:
        """[N, 3, 5, 224, 224] BGR 0..255 windows -> [N, 1024] lip embeddings."""
        return self.netfclip(self.netcnnlip(clips).flatten(1))

    def forward_lip_clip(self, clip: torch.Tensor) -> torch.Tensor:
        """[B, 3, T, 224, 224] -> [B, T-4, 1024]: every stride-1 5-frame window of the clip at once.

        Only the first conv looks across time (kernel 5, no temporal padding); every later layer
        has temporal kernel 1, so running the CNN on the whole clip gives the per-window features
        (same arithmetic) without materialising T-4 overlapping windows, 5x the input's memory.
        """
        feats = self.netcnnlip(clip)  # [B, 512, T-4, 1, 1]
        return self.netfclip(feats.flatten(2).transpose(1, 2).flatten(0, 1)).unflatten(0, (len(clip), -1))


def load_syncnet(path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """Load ``syncnet_v2.model`` (torch pickle, read with weights_only) or a safetensors copy.

    Returns the float32 network in eval mode with gradients disabled (the float16 weights of some
    copies are upcast exactly). ``num_batches_tracked`` buffers may be
    present or absent in the file. A safetensors file whose metadata ``config`` describes another
    SyncNet registered with :func:`~lipforcing_core.registry.register_loader` (the bundled demo
    SyncNet registers itself) loads as that network, which the same metrics score. Raises
    :class:`CheckpointError` for any other file.
    """
    load = find_loader("syncnet", path)
    if load is not None:
        return load(path).to(device)
    state = read_state_dict(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a SyncNet v2 state dict (expected a flat mapping of tensors)")
    with torch.device("meta"):
        model = SyncNetV2()
    expected = model.state_dict()
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    for key, ref in expected.items():  # older checkpoints predate num_batches_tracked
        if key.endswith("num_batches_tracked"):
            state.setdefault(key, torch.zeros((), dtype=ref.dtype))
    missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    if missing or unexpected:
        raise CheckpointError(
            f"{path} is not a SyncNet v2 checkpoint (syncnet_v2.model): "
            f"missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    bad = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items() if state[k].shape != v.shape]
    if bad:
        raise CheckpointError(f"{path}: SyncNet v2 tensor shapes do not match: {bad[:5]}")
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval().requires_grad_(False)
