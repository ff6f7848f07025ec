"""Train the demo SyncNet contrastively on rendered clips, and measure it with the SyncNet metrics.

Each step embeds every 5-frame lip window and every 0.2 s MFCC window of a batch of clips through
the same preprocessing the metrics use (:func:`~lipforcing_core.syncnet.metrics.lip_embeddings`,
:func:`~lipforcing_core.syncnet.metrics.audio_embeddings`). The loss is a symmetric InfoNCE over
all lip/audio window pairs of the batch: the positive of lip window ``v`` is audio window ``v`` of
the same clip; the negatives are the same clip's audio at every other offset (the hard ones, which
teach the offset) and every window of the other clips.

With a VAE given, each sampled clip is shown, with probability ``vae_view``, as the demo VAE
reconstructs it. Generated mouths only ever reach the SyncNet through that VAE (the metrics on the
pipeline's output, the stage-2 reward on decoded frames); a SyncNet trained on pristine renderings
alone keys on detail the VAE does not keep and reads even the VAE's reconstruction of the ground
truth as out of sync. It is the demo's counterpart of SyncNet v2 learning from compressed broadcast video.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..audio.mfcc import mfcc
from ..syncnet.metrics import (
    SAMPLES_PER_FRAME,
    audio_embeddings,
    evaluate_sync,
    lip_embeddings,
)
from ..syncnet.model import LIP_FRAMES, MFCC_WINDOW
from .dataset import ClipBank
from .sync_model import SmallSyncNet, SmallSyncNetConfig
from .vae_train import budgeted_steps, encodable_frames


@dataclass(frozen=True)
class SyncTrainConfig:
    """Hyper-parameters of :func:`train_syncnet` (defaults: the shipped demo SyncNet)."""

    steps: int = 12000
    batch: int = 8  # clips per step
    window_frames: int = 30  # frames of each clip used per step (random start)
    lr: float = 1e-3
    temperature: float = 0.07
    clips: int = 320
    duration_s: float = 2.0
    eval_duration_s: float = 3.0
    seed: int = 0
    log_every: int = 25
    max_minutes: float | None = 25.0  # wall-clock budget (see vae_train.budgeted_steps)
    vae_view: float = 0.5  # probability that a training clip is seen through the VAE (when one is given)


def _window_batch(views: list[Tensor], coeffs: Tensor, cfg: SyncTrainConfig,
                  gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random clips and start frames -> (frames [B,F,3,H,W] 0..1, MFCC [B,13,4(F-5)+20]) aligned at frame 0.

    ``views`` holds the clips' frames ``[N,T,H,W,3]`` as rendered and, optionally, as the VAE
    reconstructs them; each clip of the batch comes from the second with probability ``cfg.vae_view``.
    """
    n_win = cfg.window_frames - LIP_FRAMES + 1
    cols = 4 * (n_win - 1) + MFCC_WINDOW
    num_frames = views[0].shape[1]
    last_start = min(num_frames - cfg.window_frames, (coeffs.shape[-1] - cols) // 4)
    if last_start < 0:
        raise ValueError(f"clips of {num_frames} frames are shorter than window_frames = {cfg.window_frames}")
    idx = torch.randint(len(coeffs), (cfg.batch,), generator=gen).tolist()
    starts = torch.randint(last_start + 1, (cfg.batch,), generator=gen).tolist()
    seen = (torch.rand(cfg.batch, generator=gen) < cfg.vae_view).long().tolist() if len(views) > 1 else [0] * cfg.batch
    frames = torch.stack([views[v][i, s:s + cfg.window_frames] for v, i, s in zip(seen, idx, starts, strict=True)])
    mf = torch.stack([coeffs[i, :, 4 * s:4 * s + cols] for i, s in zip(idx, starts, strict=True)])
    return frames.permute(0, 1, 4, 2, 3).float() / 255, mf


@torch.no_grad()
def vae_view(vae: torch.nn.Module, bank: ClipBank, batch: int = 16) -> ClipBank:
    """The bank as ``vae`` reconstructs it (full-clip encode and decode of its first 1 + 4k frames)."""
    t = encodable_frames(bank.num_frames)
    decoded = [vae.decode(vae.encode(bank.video(slice(i, i + batch))[:, :, :t])) for i in range(0, len(bank), batch)]
    frames = torch.cat(decoded).movedim(1, -1).add(1).mul(127.5).round().to(torch.uint8)
    return ClipBank(frames, bank.audio, bank.seeds)


def infonce_loss(lip: Tensor, aud: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE over [B, N, D] aligned lip/audio embeddings (positives: same clip and window)."""
    lip, aud = lip.flatten(0, 1), aud.flatten(0, 1)
    logits = lip @ aud.T / temperature
    target = torch.arange(len(lip))
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def clip_mfcc(bank: ClipBank) -> Tensor:
    """MFCCs [N, 13, M] of every clip in the bank (float32 input, as the training reward computes them)."""
    return mfcc(bank.audio).float()


def train_syncnet(arch: SmallSyncNetConfig, cfg: SyncTrainConfig, log: Callable[[str], None] = print,
                  bank: ClipBank | None = None, vae: torch.nn.Module | None = None) -> tuple[SmallSyncNet, list[float]]:
    """Train a fresh :class:`SmallSyncNet` (also on ``vae``'s reconstructions, if given); returns it
    (eval mode) and the loss per step."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    if bank is None:
        bank = ClipBank.render(cfg.clips, "train", cfg.duration_s, arch.lip_size, cfg.seed + 1)
        log(f"syncnet: rendered {len(bank)} training clips of {bank.num_frames} frames")
    coeffs = clip_mfcc(bank)
    views = [bank.frames]
    if vae is not None and cfg.vae_view > 0:
        decoded = vae_view(vae, bank)
        views = [bank.frames[:, :decoded.num_frames], decoded.frames]
        log(f"syncnet: {len(bank)} clips also seen through the VAE (p = {cfg.vae_view})")
    model = SmallSyncNet(arch).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    warmup = max(1, cfg.steps // 20)
    losses = []
    for step, done, minutes in budgeted_steps(cfg.steps, cfg.max_minutes, log, "syncnet"):
        for group in opt.param_groups:  # linear warm-up, cosine decay
            group["lr"] = cfg.lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * done))
        frames, mf = _window_batch(views, coeffs, cfg, gen)
        loss = infonce_loss(lip_embeddings(model, frames), audio_embeddings(model, mf), cfg.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            log(f"syncnet step {step} loss {losses[-1]:.4f} {minutes:.1f} min")
    return model.eval().requires_grad_(False), losses


def shift_audio(audio: Tensor, frames: int) -> Tensor:
    """Move the audio ``frames`` video frames earlier (positive) or later (negative), zero-filling."""
    n = abs(frames) * SAMPLES_PER_FRAME
    if frames == 0:
        return audio
    if frames > 0:
        return F.pad(audio[n:], (0, n))
    return F.pad(audio[:-n], (n, 0))


@torch.no_grad()
def evaluate_syncnet(model: SmallSyncNet, bank: ClipBank, shifts: tuple[int, ...] = (-6, -3, 3, 6)) -> dict:
    """Offset accuracy, LSE-C and LSE-D on ground-truth clips, and the offset response to audio shifts.

    A clip's audio moved ``k`` frames earlier should measure offset ``k`` (syncnet_python's sign:
    positive = audio leads); ``shift_within_1`` counts measured offsets within 1 of ``k``.
    """
    results = {"clips": len(bank), "offset_within_1": 0, "offset_exact": 0, "lse_c": 0.0, "lse_d": 0.0,
               "shift_within_1": 0, "shift_exact": 0, "shift_trials": 0, "offsets": []}
    for i in range(len(bank)):
        frames, audio = bank.frames[i], bank.audio[i]
        base = evaluate_sync(model, frames, audio)
        results["offsets"].append(base.offset)
        results["offset_within_1"] += abs(base.offset) <= 1
        results["offset_exact"] += base.offset == 0
        results["lse_c"] += base.lse_c / len(bank)
        results["lse_d"] += base.lse_d / len(bank)
        for k in shifts:
            offset = evaluate_sync(model, frames, shift_audio(audio, k)).offset
            results["shift_within_1"] += abs(offset - k) <= 1
            results["shift_exact"] += offset == k
            results["shift_trials"] += 1
    return results
