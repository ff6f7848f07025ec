"""Lip-sync metrics from SyncNet v2 embeddings.

Two procedures share the network and the offset search but differ in windowing and padding
(docs/design.md §7):

* :func:`evaluate_sync` — syncnet_python's ``SyncNetInstance.evaluate``: the AV offset, LSE-D (min
  mean distance) and LSE-C (median − min) reported in papers. Distances to audio windows beyond the
  clip are taken against a zero vector.
* :func:`sync_c_reward` — the Lip Forcing training reward (its ``SyncCScorer``): sync-C per sample
  of a batch, averaging only real lip/audio pairs at each shift. No gradients.

Frames are RGB, either channels-last ``[..., T, H, W, 3]`` (ComfyUI IMAGE layout) or channels-first
``[..., T, 3, H, W]``; uint8 0..255 or float 0..1. They are resized bilinearly to the model's
``lip_size`` (224×224 for SyncNet v2) and turned into the raw BGR 0..255 pixels SyncNet was
trained on. Any network with SyncNet v2's interface (``forward_aud`` on [N, 1, 13, 20] MFCC
windows, ``forward_lip_clip`` on BGR clips, ``lip_size``; e.g. the demo domain's small SyncNet)
is scored by the same code. Audio is a waveform in [-1, 1] (or int16 samples); video must be 25 fps, and audio is resampled to 16 kHz if needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchaudio

from ..audio.io import SAMPLE_RATE
from ..audio.mfcc import mfcc
from ..config import FPS
from .model import LIP_FRAMES, MFCC_WINDOW, SyncNetV2

VSHIFT = 15  # offsets searched: -15..15 video frames
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640 audio samples per video frame
MFCC_PER_FRAME = 4  # MFCC hop is 10 ms, a 25 fps frame is 40 ms
FCONF_KERNEL = 9  # syncnet_python's median filter over frame-wise confidence


@dataclass
class SyncResult:
    """syncnet_python's verdict on one clip.

    ``dists[j]`` is the mean distance with audio window ``v + j - vshift`` paired to lip window
    ``v`` (syncnet_python's ``mdist`` order), i.e. AV offset ``vshift - j``. A positive offset means
    the audio content comes earlier than the matching lip motion. ``frame_conf`` is the per-window
    confidence at the best offset after a 9-tap median filter (syncnet_python's ``fconfm``).
    """

    offset: int
    lse_d: float
    lse_c: float
    dists: torch.Tensor
    frame_conf: torch.Tensor

    @property
    def vshift(self) -> int:
        return (len(self.dists) - 1) // 2

    @property
    def offsets(self) -> torch.Tensor:
        """AV offset of each entry of ``dists``."""
        return self.vshift - torch.arange(len(self.dists))

    def to_dict(self) -> dict:
        """JSON-ready report; per-offset distances listed by increasing offset."""
        order = self.offsets.argsort()
        return {
            "offset": self.offset,
            "lse_d": self.lse_d,
            "lse_c": self.lse_c,
            "vshift": self.vshift,
            "windows": len(self.frame_conf),
            "per_offset": [
                {"offset": int(o), "mean_dist": float(d)} for o, d in zip(self.offsets[order], self.dists[order])
            ],
            "frame_conf": self.frame_conf.tolist(),
        }


# ----------------------------------------------------------------------------- offset search


def shift_distances(
    lip_emb: torch.Tensor, aud_emb: torch.Tensor, vshift: int = VSHIFT, zero_pad: bool = True
) -> torch.Tensor:
    """[..., N, D] x [..., N, D] -> [..., N, 2·vshift+1] with entry (v, j) = ‖lip[v] − aud[v+j−vshift] + 1e-6‖.

    Where audio window ``v + j − vshift`` lies outside the clip the entry is the distance to a zero
    vector (``zero_pad``, syncnet_python) or NaN. The 1e-6 follows ``F.pairwise_distance``, which
    both reference implementations use.
    """
    n = lip_emb.shape[-2]
    if zero_pad:
        missing = F.pairwise_distance(lip_emb, torch.zeros_like(lip_emb))[..., None]
        out = missing.repeat_interleave(2 * vshift + 1, -1)
    else:
        out = lip_emb.new_full((*lip_emb.shape[:-1], 2 * vshift + 1), math.nan)
    for j, shift in enumerate(range(-vshift, vshift + 1)):
        lo, hi = max(0, -shift), min(n, n - shift)
        if lo < hi:
            out[..., lo:hi, j] = F.pairwise_distance(lip_emb[..., lo:hi, :], aud_emb[..., lo + shift : hi + shift, :])
    return out


def mean_distances(
    lip_emb: torch.Tensor, aud_emb: torch.Tensor, vshift: int = VSHIFT, zero_pad: bool = True
) -> torch.Tensor:
    """Mean distance per shift, [..., 2·vshift+1].

    ``zero_pad=True`` is syncnet_python: all N rows count, a missing audio window is a zero vector.
    ``zero_pad=False`` is the Lip Forcing reward: the mean over the N − |shift| real pairs.
    """
    dists = shift_distances(lip_emb, aud_emb, vshift, zero_pad)
    return dists.mean(-2) if zero_pad else dists.nanmean(-2)


def sync_confidence(mean_dists: torch.Tensor) -> torch.Tensor:
    """median − min over the last axis (LSE-C / sync-C); the median of 31 values is the 16th smallest."""
    return mean_dists.median(-1).values - mean_dists.amin(-1)


def offset_search(lip_emb: torch.Tensor, aud_emb: torch.Tensor, vshift: int = VSHIFT) -> SyncResult:
    """syncnet_python's offset search on one clip's [N, D] lip and audio embeddings (zero padding)."""
    dists = shift_distances(lip_emb, aud_emb, vshift, zero_pad=True)
    mean = dists.mean(0)
    best = int(mean.argmin())  # first index on ties, as numpy
    median = mean.median()
    fconf = median - dists[:, best]
    half = FCONF_KERNEL // 2
    fconfm = F.pad(fconf, (half, half)).unfold(0, FCONF_KERNEL, 1).median(-1).values
    return SyncResult(
        offset=vshift - best,
        lse_d=float(mean[best]),
        lse_c=float(median - mean[best]),
        dists=mean.cpu(),
        frame_conf=fconfm.cpu(),
    )


# ----------------------------------------------------------------------------- inputs


def _frames_channels_first(frames: torch.Tensor, batched: bool) -> torch.Tensor:
    """Validate RGB frames and return a [B, T, 3, H, W] view (no copy)."""
    want = 5 if batched else 4
    layout = "[B, T, H, W, 3] or [B, T, 3, H, W]" if batched else "[T, H, W, 3] or [T, 3, H, W]"
    if frames.ndim != want:
        raise ValueError(f"frames must be {layout} RGB, got shape {tuple(frames.shape)}")
    if not batched:
        frames = frames[None]
    if frames.shape[-1] == 3:
        frames = frames.permute(0, 1, 4, 2, 3)
    elif frames.shape[2] != 3:
        raise ValueError(f"frames must be {layout} RGB (3 channels), got shape {tuple(frames.shape)}")
    if frames.is_floating_point():
        lo, hi = frames.amin().item(), frames.amax().item()
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(
                f"float frames must be RGB in 0..1 (ComfyUI IMAGE), got values in [{lo:.3g}, {hi:.3g}]; "
                "pass uint8 for 0..255 pixels"
            )
    elif frames.dtype != torch.uint8:
        raise TypeError(f"frames must be uint8 (0..255) or float (0..1), got {frames.dtype}")
    return frames


def _check_fps(fps: float) -> None:
    if fps != FPS:
        raise ValueError(f"SyncNet v2 scores 25 fps video, got fps={fps}; convert the frame rate to 25 first")


def _audio_16k(audio: torch.Tensor, sample_rate: int, dtype: torch.dtype) -> torch.Tensor:
    """Validate [..., L] audio, resample to 16 kHz (torchaudio, as the Lip Forcing scorer) and cast.

    int16 audio at 16 kHz is kept as int16 (syncnet_python's exact MFCC input).
    """
    if audio.dtype == torch.int16:
        if sample_rate == SAMPLE_RATE:
            _check_not_silent(audio.float() / 32768.0)
            return audio
        audio = audio.float() / 32768.0
    elif not audio.is_floating_point():
        raise TypeError(f"audio must be a float waveform in [-1, 1] or int16 samples, got {audio.dtype}")
    audio = audio.to(dtype)
    if sample_rate != SAMPLE_RATE:
        audio = torchaudio.functional.resample(audio, sample_rate, SAMPLE_RATE)
    _check_not_silent(audio)
    return audio


def _check_not_silent(audio: torch.Tensor) -> None:
    peak = audio.abs().amax(-1).reshape(-1)
    silent = (peak < 1 / 32768).nonzero().flatten().tolist()
    if silent:
        which = f"audio sample(s) {silent}" if audio.ndim > 1 else "the audio"
        raise ValueError(f"{which} is silent (peak below one 16-bit step); SyncNet needs speech to measure sync")


# ----------------------------------------------------------------------------- embeddings


def _placement(model: SyncNetV2) -> tuple[torch.device, torch.dtype]:
    weight = next(model.parameters())
    return weight.device, weight.dtype


def lip_embeddings(model: SyncNetV2, frames: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    """[B, T, 3, H, W] RGB frames (see :func:`_frames_channels_first`) -> [B, T−4, D] (D = 1024 for v2).

    Works through ``chunk`` windows at a time (each chunk moved to the model's device, resized and
    converted to BGR 0..255 there), so long CPU-resident videos fit in GPU memory.
    """
    device, dtype = _placement(model)
    size = model.lip_size
    scale = 255.0 if frames.is_floating_point() else 1.0
    out = []
    for start in range(0, frames.shape[1] - LIP_FRAMES + 1, chunk):
        x = frames[:, start : start + chunk + LIP_FRAMES - 1].to(device, torch.float32) * scale
        b, t = x.shape[:2]
        x = x.flatten(0, 1)
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        x = x.flip(1).unflatten(0, (b, t)).transpose(1, 2)  # RGB -> BGR, [B, 3, t, size, size]
        out.append(model.forward_lip_clip(x.to(dtype)))
    return torch.cat(out, 1)


def audio_embeddings(model: SyncNetV2, coeffs: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """[B, 13, M] MFCCs -> [B, floor((M−20)/4)+1, 1024]: 20-column windows every 4 columns."""
    device, dtype = _placement(model)
    windows = coeffs.unfold(-1, MFCC_WINDOW, MFCC_PER_FRAME).transpose(1, 2)  # [B, N, 13, 20]
    b, n = windows.shape[:2]
    flat = windows.flatten(0, 1)[:, None]
    emb = [model.forward_aud(flat[i : i + chunk].to(device, dtype)) for i in range(0, len(flat), chunk)]
    return torch.cat(emb).unflatten(0, (b, n))


# ----------------------------------------------------------------------------- the two procedures


@torch.no_grad()
def evaluate_sync(
    model: SyncNetV2,
    frames: torch.Tensor,
    audio: torch.Tensor,
    *,
    sample_rate: int = SAMPLE_RATE,
    fps: float = FPS,
    vshift: int = VSHIFT,
) -> SyncResult:
    """syncnet_python's evaluation of one face-cropped clip: AV offset, LSE-D and LSE-C.

    ``frames``: [T, H, W, 3] or [T, 3, H, W] RGB (uint8 or float 0..1) at 25 fps; ``audio``: [L]
    waveform in [-1, 1] or int16. Windows: N = min(T, L // 640) − 5, lip window v = frames v..v+4,
    audio window v = MFCC columns 4v..4v+19.
    """
    _check_fps(fps)
    frames = _frames_channels_first(frames, batched=False)
    if audio.ndim != 1:
        raise ValueError(f"audio must be a mono waveform [L], got shape {tuple(audio.shape)}")
    audio = _audio_16k(audio, sample_rate, torch.float64)
    n = min(frames.shape[1], audio.shape[-1] // SAMPLES_PER_FRAME) - LIP_FRAMES
    if n < 1:
        raise ValueError(
            f"clip too short for SyncNet: {frames.shape[1]} frames and {audio.shape[-1] / SAMPLE_RATE:.3f} s of "
            f"audio give {n} windows; both need at least {LIP_FRAMES + 1} frames (0.24 s)"
        )
    lip = lip_embeddings(model, frames[:, : n + LIP_FRAMES - 1])[0]
    coeffs = mfcc(audio).float()
    aud = audio_embeddings(model, coeffs[None, :, : MFCC_PER_FRAME * (n - 1) + MFCC_WINDOW])[0]
    return offset_search(lip, aud, vshift)


@torch.no_grad()
def sync_c_reward(
    model: SyncNetV2,
    frames_batch: torch.Tensor,
    audio_batch: torch.Tensor,
    *,
    sample_rate: int = SAMPLE_RATE,
    fps: float = FPS,
    vshift: int = VSHIFT,
) -> torch.Tensor:
    """The Lip Forcing sync-C reward for a batch of face-aligned clips -> [B] on the model's device.

    ``frames_batch``: [B, F, H, W, 3] or [B, F, 3, H, W] RGB (uint8 or float 0..1) at 25 fps;
    ``audio_batch``: [B, L] waveforms in [-1, 1], aligned with frame 0. Uses all F − 4 lip windows
    and all audio windows, truncated to the shorter, and averages only real pairs at each shift.
    """
    _check_fps(fps)
    frames = _frames_channels_first(frames_batch, batched=True)
    if audio_batch.ndim != 2 or len(audio_batch) != len(frames):
        raise ValueError(
            f"audio_batch must be [B, L] with B = {len(frames)} (one waveform per clip), got {tuple(audio_batch.shape)}"
        )
    coeffs = mfcc(_audio_16k(audio_batch, sample_rate, torch.float32)).float()
    n = min(frames.shape[1] - LIP_FRAMES + 1, (coeffs.shape[-1] - MFCC_WINDOW) // MFCC_PER_FRAME + 1)
    if n <= vshift:
        raise ValueError(
            f"clips too short for the sync-C reward: {frames.shape[1]} frames and {audio_batch.shape[-1]} audio samples "
            f"give {n} windows; the ±{vshift} offset search needs at least {vshift + 1} "
            f"({vshift + LIP_FRAMES} frames and {(vshift + LIP_FRAMES) / FPS:.2f} s of audio)"
        )
    lip = lip_embeddings(model, frames[:, : n + LIP_FRAMES - 1])
    aud = audio_embeddings(model, coeffs[..., : MFCC_PER_FRAME * (n - 1) + MFCC_WINDOW])
    return sync_confidence(mean_distances(lip, aud, vshift, zero_pad=False))
