"""Wan2.1 causal 3D video VAE with per-stream feature caches.

The network and its parameter names follow the official ``WanVAE_`` (Wan-Video/Wan2.1
``wan/modules/vae.py``), so ``Wan2.1_VAE.pth`` and ComfyUI's ``wan_2.1_vae.safetensors`` load
with ``strict=True``. The official code runs every clip as a loop of small time chunks
(encode: 1, 4, 4, ... frames; decode: one latent frame at a time) and carries a cache of the
last input frames of every temporal convolution between chunks. Here that cache lives in a
stream object (:class:`EncodeStream`, :class:`DecodeStream`) rather than on the module, so
several streams (e.g. the masked and unmasked source video) can run side by side on one model.
A full-clip call is the same chunk loop on a fresh stream, so chunked == full bit for bit.

Conventions: pixels ``[B, 3, T, H, W]`` in [-1, 1]; latents ``[B, 16, T', H/8, W/8]`` in the
normalised space the DiT and TAEHV use, ``T = 1 + 4 (T' - 1)``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from lipforcing_core.checkpoints import CheckpointError, materialize, read_shapes, read_state_dict, stored_config

# Per-channel statistics of the posterior mean (official WanVAE wrapper `scale`).
LATENT_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
               0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
LATENT_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
              3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)
CACHE_T = 2  # frames of history a 3-tap causal conv needs
TIME_FACTOR, SPACE_FACTOR = 4, 8

Cache = dict  # module -> cached input frames (or None); one per stream


@dataclass(frozen=True)
class WanVAEConfig:
    """Architecture of the Wan2.1 VAE. ``temperal_downsample`` keeps the official spelling."""

    dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    # per-channel posterior-mean statistics defining the normalised latent space (official by default)
    latent_mean: tuple[float, ...] = LATENT_MEAN
    latent_std: tuple[float, ...] = LATENT_STD


PRESETS: dict[str, WanVAEConfig] = {
    "wan2.1": WanVAEConfig(),
    "tiny": WanVAEConfig(dim=16),  # the golden-vector config: same graph, narrower
}


Stats = tuple[tuple[float, ...], tuple[float, ...]]  # (per-channel mean, per-channel std)


def latent_scale(dtype: torch.dtype = torch.float32, device=None, channels: int = 16,
                 stats: Stats = (LATENT_MEAN, LATENT_STD)) -> tuple[Tensor, Tensor]:
    """``(mean, inv_std)`` shaped ``[1, C, 1, 1, 1]``; ``inv_std`` is the float32 reciprocal, as official."""
    if channels != len(stats[0]) or channels != len(stats[1]):
        raise ValueError(f"latent normalisation constants exist for {len(stats[0])} channels, not {channels}")
    mean = torch.tensor(stats[0], dtype=torch.float32)
    inv_std = 1.0 / torch.tensor(stats[1], dtype=torch.float32)
    return (mean.to(device, dtype).view(1, -1, 1, 1, 1), inv_std.to(device, dtype).view(1, -1, 1, 1, 1))


def normalize_latent(mu: Tensor, stats: Stats = (LATENT_MEAN, LATENT_STD)) -> Tensor:
    """Raw posterior mean -> the normalised latent space: ``(mu - mean) * inv_std``."""
    mean, inv_std = latent_scale(mu.dtype, mu.device, mu.shape[1], stats)
    return (mu - mean) * inv_std


def denormalize_latent(latent: Tensor, stats: Stats = (LATENT_MEAN, LATENT_STD)) -> Tensor:
    """Normalised latent -> raw decoder input: ``latent / inv_std + mean`` (divides, like the official code)."""
    mean, inv_std = latent_scale(latent.dtype, latent.device, latent.shape[1], stats)
    return latent / inv_std + mean


# ------------------------------------------------------------------------------------------ layers


def _frames_conv(conv: nn.Conv3d, parts: list[Tensor], padding_hw: tuple[int, int]) -> Tensor:
    """``conv`` (no time padding) over the time-concatenation of ``parts`` as ONE 2D conv.

    Each output frame's ``kt`` input taps are concatenated along channels (``k * C + c``) and
    time goes into the batch. The work is channels-last: inputs are read as ``(B, T, H, W, C)``
    and the result is a ``[B, C, T, H, W]`` view of that memory (``channels_last_3d``), so chained
    convs and per-frame 2D layers need no layout copies. On CPU, oneDNN's channels-last 2D
    kernels are several times faster than its Conv3d for small widths; numerically this differs
    from Conv3d only in summation order.
    """
    frames = [p.permute(0, 2, 3, 4, 1) for p in parts]
    x = torch.cat(frames, 1) if len(frames) > 1 else frames[0]
    b, tp, h, w, c = x.shape
    out, _, kt, kh, kw = conv.weight.shape
    st = conv.stride[0]
    t = (tp - kt) // st + 1
    if kt > 1 or st > 1:
        x = torch.cat([x[:, k:k + st * (t - 1) + 1:st] for k in range(kt)], -1)
    x = x.reshape(b * t, h, w, kt * c).permute(0, 3, 1, 2)
    weight = conv.weight.transpose(1, 2).reshape(out, kt * c, kh, kw).contiguous(memory_format=torch.channels_last)
    y = F.conv2d(x, weight, conv.bias, conv.stride[1:], padding_hw)
    return y.permute(0, 2, 3, 1).reshape(b, t, *y.shape[-2:], out).permute(0, 4, 1, 2, 3)


def _use_frames(conv: FrameConv3d, x: Tensor) -> bool:
    """The stacked-taps 2D path: ``conv.frames_conv`` when set, else automatically on CPU."""
    return x.device.type == "cpu" if conv.frames_conv is None else conv.frames_conv


class FrameConv3d(nn.Conv3d):
    """``nn.Conv3d`` (same parameters) that runs as one 2D conv over frames on CPU (:func:`_frames_conv`).

    ``frames_conv``: ``None`` picks the 2D path on CPU and Conv3d elsewhere; ``True``/``False`` force it.
    Zero padding, ``groups=1`` and no dilation, as every conv of the VAE.
    """

    frames_conv: bool | None = None

    def forward(self, x: Tensor) -> Tensor:
        return _frames_conv(self, [x], self.padding[1:]) if _use_frames(self, x) else super().forward(x)


class CausalConv3d(FrameConv3d):
    """3D conv padded only at the front in time; ``history`` frames replace that zero padding."""

    def __init__(self, in_dim: int, out_dim: int, kernel: tuple[int, int, int] | int):
        super().__init__(in_dim, out_dim, kernel)
        kt, kh, kw = self.kernel_size
        self.pad = (kw // 2, kw // 2, kh // 2, kh // 2, kt - 1, 0)

    def forward(self, x: Tensor, history: Tensor | None = None) -> Tensor:
        if _use_frames(self, x):
            front = self.pad[4] - (0 if history is None else history.shape[2])
            parts = [x] if history is None else [history, x]
            if front > 0:
                b, c, _, h, w = x.shape
                parts.insert(0, x.new_zeros(b, c, front, h, w))
            return _frames_conv(self, parts, (self.pad[2], self.pad[0]))
        pad = list(self.pad)
        if history is not None:
            x = torch.cat([history, x], 2)
            pad[4] -= history.shape[2]
        return nn.Conv3d.forward(self, F.pad(x, pad))  # the official path


def _tail(x: Tensor, previous: Tensor | None) -> Tensor:
    """The last ``CACHE_T`` frames of ``x``, topped up from ``previous`` when ``x`` is shorter."""
    tail = x[:, :, -CACHE_T:].clone()
    if tail.shape[2] < CACHE_T and previous is not None:
        tail = torch.cat([previous[:, :, -1:], tail], 2)
    return tail


def cached_conv(conv: CausalConv3d, x: Tensor, cache: Cache) -> Tensor:
    """Run a 3-tap causal conv on a chunk, using and updating its slot in ``cache``."""
    previous = cache.get(conv)
    cache[conv] = _tail(x, previous)
    return conv(x, previous)


class RMSNorm(nn.Module):
    """L2 normalisation over channels times ``sqrt(C) * gamma`` (official ``RMS_norm``).

    The norm is a float32-accumulated sum of squares rather than ``F.normalize``: the same value
    (up to summation order), but PyTorch's CPU ``linalg.vector_norm`` over the channel dim of a
    video tensor is 8-130x slower than the sum (the narrower, the worse), ~30% of the VAE's CPU time.
    """

    def __init__(self, dim: int, spatial_dims: int):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, *([1] * spatial_dims)))

    def forward(self, x: Tensor) -> Tensor:
        norm = x.square().sum(1, keepdim=True, dtype=torch.float32).sqrt().clamp_min(1e-12)
        return x / norm.to(x.dtype) * (self.scale * self.gamma)


class ResidualBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        # Index 5 held the training-time dropout; the identity keeps the official key indices.
        self.residual = nn.Sequential(
            RMSNorm(in_dim, 3), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3),
            RMSNorm(out_dim, 3), nn.SiLU(), nn.Identity(), CausalConv3d(out_dim, out_dim, 3))
        self.shortcut = FrameConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: Tensor, cache: Cache) -> Tensor:
        h = self.shortcut(x)
        for layer in self.residual:
            x = cached_conv(layer, x, cache) if isinstance(layer, CausalConv3d) else layer(x)
        return x + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over the positions of each frame (no state across time)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim, 2)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor, cache: Cache) -> Tensor:
        b, c, t, h, w = x.shape
        y = self.norm(rearrange(x, "b c t h w -> (b t) c h w"))
        q, k, v = self.to_qkv(y).reshape(b * t, 1, c * 3, h * w).permute(0, 1, 3, 2).contiguous().chunk(3, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v).squeeze(1).permute(0, 2, 1).reshape(b * t, c, h, w)
        return rearrange(self.proj(y), "(b t) c h w -> b c t h w", t=t) + x


def _per_frame(module: nn.Module, x: Tensor) -> Tensor:
    t = x.shape[2]
    return rearrange(module(rearrange(x, "b c t h w -> (b t) c h w")), "(b t) c h w -> b c t h w", t=t)


class _Upsample(nn.Module):
    """Nearest-exact x2 in float32 (the official workaround for bf16 interpolation)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x.float(), scale_factor=2.0, mode="nearest-exact").type_as(x)


class Downsample(nn.Module):
    """Spatial /2 (right/bottom pad + stride-2 conv), optionally followed by a causal time /2."""

    def __init__(self, dim: int, temporal: bool):
        super().__init__()
        self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
        self.time_conv = FrameConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1)) if temporal else None

    def forward(self, x: Tensor, cache: Cache) -> Tensor:
        x = _per_frame(self.resample, x)
        if self.time_conv is None:
            return x
        previous = cache.get(self)
        cache[self] = x[:, :, -1:].clone()
        if previous is None:  # first chunk (one frame): passes through without the time conv
            return x
        return self.time_conv(torch.cat([previous, x], 2))


class Upsample(nn.Module):
    """Optional causal time x2 (a conv to 2C channels, interleaved), then spatial x2 and a conv to C/2."""

    def __init__(self, dim: int, temporal: bool):
        super().__init__()
        self.resample = nn.Sequential(_Upsample(), nn.Conv2d(dim, dim // 2, 3, padding=1))
        self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1)) if temporal else None

    def forward(self, x: Tensor, cache: Cache) -> Tensor:
        if self.time_conv is not None:
            x = self._time_upsample(x, cache)
        return _per_frame(self.resample, x)

    def _time_upsample(self, x: Tensor, cache: Cache) -> Tensor:
        if self not in cache:  # first call: frame 0 is not upsampled in time; later calls see zeros
            cache[self] = None
            return x
        history = cache[self]
        cache[self] = _tail(x, history if history is not None else torch.zeros_like(x[:, :, :1]))
        b, c, t, h, w = x.shape
        x = self.time_conv(x, history).reshape(b, 2, c, t, h, w)
        return torch.stack((x[:, 0], x[:, 1]), 3).reshape(b, c, t * 2, h, w)


class Encoder3d(nn.Module):
    def __init__(self, cfg: WanVAEConfig):
        super().__init__()
        dims = [cfg.dim * u for u in (1, *cfg.dim_mult)]
        self.conv1 = CausalConv3d(3, dims[0], 3)
        blocks: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(itertools.pairwise(dims)):
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResidualBlock(in_dim, out_dim))
                in_dim = out_dim
            if i != len(cfg.dim_mult) - 1:
                blocks.append(Downsample(out_dim, cfg.temperal_downsample[i]))
        self.downsamples = nn.Sequential(*blocks)
        c = dims[-1]
        self.middle = nn.Sequential(ResidualBlock(c, c), AttentionBlock(c), ResidualBlock(c, c))
        self.head = nn.Sequential(RMSNorm(c, 3), nn.SiLU(), CausalConv3d(c, cfg.z_dim * 2, 3))

    def forward(self, x: Tensor, cache: Cache) -> Tensor:
        x = cached_conv(self.conv1, x, cache)
        for block in (*self.downsamples, *self.middle):
            x = block(x, cache)
        return cached_conv(self.head[2], self.head[1](self.head[0](x)), cache)


class Decoder3d(nn.Module):
    def __init__(self, cfg: WanVAEConfig):
        super().__init__()
        dims = [cfg.dim * u for u in (cfg.dim_mult[-1], *cfg.dim_mult[::-1])]
        temporal_up = cfg.temperal_downsample[::-1]
        self.conv1 = CausalConv3d(cfg.z_dim, dims[0], 3)
        c = dims[0]
        self.middle = nn.Sequential(ResidualBlock(c, c), AttentionBlock(c), ResidualBlock(c, c))
        blocks: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(itertools.pairwise(dims)):
            if i > 0:  # the previous upsample halved the channels
                in_dim //= 2
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResidualBlock(in_dim, out_dim))
                in_dim = out_dim
            if i != len(cfg.dim_mult) - 1:
                blocks.append(Upsample(out_dim, temporal_up[i]))
        self.upsamples = nn.Sequential(*blocks)
        self.head = nn.Sequential(RMSNorm(dims[-1], 3), nn.SiLU(), CausalConv3d(dims[-1], 3, 3))

    def forward(self, x: Tensor, cache: Cache) -> Tensor:
        x = cached_conv(self.conv1, x, cache)
        for block in (*self.middle, *self.upsamples):
            x = block(x, cache)
        return cached_conv(self.head[2], self.head[1](self.head[0](x)), cache)


# ------------------------------------------------------------------------------------------ streams


@dataclass
class EncodeStream:
    """Encoder state of one video stream: the per-layer frame cache and the frames consumed."""

    cache: Cache = field(default_factory=dict)
    frames_seen: int = 0


@dataclass
class DecodeStream:
    """Decoder state of one latent stream: the per-layer frame cache and the latents consumed."""

    cache: Cache = field(default_factory=dict)
    latents_seen: int = 0


def _check_channels(x: Tensor, name: str, channels: int, layout: str) -> None:
    if x.ndim != 5 or x.shape[1] != channels:
        raise ValueError(f"{name} must be a 5-D tensor {layout} with {channels} channels, got shape {tuple(x.shape)}")


class WanVAE(nn.Module):
    """The Wan2.1 VAE (official ``WanVAE_`` parameter names) with stream-object caches."""

    def __init__(self, config: WanVAEConfig = PRESETS["wan2.1"]):
        super().__init__()
        self.config = config
        z = config.z_dim
        self.encoder = Encoder3d(config)
        self.conv1 = FrameConv3d(z * 2, z * 2, 1)  # posterior (mu, log_var)
        self.conv2 = FrameConv3d(z, z, 1)
        self.decoder = Decoder3d(config)

    @property
    def latent_stats(self) -> Stats:
        """The ``(mean, std)`` constants of this model's normalised latent space."""
        return self.config.latent_mean, self.config.latent_std

    def use_frames_conv(self, enabled: bool | None) -> WanVAE:
        """Force (``True``) or forbid (``False``) the 2D-over-frames conv path; ``None``: on CPU only."""
        for m in self.modules():
            if isinstance(m, FrameConv3d):
                m.frames_conv = enabled
        return self

    # -------------------------------------------------------------- encode

    def new_encode_stream(self) -> EncodeStream:
        return EncodeStream()

    def encode_chunk(self, video: Tensor, stream: EncodeStream, normalize: bool = True) -> Tensor:
        """Encode the next frames of a stream: ``1 + 4k`` frames on the first call, ``4k`` after.

        Returns ``1 + k`` (first call) or ``k`` latent frames; ``normalize=False`` gives the raw
        posterior mean. Internally runs the official 1, 4, 4, ... sub-chunks.
        """
        mu = self.encode_moments(video, stream)[0]
        return normalize_latent(mu, self.latent_stats) if normalize else mu

    def encode_moments(self, video: Tensor, stream: EncodeStream) -> tuple[Tensor, Tensor]:
        """Posterior ``(mu, log_var)`` of the next chunk of a stream, unnormalised."""
        _check_channels(video, "video", 3, "[B, 3, T, H, W] in [-1, 1]")
        t = video.shape[2]
        first = stream.frames_seen == 0
        if (t - 1 if first else t) % TIME_FACTOR or t == 0:
            expected = "1 + 4k frames on the first call" if first else "a multiple of 4 frames after the first call"
            raise ValueError(f"video chunk has {t} frames; the causal 4x time grouping needs {expected}")
        if video.shape[3] % SPACE_FACTOR or video.shape[4] % SPACE_FACTOR:
            raise ValueError(f"video height and width must be multiples of {SPACE_FACTOR}, got {tuple(video.shape[3:])}")
        bounds = [0, 1] if first else [0]
        bounds += list(range(bounds[-1] + TIME_FACTOR, t + 1, TIME_FACTOR))
        # Heads run per latent frame so results do not depend on how a clip is split into calls.
        moments = [self.conv1(self.encoder(video[:, :, a:b], stream.cache)) for a, b in itertools.pairwise(bounds)]
        stream.frames_seen += t
        return torch.cat(moments, 2).contiguous().chunk(2, dim=1)  # the frames path leaves channels-last

    def encode(self, video: Tensor, normalize: bool = True) -> Tensor:
        """Full-clip encode of ``[B, 3, 1 + 4k, H, W]`` pixels to ``[B, 16, 1 + k, H/8, W/8]`` latents."""
        return self.encode_chunk(video, self.new_encode_stream(), normalize)

    # -------------------------------------------------------------- decode

    def new_decode_stream(self) -> DecodeStream:
        return DecodeStream()

    def decode_chunk(self, latent: Tensor, stream: DecodeStream, clamp: bool = True) -> Tensor:
        """Decode the next latent frames of a stream, one latent at a time as the official loop does.

        Returns ``1 + 4 (n - 1)`` frames on the first call and ``4 n`` afterwards, in [-1, 1] when
        ``clamp`` (the official user-facing output); ``clamp=False`` gives the raw decoder output.
        """
        _check_channels(latent, "latent", self.config.z_dim, f"[B, {self.config.z_dim}, T, h, w]")
        if latent.shape[2] == 0:
            raise ValueError("latent chunk has no frames")
        z = denormalize_latent(latent, self.latent_stats)
        frames = [self.decoder(self.conv2(z[:, :, i:i + 1]), stream.cache) for i in range(z.shape[2])]
        stream.latents_seen += z.shape[2]
        out = torch.cat(frames, 2).contiguous()
        return out.clamp(-1, 1) if clamp else out

    def decode(self, latent: Tensor, clamp: bool = True) -> Tensor:
        """Full-clip decode of ``[B, 16, T', h, w]`` latents to ``[B, 3, 1 + 4 (T' - 1), 8h, 8w]`` pixels."""
        return self.decode_chunk(latent, self.new_decode_stream(), clamp)


# ------------------------------------------------------------------------------------------ loading

_PREFIXES = ("", "model.", "vae.", "first_stage_model.")


def _unwrap(state: dict) -> dict[str, Tensor]:
    """Find the VAE tensors in a flat, nested or prefixed (DiffSynth ``model.``) state dict."""
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
    for prefix in _PREFIXES:
        if f"{prefix}decoder.conv1.weight" in state and f"{prefix}conv2.weight" in state:
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    sample = ", ".join(list(state)[:4])
    hint = (" This looks like a diffusers-format VAE (AutoencoderKLWan); use the original Wan2.1_VAE.pth "
            "or ComfyUI's wan_2.1_vae.safetensors." if any(k.endswith("decoder.conv_in.weight") for k in state) else "")
    raise CheckpointError(
        "not a Wan2.1 VAE checkpoint: expected keys like 'decoder.conv1.weight' and 'conv2.weight' "
        f"(optionally under 'model.'), found {len(state)} keys such as {sample}.{hint}")


def wan_vae_from_state_dict(state: dict, dtype: torch.dtype = torch.float32, device="cpu",
                            config: WanVAEConfig | None = None) -> WanVAE:
    """Build a :class:`WanVAE` on the meta device and assign the checkpoint tensors (one copy in RAM).

    ``config`` defaults to the official graph with the width and latent size read from the tensors.
    """
    state = _unwrap(state)
    if config is None:
        config = WanVAEConfig(dim=state["encoder.conv1.weight"].shape[0], z_dim=state["conv2.weight"].shape[0])
    return materialize(lambda: WanVAE(config), state, what=f"the Wan2.1 VAE architecture ({config})",
                       dtype=dtype, device=device)


def latent_channels(path: str | Path) -> int:
    """Latent channels (``z_dim``) of the Wan VAE file at ``path``, from its tensor shapes alone
    (safetensors: the header only), so a mismatch with the DiT shows before anything is loaded."""
    try:
        return _unwrap(read_shapes(path))["conv2.weight"][0][0]
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from err


def load_wan_vae(path: str | Path, dtype: torch.dtype = torch.float32, device="cpu") -> WanVAE:
    """Load ``Wan2.1_VAE.pth`` / ``wan_2.1_vae.safetensors`` (width inferred, so tiny checkpoints load too),
    or a file whose safetensors metadata holds its ``config`` (the bundled demo VAE)."""
    try:
        return wan_vae_from_state_dict(read_state_dict(path), dtype, device, stored_config(path, WanVAEConfig))
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from err
