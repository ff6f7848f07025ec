"""sync command end to end on a real clip with tiny random-weight models saved to files (format, not quality)."""

from __future__ import annotations

import json
import wave
from dataclasses import asdict

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from lipforcing_core.audio.wav2vec2 import Wav2Vec2Config, build_model
from lipforcing_core.checkpoints import CheckpointError
from lipforcing_core.cli import main
from lipforcing_core.config import get_preset
from lipforcing_core.models.dit import LipForcingDiT
from lipforcing_core.sync import load_text, mono_or_stereo
from lipforcing_core.vae.wan_vae import WanVAE, WanVAEConfig
from lipforcing_core.video import read_video, write_video

# (layers + 2) * hidden = 10752, the feature width the DiT's audio projection expects
TINY_W2V = Wav2Vec2Config(conv_dim=(16,) * 7, hidden_size=192, num_hidden_layers=54, num_attention_heads=3,
                          intermediate_size=32, num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=16)


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: one thread is fastest


@pytest.fixture(scope="module")
def small_clip(media_root, tmp_path_factory):
    """The first 12 frames of demo2 at half size (540x960) with their audio; keeps the test quick."""
    clip = read_video(media_root / "latentsync_demo2_video.mp4", size=(540, 960), max_frames=12)
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    return write_video(path, clip.frames, clip.fps, clip.audio[:, : int(12 / clip.fps * clip.sample_rate)], clip.sample_rate)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    dit = LipForcingDiT(get_preset("tiny")).init_weights(torch.Generator().manual_seed(0))
    save_file(dit.state_dict(), str(root / "dit.safetensors"))
    save_file(WanVAE(WanVAEConfig(dim=4)).state_dict(), str(root / "vae.safetensors"))
    w2v = root / "wav2vec2"
    w2v.mkdir()
    save_file(build_model(TINY_W2V).state_dict(), str(w2v / "model.safetensors"))
    (w2v / "config.json").write_text(json.dumps(asdict(TINY_W2V)))
    return root


def test_sync_cli_writes_synced_mp4(weights, small_clip, media_root, tmp_path):
    with wave.open(str(media_root / "latentsync_demo2_audio.wav")) as src, \
            wave.open(str(tmp_path / "speech.wav"), "wb") as dst:
        dst.setparams(src.getparams())
        dst.writeframes(src.readframes(int(0.46 * src.getframerate())))  # 11.5 frames: padded to 21, cut to 12
    out = tmp_path / "out.mp4"
    code = main(["sync", "--video", str(small_clip), "--audio", str(tmp_path / "speech.wav"),
                 "-o", str(out), "--dit", str(weights / "dit.safetensors"), "--vae", str(weights / "vae.safetensors"),
                 "--wav2vec", str(weights / "wav2vec2"), "--mask", str(media_root / "latentsync_mask.png"),
                 "--device", "cpu", "--face-size", "64"])
    assert code == 0
    video = read_video(out)
    assert len(video.frames) == round(0.46 * 25) and video.fps == pytest.approx(25.0)  # all of the speech
    assert video.frames.shape[1:] == (960, 540, 3)
    assert video.audio is not None and video.audio.shape[1] / video.sample_rate == pytest.approx(0.46, abs=0.05)
    source = read_video(small_clip, max_frames=len(video.frames)).frames
    assert np.abs(video.frames[:, :100].astype(int) - source[:, :100]).mean() < 3  # background kept (codec noise only)
    assert np.abs(video.frames.astype(int) - source).max() > 50  # the face region was replaced


def test_load_text_and_audio_channels(tmp_path):
    save_file({"context": torch.ones(7, 4096)}, str(tmp_path / "t.safetensors"))
    assert load_text(tmp_path / "t.safetensors").shape == (1, 7, 4096) and load_text(None) is None
    save_file({"a": torch.ones(1, 7, 768)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match="4096"):
        load_text(tmp_path / "bad.safetensors")
    assert mono_or_stereo(np.ones((6, 10), np.float32)).shape == (1, 10)
    assert mono_or_stereo(np.ones((2, 10), np.float32)).shape == (2, 10)
