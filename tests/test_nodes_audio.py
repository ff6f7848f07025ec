"""Audio nodes: wav2vec2 loader and per-frame features, on the golden tiny wav2vec2 and stereo clip, and the
demo's built-in log-mel front end."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_env  # first: puts the ComfyUI test double on sys.path

# isort: split
from comfy_api.latest import io
from comfy_executor import Executor, WorkflowError
from lipforcing_pack.nodes import audio
from lipforcing_pack.nodes._types import LipForcingInputError
from lipforcing_pack.nodes.memory import manage

from lipforcing_core.audio.features import encode_audio
from lipforcing_core.audio.io import load_audio
from lipforcing_core.demo import LogMelFeatures


@pytest.fixture()
def base(tmp_path, golden_root):
    base = comfy_env.use_base(tmp_path)
    comfy_env.link_model(base, "audio_encoders", golden_root / "audio" / "wav2vec2_tiny")
    return base


@pytest.fixture(scope="module")
def clip(golden_root):
    waveform, rate = load_audio(golden_root / "audio" / "stereo_44100.wav")
    return {"waveform": waveform[None], "sample_rate": rate}


def encoder():
    return audio.AudioEncoderLoader.execute("wav2vec2_tiny/model.safetensors", "fp32").args[0]


def test_loader_finds_the_hf_folder(base):
    options = audio.AudioEncoderLoader.define_schema().inputs[0].options
    assert options == ["wav2vec2_tiny/model.safetensors", audio.DEMO_LOGMEL]  # files first, the built-in last
    assert encoder().kind == "audio_encoder"


def test_demo_log_mel_is_built_in(tmp_path, clip):
    comfy_env.use_base(tmp_path)  # an empty audio_encoders folder: the built-in needs no file
    assert audio.AudioEncoderLoader.define_schema().inputs[0].options == [audio.DEMO_LOGMEL]
    model = audio.AudioEncoderLoader.execute(audio.DEMO_LOGMEL, "bf16").args[0]
    assert model.kind == "audio_encoder" and isinstance(model.module, LogMelFeatures)
    features, frames = audio.AudioEncode.execute(model, clip, 25.0, 0).args
    expected = encode_audio(LogMelFeatures(), clip["waveform"][0], clip["sample_rate"], fps=25.0)
    assert features.shape == (frames, 160) and frames == expected.shape[0] > 0
    torch.testing.assert_close(features, expected, rtol=0, atol=0)
    with pytest.raises(LipForcingInputError, match="'audio': .*demo audio features are made for 25"):
        audio.AudioEncode.execute(model, clip, 30.0, 0)


def test_encode_is_the_core_features(base, clip):
    model = encoder()
    features, frames = audio.AudioEncode.execute(model, clip, 25.0, 0).args
    expected = encode_audio(model.module, clip["waveform"][0], clip["sample_rate"], fps=25.0)
    assert frames == features.shape[0] == expected.shape[0]
    torch.testing.assert_close(features, expected, rtol=0, atol=0)
    longer, frames = audio.AudioEncode.execute(model, clip, 25.0, frames + 10).args
    assert longer.shape[0] == frames and frames == features.shape[0] + 10


def test_encode_in_a_workflow(base, clip):
    class Speech(io.ComfyNode):  # test-only source standing in for ComfyUI's LoadAudio
        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="TestSpeech", inputs=[], outputs=[io.Audio.Output()])

        @classmethod
        def execute(cls):
            return io.NodeOutput(clip)

    workflow = {
        "1": {"class_type": "TestSpeech", "inputs": {}},
        "2": {"class_type": "LipForcingAudioEncoderLoader",
              "inputs": {"audio_encoder_name": "wav2vec2_tiny/model.safetensors", "weight_dtype": "fp32"}},
        "3": {"class_type": "LipForcingAudioEncode",
              "inputs": {"audio_encoder": ["2", 0], "audio": ["1", 0], "fps": 25.0, "frames": 12}},
    }
    result = Executor([Speech, *audio.NODES]).run(workflow)
    assert result.outputs["3"][0].shape[0] == 12 and result.outputs["3"][1] == 12
    workflow["3"]["inputs"]["audio_encoder"] = ["1", 0]
    with pytest.raises(WorkflowError, match="expects LIPFORCING_AUDIO_ENCODER but is linked to a AUDIO output"):
        Executor([Speech, *audio.NODES]).run(workflow)


def test_encode_explains_bad_inputs(base, clip):
    model = encoder()
    with pytest.raises(LipForcingInputError, match="'audio_encoder': expected an audio encoder .* got a Lip Forcing diffusion model"):
        audio.AudioEncode.execute(manage(torch.nn.Linear(1, 1), "dit", "x"), clip, 25.0, 0)
    with pytest.raises(LipForcingInputError, match="'audio': holds 2 clips"):
        audio.AudioEncode.execute(model, {"waveform": clip["waveform"].repeat(2, 1, 1), "sample_rate": 44100}, 25.0, 0)
    short = {"waveform": clip["waveform"][..., :1000], "sample_rate": clip["sample_rate"]}
    with pytest.raises(LipForcingInputError, match="'audio': .*at least 9 frames"):
        audio.AudioEncode.execute(model, short, 25.0, 0)
