"""Speech-like audio for the demo domain: a source–filter synthesiser driven by a phoneme timeline.

Voiced sounds are a glottal pulse train (Rosenberg pulses, differentiated for lip radiation) at the
utterance's varying pitch, shaped by formant resonators; fricatives are Gaussian-band noise; plosives
are a closure (silent, or a weak voice bar when voiced) followed by a decaying noise burst; silences
are exactly zero. The time-varying filters are applied in the short-time Fourier domain
(multiply each frame's spectrum by that frame's spectral envelope, then overlap-add), which keeps
the whole synthesiser a handful of vectorised torch ops.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..audio.io import SAMPLE_RATE
from .phonemes import Utterance

_N_FFT, _WIN, _HOP = 512, 256, 64
_EXTRA_FORMANTS = (3500.0, 4500.0)  # fixed higher resonances for a less buzzy timbre
_CLOSURE = 0.6  # fraction of a plosive spent in the closure before the burst
_BURST_DECAY_S = 0.012
_PEAK = 0.5


def synthesize_speech(utterance: Utterance, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """Waveform ``[round(duration_s · sample_rate)]`` float32 in [-0.5, 0.5] for ``utterance``."""
    n = round(utterance.duration_s * sample_rate)
    frame_t = torch.arange(n // _HOP + 1, dtype=torch.float64) * _HOP / sample_rate
    voice, noise, formants, noise_hz, noise_bw = _acoustic_tracks(utterance, frame_t, sample_rate)
    gen = torch.Generator().manual_seed(int(utterance.seed) * 7919 + 17)
    source = _glottal_source(utterance, n, sample_rate)
    white = torch.randn(n, generator=gen, dtype=torch.float64)
    window = torch.hann_window(_WIN, dtype=torch.float64)
    freqs = torch.linspace(0, sample_rate / 2, _N_FFT // 2 + 1, dtype=torch.float64)[:, None]  # [F,1]
    voiced_env = _formant_envelope(freqs, formants)
    noise_env = torch.exp(-0.5 * ((freqs - noise_hz[None]) / noise_bw[None]) ** 2)
    spec = _stft(source, window) * (voice[None] * voiced_env) + _stft(white, window) * (noise[None] * noise_env)
    wave = torch.istft(spec, _N_FFT, _HOP, _WIN, window, center=True, length=n)
    peak = wave.abs().max()
    return (wave * (_PEAK / peak) if peak > 0 else wave).to(torch.float32)


def _stft(x: Tensor, window: Tensor) -> Tensor:
    return torch.stft(x, _N_FFT, _HOP, _WIN, window, center=True, return_complex=True)


def _acoustic_tracks(utt: Utterance, t: Tensor, sample_rate: int) -> tuple[Tensor, ...]:
    """Per-STFT-frame voice/noise amplitudes, formants ``[3,T]`` and noise band, smoothed across phonemes."""
    rows = [(s.start, s.end, s.gain, p.voice, p.noise, p.kind == "plosive", *p.formants, p.noise_hz, p.noise_bw)
            for s in utt.segments for p in (s.phoneme,)]
    per_frame = torch.tensor(rows, dtype=torch.float64)[utt.segment_index(t)].T
    start, end, gain, voice, noise, plosive, f1, f2, f3, noise_hz, noise_bw = per_frame
    plosive = plosive.bool()
    release = start + _CLOSURE * (end - start)
    after = t - release
    # plosive: closure keeps only the voice bar, then a burst decays into a short aspiration
    burst = torch.where(after >= 0, torch.exp(-after.clamp_min(0) / _BURST_DECAY_S) + 0.15, torch.zeros_like(t))
    noise = torch.where(plosive, noise * burst, noise)
    voice = torch.where(plosive & (after >= 0), voice * 2.5, voice)
    frame_s = _HOP / sample_rate
    return (
        _smooth(voice * gain, 0.010, frame_s),
        _smooth(noise * gain, 0.006, frame_s),
        _smooth(torch.stack([f1, f2, f3]), 0.040, frame_s),
        _smooth(noise_hz, 0.020, frame_s),
        _smooth(noise_bw, 0.020, frame_s),
    )


def _smooth(x: Tensor, width_s: float, frame_s: float) -> Tensor:
    """Zero-phase Hann smoothing of tracks ``[..., T]`` over ``width_s`` seconds (edges replicated)."""
    k = max(3, round(width_s / frame_s) | 1)
    kernel = torch.hann_window(k + 2, periodic=False, dtype=x.dtype)[1:-1]
    kernel = (kernel / kernel.sum()).view(1, 1, k)
    y = F.pad(x.reshape(-1, 1, x.shape[-1]), (k // 2, k // 2), mode="replicate")
    return F.conv1d(y, kernel).reshape(x.shape)


def _glottal_source(utt: Utterance, n: int, sample_rate: int) -> Tensor:
    """Differentiated Rosenberg pulse train at the utterance's pitch, roughly unit amplitude."""
    t = torch.arange(n, dtype=torch.float64) / sample_rate
    f0 = utt.pitch(t)
    phase = torch.remainder(torch.cumsum(f0 / sample_rate, 0), 1.0)
    rise, fall = 0.4, 0.16
    flow = torch.where(
        phase < rise,
        0.5 * (1 - torch.cos(math.pi * phase / rise)),
        torch.where(phase < rise + fall, torch.cos(0.5 * math.pi * (phase - rise) / fall), torch.zeros_like(phase)),
    )
    return torch.diff(flow, prepend=flow[:1]) * (sample_rate / (math.pi * f0))


def _formant_envelope(freqs: Tensor, formants: Tensor) -> Tensor:
    """Cascade of 2-pole resonator magnitudes (unit gain at DC): ``[F,1]`` × ``[3,T]`` → ``[F,T]``."""
    extra = torch.tensor(_EXTRA_FORMANTS, dtype=formants.dtype)[:, None].expand(-1, formants.shape[1])
    env = torch.ones(freqs.shape[0], formants.shape[1], dtype=formants.dtype)
    for fk in torch.cat([formants, extra]):
        bw = 50.0 + 0.05 * fk
        env = env * fk**2 / torch.sqrt((fk**2 - freqs**2) ** 2 + (bw * freqs) ** 2)
    return env
