"""The download-free log-mel front end: per-video-frame layout, length rule, phoneme contrast."""

from __future__ import annotations

import math

import pytest
import torch

from lipforcing_core.demo import LogMelConfig, LogMelFeatures, Utterance, num_video_frames, synthesize_speech

SR = 16000


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def frontend():
    return LogMelFeatures()


@pytest.mark.parametrize("num_samples", [640, 16000, 16001, 19679, 40000, 40639])
def test_shape_follows_the_wav2vec2_length_rule(frontend, num_samples):
    wave = torch.randn(2, num_samples, generator=torch.Generator().manual_seed(num_samples)) * 0.1
    feats = frontend(wave)
    v = math.floor(num_samples / SR * 25)
    assert num_video_frames(num_samples) == v
    assert feats.shape == (2, v, frontend.config.dim) and frontend.config.dim == 160
    assert feats.dtype == torch.float32 and torch.isfinite(feats).all()
    # the same features for a mono waveform and each batch item alone
    assert torch.allclose(frontend(wave[1]), feats[1:], atol=1e-5)


def test_num_frames_override_cuts_or_pads(frontend):
    wave = torch.randn(1, 16000, generator=torch.Generator().manual_seed(0))
    full = frontend(wave)
    cut = frontend(wave, num_frames=10)
    assert cut.shape == (1, 10, 160)
    assert torch.allclose(cut[:, :9], full[:, :9], atol=1e-4)  # the last frame's window overhangs into padding
    padded = frontend(wave, num_frames=30)
    assert padded.shape == (1, 30, 160) and torch.isfinite(padded).all()


def test_each_frame_summarises_its_own_samples(frontend):
    """A burst inside video frame k is loudest in feature frame k, in both stacked mel frames."""
    for k in (0, 7, 24):
        wave = torch.zeros(1, SR)
        wave[0, k * 640 + 100: k * 640 + 540] = torch.randn(440, generator=torch.Generator().manual_seed(k))
        feats = frontend(wave)[0].view(25, 2, 80).mean(-1)  # [V, 2 mel frames]
        assert int(feats.mean(1).argmax()) == k
        assert (feats[k] > feats.median() + 0.5).all()


def test_silence_is_constant_and_level_does_not_matter(frontend):
    silence = frontend(torch.zeros(1, SR))
    assert torch.isfinite(silence).all() and silence.std() < 1e-5
    speech = synthesize_speech(Utterance.sample(3, 2.0))
    assert torch.allclose(frontend(speech), frontend(0.1 * speech), atol=1e-3)


def test_features_distinguish_phonemes(frontend):
    """Frames inside /a/ resemble each other far more than they resemble frames inside /s/ or /u/."""
    wave = synthesize_speech(Utterance.from_phonemes("asu", [0.4, 0.4, 0.4], lead_s=0.2, tail_s=0.2))
    feats = frontend(wave)[0]  # 25 fps: /a/ frames 5..14, /s/ 15..24, /u/ 25..34
    a, s, u = feats[7:13], feats[17:23], feats[27:33]
    within = torch.cdist(a, a).mean()
    assert torch.cdist(a, s).mean() > 3 * within and torch.cdist(a, u).mean() > 2 * within
    # /s/ carries its energy in the high mel bins, /a/ in the low ones
    high = slice(60, 80)
    assert s.view(-1, 2, 80)[..., high].mean() > a.view(-1, 2, 80)[..., high].mean() + 0.3


def test_config_is_validated_and_inputs_checked(frontend):
    assert LogMelConfig(n_mels=40, frames_per_video_frame=4).dim == 160
    with pytest.raises(ValueError, match="divisible"):
        LogMelConfig(frames_per_video_frame=3)
    with pytest.raises(ValueError, match="shorter than one video frame"):
        frontend(torch.zeros(100))
    with pytest.raises(ValueError, match="waveform must be"):
        frontend(torch.zeros(2, 3, 640))
