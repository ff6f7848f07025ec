"""Download-free audio front end for the demo model: stacked log-mel features per 25-fps video frame.

The real model feeds the DiT's AudioPack one 10752-d wav2vec2 vector per video frame (``[B,V,10752]``).
The demo model keeps that layout with a small ``D``: each video frame gets ``frames_per_video_frame``
consecutive log-mel frames concatenated in time order (default 2 frames of 80 mel bins at 50 Hz →
``D = 160`` at 25 fps). Frame ``k``'s mel frames are centred at ``(k + (j + ½)/n)/fps`` seconds,
``j = 0 … n−1``, so they summarise exactly the samples ``[k·sr/fps, (k+1)·sr/fps)`` that the video
frame covers (plus the analysis window's overhang).

Length rule (the same as the wav2vec2 path): ``V = floor(duration · fps)``, the waveform cut or
zero-padded to ``V · sr/fps`` samples. Like the wav2vec2 recipe the waveform is first normalised to
zero mean and unit variance over the clip, so the features do not depend on the recording level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from ..audio.io import SAMPLE_RATE
from ..config import FPS


@dataclass(frozen=True)
class LogMelConfig:
    """Log-mel front end settings; ``dim`` is the per-video-frame feature size the AudioPack must take."""

    sample_rate: int = SAMPLE_RATE
    fps: float = FPS
    n_mels: int = 80
    frames_per_video_frame: int = 2
    window_ms: float = 40.0
    n_fft: int = 1024
    f_min: float = 40.0
    f_max: float = 7600.0
    # features are (ln(mel + floor) + offset) / scale: roughly zero mean, unit variance on speech
    log_offset: float = 3.0
    log_scale: float = 6.5
    floor: float = 1e-4

    @property
    def dim(self) -> int:
        return self.n_mels * self.frames_per_video_frame

    @property
    def samples_per_frame(self) -> int:
        return round(self.sample_rate / self.fps)

    @property
    def hop(self) -> int:
        return self.samples_per_frame // self.frames_per_video_frame

    def __post_init__(self) -> None:
        spf = self.sample_rate / self.fps
        if spf % 1 or spf % self.frames_per_video_frame:
            raise ValueError(f"sample_rate/fps = {spf} must be a whole number divisible by "
                             f"frames_per_video_frame = {self.frames_per_video_frame}")
        if round(self.window_ms * self.sample_rate / 1000) > self.n_fft:
            raise ValueError(f"window_ms = {self.window_ms} is longer than n_fft = {self.n_fft} samples")


def num_video_frames(num_samples: int, sample_rate: int = SAMPLE_RATE, fps: float = FPS) -> int:
    """``V = floor(duration · fps)`` for a waveform of ``num_samples`` samples."""
    return math.floor(num_samples * fps / sample_rate + 1e-9)


class LogMelFeatures(nn.Module):
    """Waveform ``[B,N]`` (or ``[N]``) at ``config.sample_rate`` → features ``[B,V,config.dim]``."""

    def __init__(self, config: LogMelConfig = LogMelConfig()):
        super().__init__()
        self.config = config
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=config.sample_rate, n_fft=config.n_fft,
            win_length=round(config.window_ms * config.sample_rate / 1000), hop_length=config.hop,
            f_min=config.f_min, f_max=config.f_max, n_mels=config.n_mels, center=False, power=2.0,
        )

    def forward(self, waveform: Tensor, num_frames: int | None = None) -> Tensor:
        """Features for every 25-fps frame; ``num_frames`` overrides ``V`` (cut or zero-pad)."""
        if waveform.ndim == 1:
            waveform = waveform[None]
        if waveform.ndim != 2 or not waveform.is_floating_point():
            raise ValueError(f"waveform must be float mono audio [N] or [B,N], got {tuple(waveform.shape)} "
                             f"{waveform.dtype}")
        cfg = self.config
        v = num_video_frames(waveform.shape[-1], cfg.sample_rate, cfg.fps) if num_frames is None else num_frames
        if v < 1:
            raise ValueError(f"audio of {waveform.shape[-1]} samples is shorter than one video frame "
                             f"({cfg.samples_per_frame} samples at {cfg.sample_rate} Hz, {cfg.fps} fps)")
        x = waveform.to(self.mel.spectrogram.window.device).float()  # follows the module (ComfyUI moves it)
        x = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + 1e-7)
        x = _fit(x, v * cfg.samples_per_frame)
        # centre analysis frame j at (j + ½)·hop: pad so that frame count is exactly V·n
        pad = (cfg.n_fft - cfg.hop) // 2
        x = F.pad(x, (pad, cfg.n_fft - cfg.hop - pad))
        mel = self.mel(x)  # [B, n_mels, V·n]
        feats = (torch.log(mel + cfg.floor) + cfg.log_offset) / cfg.log_scale
        return feats.transpose(1, 2).reshape(x.shape[0], v, cfg.dim)


    def frame_features(self, mono: Tensor, num_frames: int, fps: float) -> Tensor:
        """:func:`~lipforcing_core.audio.encode_audio`'s hook: 16 kHz mono ``[B, N]`` -> ``[B, num_frames, dim]``."""
        cfg = self.config
        if fps != cfg.fps or cfg.sample_rate != SAMPLE_RATE:
            raise ValueError(f"fps: the demo audio features are made for {cfg.fps} fps video at 16 kHz, got {fps} fps")
        return self(mono, num_frames)


def _fit(x: Tensor, length: int) -> Tensor:
    """Cut or zero-pad the last dimension to ``length``."""
    return x[..., :length] if x.shape[-1] >= length else F.pad(x, (0, length - x.shape[-1]))
