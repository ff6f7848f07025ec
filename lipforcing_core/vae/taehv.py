"""TAEHV tiny video autoencoder for Wan2.1 latents (``taew2_1.pth``) with a streaming decoder.

The layer stacks and parameter names follow madebyollin/taehv's ``TAEHV`` exactly (keys are the
``nn.Sequential`` indices, so parameter-less layers leave gaps). Time is handled two ways:

* parallel: every block runs on all frames at once; a MemBlock's memory is its input shifted
  one step in time;
* sequential/streaming: a depth-first walk over (frame, block) work items, one frame at a time,
  with per-block memory kept in a :class:`TAEHVStream` object — so several streams can share one
  model, and peak memory does not grow with clip length.

The official layout is NTCHW with RGB in [0, 1] (``decode_video``/``encode_video``/``*_step``).
``decode_chunk``/``encode`` speak the Wan VAE convention instead: NCTHW, pixels in [-1, 1].
Decoding T latents gives ``4 T`` raw frames; the first 3 (start-up frames of latent 0) are
dropped, leaving ``1 + 4 (T - 1)`` frames like the Wan VAE.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lipforcing_core.checkpoints import CheckpointError, materialize, read_state_dict


@dataclass(frozen=True)
class TAEHVConfig:
    """The official constructor arguments that matter for Wan2.1 latents (``taew2_1`` defaults)."""

    latent_channels: int = 16
    encoder_time_downscale: tuple[bool, bool, bool] = (True, True, False)
    decoder_time_upscale: tuple[bool, bool, bool] = (False, True, True)
    decoder_space_upscale: tuple[bool, bool, bool] = (True, True, True)


PRESETS: dict[str, TAEHVConfig] = {"taew2_1": TAEHVConfig()}


def conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class Clamp(nn.Module):
    """Soft clamp of the latent to (-3, 3)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x / 3) * 3


class MemBlock(nn.Module):
    """Residual block that also sees its own input from the previous time step (``past``)."""

    def __init__(self, n: int):
        super().__init__()
        self.conv = nn.Sequential(conv(n * 2, n), nn.ReLU(), conv(n, n), nn.ReLU(), conv(n, n))

    def forward(self, x: Tensor, past: Tensor) -> Tensor:
        return F.relu(self.conv(torch.cat([x, past], 1)) + x)


class TPool(nn.Module):
    """Merge ``stride`` consecutive frames (concatenated on channels, earliest first) with a 1x1 conv."""

    def __init__(self, n: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(n * stride, n, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        _, c, h, w = x.shape
        return self.conv(x.reshape(-1, self.stride * c, h, w))


class TGrow(nn.Module):
    """Split each frame into ``stride`` frames: a 1x1 conv to ``stride * C``, channel block j = frame j."""

    def __init__(self, n: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(n, n * stride, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        _, c, h, w = x.shape
        return self.conv(x).reshape(-1, c, h, w)


def build_encoder(cfg: TAEHVConfig) -> nn.Sequential:
    layers: list[nn.Module] = [conv(3, 64), nn.ReLU()]
    for down in cfg.encoder_time_downscale:
        layers += [TPool(64, 2 if down else 1), conv(64, 64, stride=2, bias=False), MemBlock(64), MemBlock(64), MemBlock(64)]
    return nn.Sequential(*layers, conv(64, cfg.latent_channels))


def build_decoder(cfg: TAEHVConfig) -> nn.Sequential:
    n_f = (256, 128, 64, 64)
    layers: list[nn.Module] = [Clamp(), conv(cfg.latent_channels, n_f[0]), nn.ReLU()]
    for i, (up_t, up_s) in enumerate(zip(cfg.decoder_time_upscale, cfg.decoder_space_upscale)):
        layers += [MemBlock(n_f[i]), MemBlock(n_f[i]), MemBlock(n_f[i]), nn.Upsample(scale_factor=2 if up_s else 1),
                   TGrow(n_f[i], 2 if up_t else 1), conv(n_f[i], n_f[i + 1], bias=False)]
    return nn.Sequential(*layers, nn.ReLU(), conv(n_f[3], 3))


# ------------------------------------------------------------------------------------------ time handling


def run_parallel(blocks: nn.Sequential, x: Tensor) -> Tensor:
    """Apply the stack to all frames of ``x`` (NTCHW) at once."""
    n = x.shape[0]
    x = x.flatten(0, 1)
    for block in blocks:
        if isinstance(block, MemBlock):
            frames = x.unflatten(0, (n, -1))
            past = F.pad(frames, (0, 0, 0, 0, 0, 0, 1, 0))[:, :-1]
            x = block(x, past.flatten(0, 1))
        else:
            x = block(x)
    return x.unflatten(0, (n, -1))


@dataclass
class TAEHVStream:
    """Sequential state of one stream through one stack: pending work, per-block memory, counters."""

    queue: deque = field(default_factory=deque)  # (frame [N,C,H,W], index of the next block)
    memory: dict = field(default_factory=dict)  # block index -> past input (MemBlock) or pending frames (TPool)
    frames_in: int = 0
    frames_out: int = 0
    last_input: Tensor | None = None


def feed(stream: TAEHVStream, x: Tensor) -> None:
    """Queue the frames of ``x`` (NTCHW) as new work at block 0."""
    stream.queue.extend((xt, 0) for xt in x.unbind(1))
    stream.frames_in += x.shape[1]
    stream.last_input = x[:, -1:]


def step(blocks: nn.Sequential, stream: TAEHVStream) -> Tensor | None:
    """Advance the depth-first walk until one frame leaves the stack (returned NCHW) or work runs out."""
    while stream.queue:
        xt, i = stream.queue.popleft()
        if i == len(blocks):
            stream.frames_out += 1
            return xt
        block = blocks[i]
        if isinstance(block, MemBlock):
            past = stream.memory.get(i)
            stream.memory[i] = xt
            stream.queue.appendleft((block(xt, torch.zeros_like(xt) if past is None else past), i + 1))
        elif isinstance(block, TPool):
            pending = stream.memory.setdefault(i, [])
            pending.append(xt)
            if len(pending) == block.stride:
                stream.memory[i] = []
                n, c, h, w = xt.shape
                stream.queue.appendleft((block(torch.cat(pending, 1).view(n * block.stride, c, h, w)), i + 1))
        elif isinstance(block, TGrow):
            y = block(xt)
            n = xt.shape[0]
            parts = y.view(n, block.stride * y.shape[1], *y.shape[2:]).chunk(block.stride, 1)
            stream.queue.extendleft((part, i + 1) for part in reversed(parts))
        else:
            stream.queue.appendleft((block(xt), i + 1))
    return None


def run_sequential(blocks: nn.Sequential, x: Tensor) -> Tensor:
    """Apply the stack frame by frame (O(1) memory in T); same maths as :func:`run_parallel`."""
    stream = TAEHVStream()
    feed(stream, x)
    out = []
    while (frame := step(blocks, stream)) is not None:
        out.append(frame)
    return torch.stack(out, 1)


# ------------------------------------------------------------------------------------------ model


class TAEHV(nn.Module):
    """Tiny encoder/decoder between RGB video and Wan2.1 latents (official ``TAEHV`` key names)."""

    def __init__(self, config: TAEHVConfig = PRESETS["taew2_1"]):
        super().__init__()
        self.config = config
        self.encoder = build_encoder(config)
        self.decoder = build_decoder(config)
        self.t_downscale = 2 ** sum(config.encoder_time_downscale)
        self.t_upscale = 2 ** sum(config.decoder_time_upscale)
        self.frames_to_trim = self.t_upscale - 1

    def _check(self, x: Tensor, name: str, channels: int, layout: str, channel_dim: int = 2) -> None:
        if x.ndim != 5 or x.shape[channel_dim] != channels:
            raise ValueError(f"{name} must be a 5-D tensor {layout} with {channels} channels, got shape {tuple(x.shape)}")

    # ---------------------------------------------------------------- official API (NTCHW, [0, 1])

    def decode_video(self, latent: Tensor, parallel: bool = True, trim: bool = True) -> Tensor:
        """``[N, T, 16, h, w]`` latents -> ``[N, 4T - 3, 3, 8h, 8w]`` RGB in [0, 1] (``4T`` if not ``trim``)."""
        self._check(latent, "latent", self.config.latent_channels, "[N, T, C, h, w]")
        x = (run_parallel if parallel else run_sequential)(self.decoder, latent).clamp(0, 1)
        return x[:, self.frames_to_trim:] if trim else x

    def encode_video(self, video: Tensor, parallel: bool = True, pad: str = "end") -> Tensor:
        """``[N, T, 3, H, W]`` RGB in [0, 1] -> ``[N, ceil(T/4), 16, H/8, W/8]`` latents.

        ``pad="end"`` repeats the last frame up to a multiple of 4 (official); ``pad="front"``
        repeats the first frame before the clip (Lip Forcing's wrapper, so latent 0 sees a static
        first frame like the Wan VAE's).
        """
        self._check(video, "video", 3, "[N, T, 3, H, W] in [0, 1]")
        if pad not in ("end", "front"):
            raise ValueError(f"pad must be 'end' or 'front', got {pad!r}")
        n_pad = -video.shape[1] % self.t_downscale
        if n_pad:
            edge = video[:, -1:] if pad == "end" else video[:, :1]
            parts = [video, edge.expand(-1, n_pad, -1, -1, -1)]
            video = torch.cat(parts if pad == "end" else parts[::-1], 1)
        return (run_parallel if parallel else run_sequential)(self.encoder, video)

    # ---------------------------------------------------------------- streaming decode

    def new_decode_stream(self) -> TAEHVStream:
        return TAEHVStream()

    def decode_step(self, stream: TAEHVStream, latent: Tensor | None = None) -> Tensor | None:
        """Feed one latent ``[N, 1, 16, h, w]`` (optional), return the next frame ``[N, 1, 3, H, W]`` or None.

        The first ``frames_to_trim`` raw frames of a stream are swallowed, as the reference does.
        """
        if latent is not None:
            self._check(latent, "latent", self.config.latent_channels, "[N, T, C, h, w]")
            feed(stream, latent)
        while (frame := step(self.decoder, stream)) is not None:
            if stream.frames_out > self.frames_to_trim:
                return frame.clamp(0, 1).unsqueeze(1)
        return None

    def flush_decoder(self, stream: TAEHVStream) -> list[Tensor]:
        """Drain every frame still pending in a decode stream."""
        frames = []
        while (frame := self.decode_step(stream)) is not None:
            frames.append(frame)
        return frames

    def decode_chunk(self, latent: Tensor, stream: TAEHVStream) -> Tensor:
        """Wan-layout streaming decode: ``[B, 16, T, h, w]`` -> all frames now available, ``[B, 3, n, H, W]`` in [-1, 1].

        ``n`` is ``1 + 4 (T - 1)`` on a stream's first call and ``4 T`` afterwards; each latent is
        decoded as soon as it arrives, so nothing is left to flush.
        """
        self._check(latent, "latent", self.config.latent_channels, "[B, C, T, h, w]", channel_dim=1)
        frames = []
        for lt in latent.transpose(1, 2).split(1, 1):
            frames += [self.decode_step(stream, lt)] + self.flush_decoder(stream)
        return torch.cat([f for f in frames if f is not None], 1).mul(2).sub(1).transpose(1, 2)

    def decode(self, latent: Tensor) -> Tensor:
        """Wan-layout full decode (sequential, O(1) memory in T): ``[B, 16, T, h, w]`` -> ``[B, 3, 4T - 3, H, W]`` in [-1, 1]."""
        return self.decode_chunk(latent, self.new_decode_stream())

    # ---------------------------------------------------------------- streaming encode

    def new_encode_stream(self) -> TAEHVStream:
        return TAEHVStream()

    def encode_step(self, stream: TAEHVStream, frame: Tensor | None = None) -> Tensor | None:
        """Feed frames ``[N, t, 3, H, W]`` in [0, 1] (optional); return the next latent ``[N, 1, 16, h, w]`` or None."""
        if frame is not None:
            self._check(frame, "frame", 3, "[N, T, 3, H, W] in [0, 1]")
            feed(stream, frame)
        latent = step(self.encoder, stream)
        return None if latent is None else latent.unsqueeze(1)

    def flush_encoder(self, stream: TAEHVStream) -> list[Tensor]:
        """Pad with copies of the last frame up to a multiple of 4, then drain the remaining latents."""
        latents = []
        for _ in range(-stream.frames_in % self.t_downscale if stream.last_input is not None else 0):
            latents.append(self.encode_step(stream, stream.last_input))
        while (latent := self.encode_step(stream)) is not None:
            latents.append(latent)
        return [x for x in latents if x is not None]

    def encode(self, video: Tensor) -> Tensor:
        """Lip Forcing's encode wrapper: ``[B, 3, T, H, W]`` in [-1, 1] -> ``[B, 16, ceil(T/4), h, w]`` (front-padded)."""
        self._check(video, "video", 3, "[B, 3, T, H, W] in [-1, 1]", channel_dim=1)
        pixels = video.transpose(1, 2).add(1).div(2)
        return self.encode_video(pixels, parallel=False, pad="front").transpose(1, 2)


# ------------------------------------------------------------------------------------------ loading


def taehv_from_state_dict(state: dict, dtype: torch.dtype = torch.float32, device="cpu") -> TAEHV:
    """Build a :class:`TAEHV` on the meta device and assign the checkpoint tensors."""
    if "decoder.1.weight" not in state or "encoder.0.weight" not in state:
        sample = ", ".join(list(state)[:4])
        raise CheckpointError(f"not a TAEHV checkpoint: expected keys 'encoder.0.weight' and 'decoder.1.weight', "
                              f"found {len(state)} keys such as {sample}")
    config = TAEHVConfig(latent_channels=state["decoder.1.weight"].shape[1])
    return materialize(lambda: TAEHV(config), state, what="the TAEHV taew2_1 architecture",
                       dtype=dtype, device=device)


def load_taehv(path: str | Path, dtype: torch.dtype = torch.float32, device="cpu") -> TAEHV:
    """Load ``taew2_1.pth`` / ``taew2_1.safetensors`` (fp16 weights are upcast exactly to ``dtype``)."""
    try:
        return taehv_from_state_dict(read_state_dict(path), dtype, device)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from err
