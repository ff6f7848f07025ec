"""Golden wav2vec2 features (OmniAvatar recipe), soxr resampling, chunked CNN, bad input."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from lipforcing_core.audio import (
    encode_audio,
    features_at,
    load_audio,
    load_wav2vec2,
    normalize,
    prepare_waveform,
    resample,
)
from lipforcing_core.audio.features import CHUNK_DEVIATION, MIN_FRAMES

ATOL = 1e-4  # golden README: suggested float32 threshold for the tiny model


@pytest.fixture(scope="module")
def audio_dir(golden_root):
    return golden_root / "audio"


@pytest.fixture(scope="module")
def encoder(audio_dir):
    return load_wav2vec2(audio_dir / "wav2vec2_tiny")


@pytest.fixture(scope="module")
def inputs(audio_dir):
    return load_file(str(audio_dir / "wav2vec_inputs.safetensors"))


@pytest.fixture(scope="module")
def outputs(audio_dir):
    return load_file(str(audio_dir / "wav2vec_outputs.safetensors"))


@pytest.fixture(scope="module")
def resampled(audio_dir):
    return load_file(str(audio_dir / "wav2vec_resample.safetensors"))


def test_normalization(inputs):
    assert torch.allclose(normalize(inputs["waveform"][None])[0], inputs["input_values"], atol=1e-6)


@pytest.mark.parametrize("case", ["A", "B"])
@torch.inference_mode()
def test_golden_stages(encoder, inputs, outputs, case):
    expected = {k.removeprefix(f"case{case}_"): v for k, v in outputs.items() if k.startswith(f"case{case}_")}
    seq_len = expected["audio_emb"].shape[0]
    padded = inputs[f"case{case}_input_values_padded"][None]
    cnn = encoder.cnn_features(padded)
    assert torch.allclose(cnn[0], expected["cnn_features"], atol=ATOL)
    interp = torch.nn.functional.interpolate(cnn.transpose(1, 2), size=seq_len, mode="linear", align_corners=True).transpose(1, 2)
    assert torch.allclose(interp[0], expected["cnn_interp"], atol=ATOL)
    projection = encoder.model.encoder.feature_projection
    assert torch.allclose(projection.layer_norm(interp)[0], expected["projection_layernorm"], atol=ATOL)
    assert torch.allclose(encoder.project(interp)[0], expected["projected"], atol=ATOL)
    states = torch.stack(list(encoder.hidden_states(encoder.project(interp))))[:, 0]
    assert torch.allclose(states, expected["hidden_states"], atol=ATOL)
    assert torch.allclose(states[-1], expected["last_hidden_state"], atol=ATOL)
    # the whole recipe from the unpadded normalised input
    emb = features_at(encoder, normalize(inputs["waveform"][None]), seq_len)[0]
    assert emb.shape == expected["audio_emb"].shape
    assert torch.allclose(emb, expected["audio_emb"], atol=ATOL)


@torch.inference_mode()
def test_golden_plain_hf_forward(encoder, inputs, outputs):
    cnn = encoder.cnn_features(inputs["input_values"][None])
    assert torch.allclose(cnn[0], outputs["plain_cnn_features"], atol=ATOL)
    states = torch.stack(list(encoder.hidden_states(encoder.project(cnn))))[:, 0]
    assert torch.allclose(states, outputs["plain_hidden_states"], atol=ATOL)


@torch.inference_mode()
def test_encode_audio_frame_policy(encoder, inputs, outputs):
    wave = inputs["waveform"]
    # default V = floor(2.0 s * 25) = 50: case A
    assert torch.allclose(encode_audio(encoder, wave[None], 16000), outputs["caseA_audio_emb"], atol=ATOL)
    # video longer than the audio: encoded at 53 frames (zero padding after normalising): case B
    assert torch.allclose(encode_audio(encoder, wave, 16000, num_frames=53), outputs["caseB_audio_emb"], atol=ATOL)
    # video shorter than the audio: encoded over all the audio at 50 frames, then sliced
    assert torch.allclose(encode_audio(encoder, wave, 16000, num_frames=20), outputs["caseA_audio_emb"][:20], atol=ATOL)


@torch.inference_mode()
def test_stereo_44k_matches_librosa_soxr(encoder, resampled, audio_dir):
    assert torch.allclose(prepare_waveform(resampled["stereo"], 44100)[0], resampled["librosa_16k"], atol=1e-6)
    wave, rate = load_audio(audio_dir / "stereo_44100.wav")
    assert rate == 44100 and torch.equal(wave, resampled["stereo"])
    emb = encode_audio(encoder, wave, rate)
    assert emb.shape == (50, 128)
    assert torch.allclose(emb, resampled["librosa_audio_emb"], atol=ATOL)
    # torchaudio's resampler is not what the released model saw: its features differ visibly
    assert (resampled["torchaudio_audio_emb"] - resampled["librosa_audio_emb"]).abs().max() > 0.1


def test_resample_length_and_batch_channels_independent():
    x = torch.randn(2, 3, 1001)
    out = resample(x, 48000)
    assert out.shape == (2, 3, 334)  # ceil(1001 * 16000 / 48000)
    assert torch.equal(out[1, 2], resample(x[1, 2], 48000))


@torch.inference_mode()
def test_batched_comfy_layout_matches_single(encoder, resampled):
    stereo = resampled["stereo"]
    batch = torch.stack([stereo, stereo.flip(0) * 0.5])
    emb = encode_audio(encoder, batch, 44100)
    assert emb.shape == (2, 50, 128)
    assert torch.allclose(emb[0], encode_audio(encoder, stereo, 44100), atol=1e-5)
    # per-clip normalisation: a quieter copy of the same mono mix gives the same features
    assert torch.allclose(emb[1], emb[0], atol=1e-3)


@torch.inference_mode()
def test_chunked_cnn_matches_one_shot(encoder, inputs, outputs):
    iv = normalize(inputs["waveform"][None])
    for chunk in (2, 20):
        emb = features_at(encoder, iv, 53, chunk=chunk)[0]
        assert torch.allclose(emb, outputs["caseB_audio_emb"], atol=CHUNK_DEVIATION)


def test_bad_input_errors(encoder):
    with pytest.raises(ValueError, match="empty audio"):
        encode_audio(encoder, torch.zeros(1, 0), 16000)
    for bad in (float("nan"), float("inf")):
        wave = torch.zeros(1, 16000)
        wave[0, 100] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            encode_audio(encoder, wave, 16000)
    with pytest.raises(ValueError, match=f"at least {MIN_FRAMES} frames"):
        encode_audio(encoder, torch.randn(1, 640 * (MIN_FRAMES - 1)), 16000)
    with pytest.raises(ValueError, match="sample_rate"):
        encode_audio(encoder, torch.randn(1, 16000), 0)
    with pytest.raises(ValueError, match=r"\[B, C, T\]"):
        encode_audio(encoder, torch.randn(1, 1, 1, 16000), 16000)
    with pytest.raises(ValueError, match="fps"):
        encode_audio(encoder, torch.randn(16000), 16000, fps=0)
    with pytest.raises(ValueError, match="num_frames"):
        encode_audio(encoder, torch.randn(16000), 16000, num_frames=0)


@torch.inference_mode()
def test_silence_is_valid_and_finite(encoder):
    """All-silent audio is documented behaviour, not an error: it encodes as silence."""
    emb = encode_audio(encoder, torch.zeros(2, 16000), 16000)
    assert emb.shape == (25, 128) and torch.isfinite(emb).all()
    assert torch.equal(emb, features_at(encoder, torch.zeros(1, 16000), 25)[0])
    assert emb.abs().max() > 0  # the model's response to silence, not zeros
