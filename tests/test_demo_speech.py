"""Synthetic speech of the demo domain: formants, silences, timing."""

from __future__ import annotations

import pytest
import torch

from lipforcing_core.demo import PHONEMES, Utterance, synthesize_speech

SR = 16000


pytestmark = pytest.mark.usefixtures("single_thread")


def _peak_hz(wave: torch.Tensor, lo: float, hi: float) -> float:
    """Frequency of the strongest spectral component of ``wave`` within ``[lo, hi]`` Hz."""
    x = wave.double() * torch.hann_window(len(wave), dtype=torch.float64)
    power = torch.fft.rfft(x).abs() ** 2
    freqs = torch.fft.rfftfreq(len(wave), 1 / SR)
    band = (freqs > lo) & (freqs < hi)
    return float(freqs[band][power[band].argmax()])


@pytest.mark.parametrize("vowel", ["a", "e", "i", "o", "u"])
def test_vowels_peak_at_their_first_formant(vowel):
    f0 = 120.0
    wave = synthesize_speech(Utterance.from_phonemes(vowel, 0.3, f0_hz=f0), SR)
    steady = wave[int(0.25 * SR): int(0.45 * SR)]
    f1 = PHONEMES[vowel].formants[0]
    assert abs(_peak_hz(steady, 150, 1100) - f1) < f0  # the harmonic nearest F1 dominates


def test_open_and_close_vowels_differ_in_f1_and_f2():
    a = synthesize_speech(Utterance.from_phonemes("a", 0.3), SR)[int(0.25 * SR): int(0.45 * SR)]
    i = synthesize_speech(Utterance.from_phonemes("i", 0.3), SR)[int(0.25 * SR): int(0.45 * SR)]
    assert _peak_hz(a, 150, 1100) > 2 * _peak_hz(i, 150, 1100)
    assert _peak_hz(i, 1700, 3000) > _peak_hz(a, 900, 3000) + 600  # /i/ has a high F2


def test_fricatives_are_noise_in_their_band():
    s = synthesize_speech(Utterance.from_phonemes("s", 0.3), SR)[int(0.25 * SR): int(0.45 * SR)]
    sh = synthesize_speech(Utterance.from_phonemes("S", 0.3), SR)[int(0.25 * SR): int(0.45 * SR)]
    assert _peak_hz(s, 200, 8000) > 4500 and 2000 < _peak_hz(sh, 200, 8000) < 4500


def test_silences_are_silent_and_speech_is_not():
    for seed in range(4):
        utt = Utterance.sample(seed, 3.0)
        wave = synthesize_speech(utt, SR)
        assert wave.shape == (3 * SR,)
        margin = 0.03  # smoothing of the source amplitudes and the synthesis window overhang
        for seg in utt.segments:
            core = wave[int((seg.start + margin) * SR): int((seg.end - margin) * SR)]
            if seg.symbol == "_" and len(core):
                assert core.abs().max() < 1e-6
            elif seg.phoneme.kind == "vowel" and len(core) > 200:
                assert core.pow(2).mean().sqrt() > 0.01


def test_plosive_has_a_closure_then_a_burst():
    wave = synthesize_speech(Utterance.from_phonemes("apa", [0.15, 0.12, 0.15]), SR)
    start = 0.2 + 0.15
    closure = wave[int((start + 0.02) * SR): int((start + 0.06) * SR)]
    burst = wave[int((start + 0.072) * SR): int((start + 0.085) * SR)]
    assert closure.abs().max() < 0.02 < burst.abs().max()


def test_pitch_and_determinism():
    low = synthesize_speech(Utterance.from_phonemes("a", 0.4, f0_hz=100), SR)[int(0.3 * SR): int(0.5 * SR)]
    high = synthesize_speech(Utterance.from_phonemes("a", 0.4, f0_hz=200), SR)[int(0.3 * SR): int(0.5 * SR)]
    assert _peak_hz(low, 60, 140) == pytest.approx(100, abs=8)
    assert _peak_hz(high, 150, 260) == pytest.approx(200, abs=12)
    utt = Utterance.sample(9, 2.0)
    assert torch.equal(synthesize_speech(utt), synthesize_speech(utt))
