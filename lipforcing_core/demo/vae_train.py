"""Train the demo-domain Wan VAE (small preset) from rendered clips, and measure it.

Loss per window: L1 + L2 reconstruction (optionally weighted towards the mouth mask) plus a small
KL to N(0, I), Adam with a cosine learning-rate decay. The decoder sees the posterior mean, or with
``sample_posterior`` a reparameterised sample. Windows are ``1 + 4k`` frames so both the first-frame
path and the 4x time grouping are trained; random crops (the network is convolutional apart from the
per-frame attention at the bottleneck) make steps cheap, and whole frames after ``full_frame_from``
let the bottleneck attention learn the full 8x8 grid.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from ..face.mask import load_mouth_mask
from ..vae.wan_vae import TIME_FACTOR, DecodeStream, WanVAE, WanVAEConfig
from .dataset import ClipBank


@dataclass(frozen=True)
class VAETrainConfig:
    """Hyper-parameters of :func:`train_vae` (defaults: the shipped demo VAE)."""

    steps: int = 3000
    batch: int = 4
    frames: int = 5  # 1 + 4k
    crop: int = 32  # side of the random crops of the first phase (multiple of 8)
    full_frame_from: float = 0.8  # fraction of steps after which whole frames are used
    lr: float = 3e-3
    min_lr_fraction: float = 0.05
    kl_weight: float = 1e-6
    mouth_weight: float = 1.0  # loss weight of pixels in the mouth mask (the region the demo regenerates)
    sample_posterior: bool = True  # decode mu + sigma * noise (a VAE); False decodes mu, which is what
    # the pipeline encodes to, so the decoder need not average over the posterior noise
    clips: int = 192  # training clips rendered into the bank
    duration_s: float = 2.0
    size: int = 64
    seed: int = 0
    log_every: int = 25
    max_minutes: float | None = 35.0  # wall-clock budget: the schedule runs on max(step, time) progress


def budgeted_steps(steps: int, max_minutes: float | None, log: Callable[[str], None],
                   name: str) -> Iterator[tuple[int, float, float]]:
    """``(step, progress, minutes)`` for ``steps`` steps or until ``max_minutes`` of wall-clock time pass.

    ``progress`` is the fraction of training done: of the steps, or of the time budget if that runs
    out first. Learning-rate schedules and phase switches follow it, so a run on a slower (or busier)
    CPU still completes its schedule within ``max_minutes``, only with fewer steps.
    """
    start = time.monotonic()
    for step in range(steps):
        minutes = (time.monotonic() - start) / 60
        done = step / steps if max_minutes is None else max(step / steps, minutes / max_minutes)
        if done >= 1:
            log(f"{name}: time budget of {max_minutes} min used up at step {step}")
            return
        yield step, done, minutes


def decode_raw(model: WanVAE, z: Tensor) -> Tensor:
    """Decode unnormalised latents ``[B, z, T', h, w]`` without clamping (the differentiable decode)."""
    stream = DecodeStream()
    return torch.cat([model.decoder(model.conv2(z[:, :, i:i + 1]), stream.cache) for i in range(z.shape[2])], 2)


def vae_loss(model: WanVAE, video: Tensor, kl_weight: float, weight: Tensor | None = None,
             sample: bool = True) -> tuple[Tensor, Tensor]:
    """``(loss, reconstruction)`` for a batch ``[B, 3, 1 + 4k, H, W]`` in [-1, 1]; ``weight [H, W]`` weighs
    the reconstruction error per pixel (mean 1 keeps the loss scale)."""
    mu, log_var = model.encode_moments(video, model.new_encode_stream())
    log_var = log_var.clamp(-30, 20)
    z = mu + torch.randn_like(mu) * (0.5 * log_var).exp() if sample else mu
    recon = decode_raw(model, z)
    kl = 0.5 * (mu.square() + log_var.exp() - 1 - log_var).mean()
    err = recon - video
    if weight is not None:
        weight = weight / weight.mean()
        return (err.abs() * weight).mean() + (err.square() * weight).mean() + kl_weight * kl, recon
    loss = err.abs().mean() + err.square().mean() + kl_weight * kl
    return loss, recon


def _random_crop(video: Tensor, weight: Tensor, side: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    h, w = video.shape[-2:]
    y = int(torch.randint((h - side) // 8 + 1, (), generator=generator)) * 8
    x = int(torch.randint((w - side) // 8 + 1, (), generator=generator)) * 8
    return video[..., y:y + side, x:x + side], weight[y:y + side, x:x + side]


def loss_weight(size: int, mouth_weight: float) -> Tensor:
    """Per-pixel loss weight ``[size, size]``: ``mouth_weight`` inside the LatentSync mouth mask, 1 elsewhere."""
    mouth = torch.from_numpy(load_mouth_mask(size=size) < 0.5).float()
    return 1 + (mouth_weight - 1) * mouth


def motion_map(video: Tensor, threshold: float = 0.1) -> Tensor:
    """``[B, 1, 1, H, W]``: 1 where a pixel of ``[B, 3, T, H, W]`` changes by more than ``threshold`` over time
    (in the mouth mask: the lips and teeth, the pixels lip sync is judged on)."""
    spread = video.amax(2, keepdim=True) - video.amin(2, keepdim=True)
    return (spread.amax(1, keepdim=True) > threshold).float()


def psnr(a: Tensor, b: Tensor, weight: Tensor | None = None) -> float:
    """PSNR in dB of pixels in [-1, 1] (peak 2), optionally over the pixels where ``weight`` is 1."""
    err = (a - b).square()
    if weight is not None:
        err = (err * weight).sum() / (weight.expand_as(err).sum())
    return float(10 * math.log10(4.0 / max(float(err.mean()), 1e-12)))


def train_vae(arch: WanVAEConfig, cfg: VAETrainConfig, log: Callable[[str], None] = print,
              bank: ClipBank | None = None, init: WanVAE | None = None) -> tuple[WanVAE, list[float]]:
    """Train a :class:`WanVAE` of architecture ``arch`` (fresh, or continuing ``init``); returns it
    (eval mode) and the loss per step."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    if bank is None:
        bank = ClipBank.render(cfg.clips, "train", cfg.duration_s, cfg.size, cfg.seed)
        log(f"vae: rendered {len(bank)} training clips of {bank.num_frames} frames")
    model = WanVAE(arch)
    if init is not None:
        model.load_state_dict(init.state_dict())
    model.train().requires_grad_(True)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    full_weight = loss_weight(bank.frames.shape[2], cfg.mouth_weight)
    min_lr = cfg.lr * cfg.min_lr_fraction
    losses = []
    for step, done, minutes in budgeted_steps(cfg.steps, cfg.max_minutes, log, "vae"):
        for group in opt.param_groups:
            group["lr"] = min_lr + (cfg.lr - min_lr) * 0.5 * (1 + math.cos(math.pi * done))
        video, weight = bank.windows(cfg.batch, cfg.frames, gen), full_weight
        if done < cfg.full_frame_from and cfg.crop < video.shape[-1]:
            video, weight = _random_crop(video, weight, cfg.crop, gen)
        loss, recon = vae_loss(model, video, cfg.kl_weight, weight, cfg.sample_posterior)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            log(f"vae step {step} loss {losses[-1]:.4f} psnr {psnr(recon.detach(), video):.2f} dB "
                f"{video.shape[-1]}px {minutes:.1f} min")
    return model.eval().requires_grad_(False), losses


def encodable_frames(num_frames: int) -> int:
    """The longest ``1 + 4k`` prefix of a ``num_frames``-frame clip (what a full-clip encode takes)."""
    return 1 + TIME_FACTOR * ((num_frames - 1) // TIME_FACTOR)


@torch.no_grad()
def latent_statistics(model: WanVAE, bank: ClipBank) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the posterior mean over every latent of every clip in ``bank``."""
    t = encodable_frames(bank.num_frames)
    mus = torch.cat([model.encode(bank.video(i)[None, :, :t], normalize=False) for i in range(len(bank))])
    flat = mus.transpose(0, 1).flatten(1)
    return tuple(flat.mean(1).tolist()), tuple(flat.std(1).tolist())


@torch.no_grad()
def evaluate_vae(model: WanVAE, bank: ClipBank) -> dict[str, float]:
    """Mean PSNR (dB) of full-clip reconstructions: whole frame, inside the LatentSync mouth mask, and on
    the mask's moving pixels (:func:`motion_map`: lips and teeth)."""
    t = encodable_frames(bank.num_frames)
    mouth = torch.from_numpy(load_mouth_mask(size=bank.frames.shape[2]) < 0.5).float()
    face, mouth_psnr, moving = [], [], []
    for i in range(len(bank)):
        video = bank.video(i)[None, :, :t]
        recon = model.decode(model.encode(video))
        face.append(psnr(recon, video))
        mouth_psnr.append(psnr(recon, video, mouth))
        moving.append(psnr(recon, video, motion_map(video) * mouth))
    return {"psnr_face_db": sum(face) / len(face), "psnr_mouth_db": sum(mouth_psnr) / len(mouth_psnr),
            "psnr_moving_mouth_db": sum(moving) / len(moving), "clips": len(bank), "frames_per_clip": t}
