"""SyncNet MFCC front end against python_speech_features goldens (golden/audio §4)."""

import pytest
import torch
from safetensors.torch import load_file

from lipforcing_core.audio.mfcc import mel_filterbank, mfcc, num_frames, power_spectrum, preemphasis

ATOL = 1e-4  # golden/audio README §5: MFCC vs the float64 reference of the same convention


@pytest.fixture(scope="module")
def golden(golden_root):
    return load_file(golden_root / "audio" / "mfcc.safetensors")


def test_intermediates_match(golden):
    wav = golden["waveform_int16"]
    assert torch.equal(mel_filterbank(), golden["mel_filterbank"])
    torch.testing.assert_close(preemphasis(wav), golden["preemphasized"], rtol=0, atol=1e-9)
    ref = golden["power_spectrum"]
    torch.testing.assert_close(power_spectrum(wav), ref, rtol=1e-9, atol=1e-9 * ref.max().item())


def test_syncnet_convention_int16(golden):
    out = mfcc(golden["waveform_int16"])
    assert out.shape == (13, num_frames(golden["waveform_int16"].numel())) and out.dtype == torch.float64
    torch.testing.assert_close(out.T, golden["mfcc_syncnet"], rtol=0, atol=ATOL)
    torch.testing.assert_close(out.float()[None, None], golden["syncnet_net_input"], rtol=0, atol=ATOL)
    # Silent frames hit the eps floor: c0 = ln(2.22e-16).
    assert out[0].min().item() == pytest.approx(-36.04365338911715)


def test_lipforcing_convention_float32(golden):
    wav = golden["lipforcing_input_float32"] / 32768.0  # the scorer's [-1, 1] float32 waveform
    out = mfcc(wav)
    torch.testing.assert_close(out.T, golden["mfcc_lipforcing"], rtol=0, atol=ATOL)
    torch.testing.assert_close(out.float()[None, None], golden["lipforcing_net_input"], rtol=0, atol=ATOL)
    # The float32 pre-emphasis is what separates the two conventions; it must not be lost.
    assert (out.T - golden["mfcc_syncnet"]).abs().max() > 1e-7


def test_batched_equals_single(golden):
    wav = golden["waveform_int16"].double() / 32768.0
    batch = torch.stack([wav, 0.25 * wav.flip(0)])
    out = mfcc(batch)
    assert out.shape == (2, 13, 199)
    torch.testing.assert_close(out[1], mfcc(0.25 * wav.flip(0)), rtol=0, atol=1e-9)


@pytest.mark.parametrize("length,frames", [(1, 1), (400, 1), (401, 2), (560, 2), (561, 3), (25600, 159)])
def test_frame_count(length, frames):
    assert num_frames(length) == frames
    assert mfcc(torch.ones(length) * 0.1).shape == (13, frames)


def test_rejects_bad_input():
    with pytest.raises(TypeError, match="int16 or a float"):
        mfcc(torch.ones(800, dtype=torch.int32))
    with pytest.raises(ValueError, match="empty"):
        mfcc(torch.zeros(0))
