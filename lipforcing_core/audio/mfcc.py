"""SyncNet's MFCC front end in torch: ``python_speech_features.mfcc`` with SyncNet's settings.

16 kHz, 25 ms rectangular frames every 10 ms, 512-point FFT, 26 mel filters over 0–8 kHz,
pre-emphasis 0.97, 13 cepstra, lifter 22, c0 replaced by the log frame energy. Written in torch so
a whole batch of waveforms is featurised on the GPU inside the sync metrics and the training reward.

Input scale follows SyncNet, which was trained on int16 magnitudes: float input is a waveform in
[-1, 1] and is multiplied by 32768 here; int16 input is used as is. As in the reference library the
pre-emphasis runs in the input's precision (float64 for int16 — syncnet_python's convention —
float32 for float32 input — the Lip Forcing reward's convention); everything after it is float64.
"""

from __future__ import annotations

import math

import torch

from .io import SAMPLE_RATE

FRAME_LEN = 400  # 25 ms
HOP = 160  # 10 ms -> 100 MFCC frames per second, 4 per 25 fps video frame
NFFT = 512
NFILT = 26
NUMCEP = 13
PREEMPH = 0.97
CEPLIFTER = 22
EPS = torch.finfo(torch.float64).eps  # numpy.finfo(float).eps replaces exact zeros before the log


def num_frames(num_samples: int) -> int:
    """MFCC frame count for a waveform of ``num_samples`` (the last frame is zero-padded)."""
    if num_samples <= FRAME_LEN:
        return 1
    return 1 + math.ceil((num_samples - FRAME_LEN) / HOP)


def mel_filterbank(device: torch.device | str | None = None) -> torch.Tensor:
    """The [26, 257] triangular mel filterbank, on FFT bins floor(513·hz/16000)."""
    hz2mel = lambda hz: 2595.0 * math.log10(1.0 + hz / 700.0)  # noqa: E731
    mel = torch.linspace(hz2mel(0.0), hz2mel(SAMPLE_RATE / 2), NFILT + 2, dtype=torch.float64)
    hz = 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    edges = torch.floor((NFFT + 1) * hz / SAMPLE_RATE)
    bins = torch.arange(NFFT // 2 + 1, dtype=torch.float64)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rise = torch.where((bins >= lo) & (bins < mid), (bins - lo) / (mid - lo), 0.0)
    fall = torch.where((bins >= mid) & (bins < hi), (hi - bins) / (hi - mid), 0.0)
    return (rise + fall).to(device)


def _dct_lifter_matrix(device: torch.device) -> torch.Tensor:
    """[26, 13]: orthonormal DCT-II (first 13 rows), each column scaled by its lifter weight."""
    n = torch.arange(NFILT, dtype=torch.float64, device=device)
    k = torch.arange(NUMCEP, dtype=torch.float64, device=device)
    basis = torch.cos(math.pi * k[None, :] * (2 * n[:, None] + 1) / (2 * NFILT))
    scale = torch.full((NUMCEP,), math.sqrt(2.0 / NFILT), dtype=torch.float64, device=device)
    scale[0] = math.sqrt(1.0 / NFILT)
    lifter = 1 + (CEPLIFTER / 2) * torch.sin(math.pi * k / CEPLIFTER)
    return basis * (scale * lifter)


def preemphasis(waveform: torch.Tensor) -> torch.Tensor:
    """y[0] = x[0], y[n] = x[n] - 0.97 x[n-1], on int16-scale samples, in the input's precision."""
    if waveform.dtype == torch.int16:
        x = waveform.to(torch.float64)
    elif waveform.is_floating_point():
        x = waveform * 32768.0
    else:
        raise TypeError(f"waveform must be int16 or a float tensor in [-1, 1], got {waveform.dtype}")
    return torch.cat([x[..., :1], x[..., 1:] - PREEMPH * x[..., :-1]], dim=-1)


def power_spectrum(waveform: torch.Tensor) -> torch.Tensor:
    """[..., L] -> [..., M, 257] float64 periodogram |rfft(frame, 512)|² / 512 of each raw frame."""
    y = preemphasis(waveform).to(torch.float64)
    length = y.shape[-1]
    m = num_frames(length)
    y = torch.nn.functional.pad(y, (0, (m - 1) * HOP + FRAME_LEN - length))
    frames = y.unfold(-1, FRAME_LEN, HOP)
    return torch.fft.rfft(frames, n=NFFT).abs().square() / NFFT


def mfcc(waveform_16k: torch.Tensor) -> torch.Tensor:
    """MFCCs of 16 kHz audio: [..., L] -> [..., 13, M] float64, M = ``num_frames(L)``.

    ``waveform_16k`` is int16 samples or a float waveform in [-1, 1] (see the module docstring);
    leading dimensions are a batch. SyncNet consumes the result cast to float32.
    """
    if waveform_16k.shape[-1] == 0:
        raise ValueError("mfcc: the waveform is empty")
    pspec = power_spectrum(waveform_16k)
    energy = pspec.sum(-1)
    energy = torch.where(energy == 0, EPS, energy)
    fbank = pspec @ mel_filterbank(pspec.device).T
    fbank = torch.where(fbank == 0, EPS, fbank)
    ceps = fbank.log() @ _dct_lifter_matrix(pspec.device)
    ceps[..., 0] = energy.log()
    return ceps.transpose(-1, -2)
