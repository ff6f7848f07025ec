"""Phoneme inventory, random utterances and the co-articulated mouth trajectory of the demo domain.

An :class:`Utterance` is a phoneme timeline plus a pitch contour. The same timeline drives both the
speech synthesiser (:mod:`.speech`) and the mouth of the rendered face (:mod:`.face_render`), so lip
sync in this domain depends on *what* is said: /i/ spreads the lips, /u/ rounds them, /m b p/ close
them even between loud vowels.

Co-articulation follows the Cohen–Massaro dominance model: every phoneme has a target per mouth
parameter and a dominance that decays exponentially with the distance from the phoneme's core; the
mouth is the dominance-weighted mean of the targets. A bilabial has a strong, short dominance over
the opening but a weak one over rounding, so the lips close for /m/ yet keep the rounding of a
neighbouring /u/.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

MOUTH_PARAMS = ("open", "width", "round", "teeth")
"""Columns of a mouth trace: jaw/lip opening, lip spreading, lip rounding, teeth visibility (all 0..1)."""


@dataclass(frozen=True)
class Phoneme:
    """Articulatory and acoustic targets of one phoneme.

    ``kind`` is one of ``vowel``, ``nasal``, ``liquid``, ``plosive``, ``fricative``, ``silence``.
    ``formants`` are F1..F3 in Hz; ``voice``/``noise`` are source amplitudes; ``noise_hz`` and
    ``noise_bw`` shape the frication/burst noise (Gaussian band). ``mouth`` holds the targets of
    :data:`MOUTH_PARAMS`, ``dominance`` their weights and ``reach_s`` the decay time of the weights.
    """

    symbol: str
    kind: str
    formants: tuple[float, float, float]
    voice: float
    noise: float
    noise_hz: float
    noise_bw: float
    mouth: tuple[float, float, float, float]
    dominance: tuple[float, float, float, float]
    reach_s: float
    duration_s: tuple[float, float]


_V = (1.0, 1.0, 1.0, 1.0)
PHONEMES: dict[str, Phoneme] = {p.symbol: p for p in (
    # vowels: classic adult formants; mouth (open, width, round, teeth)
    Phoneme("a", "vowel", (750, 1200, 2600), 1.0, 0.0, 0, 1, (1.00, 0.50, 0.15, 0.30), _V, 0.040, (0.09, 0.18)),
    Phoneme("e", "vowel", (530, 1850, 2550), 0.9, 0.0, 0, 1, (0.60, 0.75, 0.00, 0.60), _V, 0.040, (0.08, 0.16)),
    Phoneme("i", "vowel", (280, 2250, 2900), 0.8, 0.0, 0, 1, (0.28, 1.00, 0.00, 0.90), _V, 0.040, (0.08, 0.16)),
    Phoneme("o", "vowel", (480, 850, 2500), 0.95, 0.0, 0, 1, (0.60, 0.10, 0.85, 0.10), _V, 0.040, (0.09, 0.17)),
    Phoneme("u", "vowel", (310, 850, 2250), 0.8, 0.0, 0, 1, (0.25, 0.00, 1.00, 0.00), _V, 0.040, (0.08, 0.16)),
    Phoneme("@", "vowel", (500, 1500, 2500), 0.7, 0.0, 0, 1, (0.45, 0.45, 0.20, 0.35), (0.5, 0.5, 0.5, 0.5), 0.030, (0.05, 0.09)),
    # nasals and liquids (voiced, weaker)
    Phoneme("m", "nasal", (250, 1100, 2300), 0.3, 0.0, 0, 1, (0.00, 0.40, 0.20, 0.00), (9.0, 0.3, 0.3, 4.0), 0.018, (0.06, 0.10)),
    Phoneme("n", "nasal", (250, 1500, 2500), 0.3, 0.0, 0, 1, (0.20, 0.50, 0.10, 0.60), (0.4, 0.3, 0.3, 0.6), 0.020, (0.05, 0.09)),
    Phoneme("l", "liquid", (360, 1200, 2800), 0.5, 0.0, 0, 1, (0.35, 0.50, 0.10, 0.60), (0.4, 0.3, 0.3, 0.5), 0.020, (0.05, 0.09)),
    Phoneme("r", "liquid", (350, 1150, 1700), 0.5, 0.0, 0, 1, (0.30, 0.30, 0.55, 0.30), (0.4, 0.6, 1.2, 0.5), 0.025, (0.05, 0.09)),
    Phoneme("w", "liquid", (300, 700, 2300), 0.5, 0.0, 0, 1, (0.15, 0.00, 1.00, 0.00), (0.8, 2.0, 3.0, 1.0), 0.025, (0.05, 0.09)),
    # plosives: closure then burst (place sets the burst band); bilabials close the lips firmly
    Phoneme("p", "plosive", (400, 1100, 2300), 0.0, 1.0, 900, 700, (0.00, 0.40, 0.20, 0.00), (9.0, 0.3, 0.3, 4.0), 0.016, (0.07, 0.12)),
    Phoneme("b", "plosive", (400, 1100, 2300), 0.12, 0.7, 900, 700, (0.00, 0.40, 0.20, 0.00), (9.0, 0.3, 0.3, 4.0), 0.016, (0.06, 0.10)),
    Phoneme("t", "plosive", (400, 1700, 2600), 0.0, 1.0, 4200, 1300, (0.15, 0.55, 0.05, 0.70), (0.4, 0.3, 0.3, 0.6), 0.020, (0.06, 0.11)),
    Phoneme("d", "plosive", (400, 1700, 2600), 0.12, 0.7, 4200, 1300, (0.15, 0.55, 0.05, 0.70), (0.4, 0.3, 0.3, 0.6), 0.020, (0.05, 0.09)),
    Phoneme("k", "plosive", (400, 1900, 2500), 0.0, 1.0, 2000, 500, (0.30, 0.45, 0.15, 0.40), (0.3, 0.3, 0.3, 0.3), 0.020, (0.06, 0.11)),
    Phoneme("g", "plosive", (400, 1900, 2500), 0.12, 0.7, 2000, 500, (0.30, 0.45, 0.15, 0.40), (0.3, 0.3, 0.3, 0.3), 0.020, (0.05, 0.09)),
    # fricatives: shaped noise; /s/ bares the teeth, /S/ (sh) protrudes the lips, /f v/ tuck the lip
    Phoneme("s", "fricative", (400, 1700, 2600), 0.0, 0.55, 6300, 1300, (0.10, 0.85, 0.00, 1.00), (1.5, 2.0, 1.0, 3.0), 0.020, (0.07, 0.13)),
    Phoneme("S", "fricative", (400, 1700, 2400), 0.0, 0.55, 3200, 700, (0.15, 0.10, 0.80, 0.70), (1.5, 2.0, 3.0, 2.0), 0.022, (0.07, 0.13)),
    Phoneme("f", "fricative", (400, 1400, 2500), 0.0, 0.25, 4500, 2500, (0.06, 0.50, 0.05, 0.80), (5.0, 0.5, 0.5, 3.0), 0.016, (0.06, 0.12)),
    Phoneme("v", "fricative", (400, 1400, 2500), 0.35, 0.18, 4500, 2500, (0.06, 0.50, 0.05, 0.80), (5.0, 0.5, 0.5, 3.0), 0.016, (0.05, 0.10)),
    # silence: relaxed closed lips, moderate dominance so pauses close the mouth
    Phoneme("_", "silence", (500, 1500, 2500), 0.0, 0.0, 0, 1, (0.00, 0.40, 0.10, 0.00), (1.5, 0.6, 0.6, 1.5), 0.050, (0.08, 0.25)),
)}

VOWELS = tuple(s for s, p in PHONEMES.items() if p.kind == "vowel")
CONSONANTS = tuple(s for s, p in PHONEMES.items() if p.kind not in ("vowel", "silence"))
BILABIALS = ("m", "b", "p")


@dataclass(frozen=True)
class Segment:
    """One phoneme occupying ``[start, end)`` seconds, with a loudness (syllable stress) factor."""

    symbol: str
    start: float
    end: float
    gain: float = 1.0

    @property
    def phoneme(self) -> Phoneme:
        return PHONEMES[self.symbol]


@dataclass(frozen=True)
class Utterance:
    """A phoneme timeline covering ``[0, duration_s)`` and a pitch contour.

    The pitch is ``f0_hz · (1 − declination·t/duration) · (1 + Σ_k a_k sin(2π f_k t + φ_k))``.
    """

    segments: tuple[Segment, ...]
    duration_s: float
    f0_hz: float
    declination: float
    pitch_wobble: tuple[tuple[float, float, float], ...]  # (amplitude, Hz, phase) triples
    seed: int

    @classmethod
    def sample(cls, seed: int, duration_s: float = 2.0) -> Utterance:
        """A random speech-like utterance: words of CV/CVC/CCV syllables with pauses, random speed and pitch."""
        if duration_s <= 0.2:
            raise ValueError(f"duration_s must be > 0.2 s to hold speech, got {duration_s}")
        rng = np.random.default_rng(seed)
        rate = rng.uniform(0.8, 1.3)  # >1 = faster speaker
        segments: list[Segment] = []
        t = rng.uniform(0.08, 0.3)
        segments.append(Segment("_", 0.0, t))
        end_speech = duration_s - rng.uniform(0.1, 0.25)
        while True:
            word = _sample_word(rng)
            durations = [rng.uniform(*PHONEMES[s].duration_s) / (rate * rng.uniform(0.9, 1.1)) for s, _ in word]
            if t + sum(durations) > end_speech:
                break
            for (symbol, gain), d in zip(word, durations):
                segments.append(Segment(symbol, t, t + d, gain))
                t += d
            if rng.random() < 0.35:
                pause = rng.uniform(0.08, 0.3)
                segments.append(Segment("_", t, min(t + pause, duration_s)))
                t += pause
            if t >= end_speech:
                break
        if t < duration_s:
            if segments[-1].symbol == "_":
                last = segments.pop()
                t = last.start
            segments.append(Segment("_", t, duration_s))
        wobble = tuple((rng.uniform(0.02, 0.08), rng.uniform(0.3, 3.0), rng.uniform(0, 2 * np.pi)) for _ in range(3))
        return cls(tuple(segments), float(duration_s), rng.uniform(90, 230), rng.uniform(0.0, 0.25), wobble, seed)

    @classmethod
    def from_phonemes(cls, symbols: str | list[str], durations_s: float | list[float] = 0.12, f0_hz: float = 140.0,
                      lead_s: float = 0.2, tail_s: float = 0.2) -> Utterance:
        """A fixed utterance from a phoneme list (e.g. ``"ama"`` or ``["S", "u"]``), padded with silence."""
        symbols = list(symbols)
        unknown = [s for s in symbols if s not in PHONEMES]
        if unknown:
            raise ValueError(f"unknown phonemes {unknown}; known: {''.join(PHONEMES)}")
        if isinstance(durations_s, (int, float)):
            durations_s = [float(durations_s)] * len(symbols)
        segments = [Segment("_", 0.0, lead_s)]
        t = lead_s
        for s, d in zip(symbols, durations_s, strict=True):
            segments.append(Segment(s, t, t + d))
            t += d
        segments.append(Segment("_", t, t + tail_s))
        return cls(tuple(segments), t + tail_s, f0_hz, 0.1, ((0.03, 1.0, 0.0),), 0)

    def pitch(self, t: Tensor) -> Tensor:
        """Fundamental frequency in Hz at times ``t`` (seconds)."""
        f0 = self.f0_hz * (1.0 - self.declination * t / self.duration_s)
        wobble = sum(a * torch.sin(2 * np.pi * f * t + ph) for a, f, ph in self.pitch_wobble)
        return f0 * (1.0 + wobble)

    def segment_index(self, t: Tensor) -> Tensor:
        """Index of the segment holding each time in ``t`` (clamped to the timeline)."""
        starts = torch.tensor([s.start for s in self.segments], dtype=t.dtype)
        return (torch.searchsorted(starts, t.contiguous(), right=True) - 1).clamp(0, len(self.segments) - 1)


def _sample_word(rng: np.random.Generator) -> list[tuple[str, float]]:
    """1–3 syllables of shape (C)(C)V(C) with one stressed syllable; returns (symbol, gain) pairs."""
    n_syll = int(rng.integers(1, 4))
    stressed = int(rng.integers(0, n_syll))
    word: list[tuple[str, float]] = []
    for k in range(n_syll):
        gain = 1.0 if k == stressed else rng.uniform(0.6, 0.85)
        onset = int(rng.choice([0, 1, 1, 1, 2]))
        if onset == 2:
            word += [(str(rng.choice(list("sSfpbkt"))), gain), (str(rng.choice(list("lrw"))), gain)]
        elif onset == 1:
            word.append((str(rng.choice(CONSONANTS)), gain))
        vowel = str(rng.choice(VOWELS, p=[0.24, 0.17, 0.17, 0.15, 0.15, 0.12]))
        word.append((vowel, gain))
        if rng.random() < 0.3:
            word.append((str(rng.choice(CONSONANTS)), gain))
    return word


def mouth_trace(utterance: Utterance, times: Tensor) -> Tensor:
    """Co-articulated mouth parameters ``[len(times), 4]`` (columns :data:`MOUTH_PARAMS`) at ``times`` (s)."""
    times = times.to(torch.float64)
    seg = utterance.segments
    start = torch.tensor([s.start for s in seg], dtype=torch.float64)
    end = torch.tensor([s.end for s in seg], dtype=torch.float64)
    target = torch.tensor([s.phoneme.mouth for s in seg], dtype=torch.float64)  # [S,4]
    dominance = torch.tensor([s.phoneme.dominance for s in seg], dtype=torch.float64)
    reach = torch.tensor([s.phoneme.reach_s for s in seg], dtype=torch.float64)
    # distance from each segment's core (its middle half); 0 inside the core
    centre, half = (start + end) / 2, (end - start) / 4
    dist = ((times[:, None] - centre[None]).abs() - half[None]).clamp_min(0)  # [T,S]
    weight = dominance[None] * torch.exp(-dist / reach[None])[..., None]  # [T,S,4]
    weight = weight + 1e-12
    trace = (weight * target[None]).sum(1) / weight.sum(1)
    return trace.to(torch.float32)
