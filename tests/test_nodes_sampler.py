"""The streaming sampler node on the golden tiny DiT and VAE: frame count, progress, equality with the core."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_env  # first: puts the ComfyUI test double on sys.path

# isort: split
from comfy_api.latest import io
from comfy_executor import Executor, WorkflowError
from lipforcing_pack.nodes import audio, face, loaders, sampler
from lipforcing_pack.nodes._types import LipForcingInputError

from lipforcing_core.pipeline import LipSyncPipeline, frames_to_uint8

SIZE, FRAMES = 32, 21  # 21 audio frames -> 6 latent frames -> 2 chunks, 21 output frames


@pytest.fixture()
def base(tmp_path):
    return comfy_env.use_base(tmp_path)


@pytest.fixture()
def models(base, golden_root):
    comfy_env.link_model(base, "diffusion_models", golden_root / "dit" / "weights.safetensors", "tiny_dit.safetensors")
    comfy_env.link_model(base, "vae", golden_root / "vae" / "weights.safetensors", "tiny_vae.safetensors")
    dit = loaders.ModelLoader.execute("tiny_dit.safetensors", "fp32", "auto").args[0]
    vae = loaders.VAELoader.execute("tiny_vae.safetensors", "fp32").args[0]
    return dit, vae


def inputs(frames: int = 17, audio_frames: int = FRAMES):
    g = torch.Generator().manual_seed(0)
    faces = torch.rand(frames, SIZE, SIZE, 3, generator=g)
    embeds = torch.randn(audio_frames, 10752, generator=g)
    mask = face.MouthMask.execute(face.BUILT_IN_MASK, SIZE).args[0]
    text = [[torch.randn(1, 7, 4096, generator=g), {"pooled_output": None}]]
    return faces, embeds, mask, text


def test_sampler_is_the_core_pipeline(models):
    dit, vae = models
    faces, embeds, mask, text = inputs(frames=5, audio_frames=9)  # one chunk; the video is ping-pong extended
    out = sampler.Sampler.execute(dit, vae, embeds, faces, mask, 7, "0.999, 0.769, 0",
                                  next(iter(sampler.WINDOWS)), text=text)
    images, summary = out.args
    assert images.shape == (9, SIZE, SIZE, 3) and 0 <= float(images.min()) and float(images.max()) <= 1
    assert "9 frames generated" in summary and "ping-pong" in summary and out.ui["text"] == [summary]
    pipeline = LipSyncPipeline(dit.module, vae.module)
    keep = 1.0 - mask[0].double().numpy()
    context = torch.nn.functional.pad(text[0][0], (0, 0, 0, 505))
    frames = (faces * 255).round().byte().numpy()
    expected = frames_to_uint8(pipeline.run(frames, embeds, keep, text=context, seed=7))[0]
    np.testing.assert_array_equal((images * 255).round().byte().numpy(), expected)


def test_sampler_in_a_workflow_reports_each_chunk(models):
    dit, vae = models
    faces, embeds, mask, _ = inputs()

    class Sources(io.ComfyNode):  # test-only: stands in for the loaders, Face Align and Audio Encode
        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="TestSources", inputs=[], outputs=[
                loaders.LipForcingModel.Output(), loaders.WanVAE.Output(), audio.AudioEmbeds.Output(),
                io.Image.Output(), io.Mask.Output()])

        @classmethod
        def execute(cls):
            return io.NodeOutput(dit, vae, embeds, faces, mask)

    workflow = {
        "1": {"class_type": "TestSources", "inputs": {}},
        "2": {"class_type": "LipForcingSampler", "inputs": {
            "model": ["1", 0], "vae": ["1", 1], "audio_embeds": ["1", 2], "faces": ["1", 3], "mouth_mask": ["1", 4],
            "seed": 1, "t_list": "0.999, 0.769, 0", "window": "full causal (memory grows)"}},
    }
    result = Executor([Sources, *sampler.NODES]).run(workflow)
    assert result.outputs["2"][0].shape[0] == FRAMES
    assert result.progress == [("2", 1, 2, True), ("2", 2, 2, True)]
    workflow["2"]["inputs"]["vae"] = ["1", 0]
    with pytest.raises(WorkflowError, match="expects LIPFORCING_VAE but is linked to a LIPFORCING_MODEL output"):
        Executor([Sources, *sampler.NODES]).run(workflow)


def test_sampler_explains_bad_inputs(models):
    dit, vae = models
    faces, embeds, mask, _ = inputs()
    window = next(iter(sampler.WINDOWS))
    with pytest.raises(LipForcingInputError, match="'vae': expected a Wan2.1 video VAE, got a Lip Forcing diffusion model"):
        sampler.Sampler.execute(dit, dit, embeds, faces, mask, 0, "0.999, 0", window)
    with pytest.raises(LipForcingInputError, match="'t_list'"):
        sampler.Sampler.execute(dit, vae, embeds, faces, mask, 0, "fast", window)
    with pytest.raises(LipForcingInputError, match="at least 9"):
        sampler.Sampler.execute(dit, vae, embeds[:5], faces, mask, 0, "0.999, 0", window)
    with pytest.raises(LipForcingInputError, match="multiples of 16"):
        sampler.Sampler.execute(dit, vae, embeds, faces[:, :24, :24], mask[:, :24, :24], 0, "0.999, 0", window)


@pytest.fixture()
def lip_sync_models(models, base, golden_root):
    """(DiT sized for the tiny wav2vec2, the tiny VAE, the tiny wav2vec2), skipping without the MediaPipe models."""
    from lipforcing_pack.nodes.memory import manage

    from lipforcing_core.config import DiTConfig
    from lipforcing_core.face import MediaPipeDetector, ModelNotFoundError
    from lipforcing_core.models.dit import LipForcingDiT

    try:
        MediaPipeDetector()
    except ModelNotFoundError as err:
        pytest.skip(f"MediaPipe face models not installed: {err}")
    comfy_env.link_model(base, "audio_encoders", golden_root / "audio" / "wav2vec2_tiny")
    encoder = audio.AudioEncoderLoader.execute("wav2vec2_tiny/model.safetensors", "fp32").args[0]
    torch.manual_seed(0)
    dit = manage(LipForcingDiT(DiTConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=4, audio_dim=128)), "dit", "t")
    return dit, models[1], encoder


def test_one_node_lip_sync(lip_sync_models, golden_root):
    """The one node on real frames (an IMAGE batch), streamed through the core's job."""
    from safetensors.torch import load_file

    from lipforcing_core.audio.io import load_audio

    dit, vae, encoder = lip_sync_models
    frames = load_file(str(golden_root / "face" / "inputs.safetensors"))["frames"][:3]
    speech, rate = load_audio(golden_root / "audio" / "stereo_44100.wav")
    clip = {"waveform": speech[None, :, : rate * FRAMES // 25], "sample_rate": rate}
    out = sampler.LipSync.execute(dit, vae, encoder, frames.float() / 255, clip, 3, face.MEDIAPIPE, SIZE)
    (images,) = out.args
    assert images.shape == (FRAMES, *frames.shape[1:])
    changed = ((images[:3] * 255).round() != frames.float()).any(-1)
    assert changed.any() and changed.float().mean() < 0.05  # only the face region is replaced


def test_text_embedding_file_feeds_the_sampler(models, base):
    from lipforcing_pack.nodes import text
    from safetensors.torch import save_file

    folder = base / "models" / "text_embeddings"
    folder.mkdir(parents=True)
    save_file({"context": torch.randn(1, 512, 4096)}, str(folder / "a_person_talking.safetensors"))
    save_file({"a": torch.zeros(1, 4096), "b": torch.zeros(1, 4096)}, str(folder / "two.safetensors"))
    assert text.LoadTextEmbedding.define_schema().inputs[0].options == ["a_person_talking.safetensors",
                                                                          "two.safetensors"]
    (conditioning,) = text.LoadTextEmbedding.execute("a_person_talking.safetensors").args
    assert conditioning[0][0].shape == (1, 512, 4096)
    dit, vae = models
    faces, embeds, mask, _ = inputs(frames=9, audio_frames=9)
    images = sampler.Sampler.execute(dit, vae, embeds, faces, mask, 0, "0.999, 0", next(iter(sampler.WINDOWS)),
                                     text=conditioning).args[0]
    assert images.shape[0] == 9
    with pytest.raises(LipForcingInputError, match="'embedding_name'.*exactly one"):
        text.LoadTextEmbedding.execute("two.safetensors")


def test_video_node_streams_file_to_file(lip_sync_models, base, golden_root, media_root):
    """VIDEO in (a 30 fps file), VIDEO out in ComfyUI's temp folder: 25 fps, as long as the speech, audio muxed."""
    from comfy_api.latest import InputImpl

    from lipforcing_core.audio.io import load_audio
    from lipforcing_core.video import read_video, write_video

    dit, vae, encoder = lip_sync_models
    clip = read_video(media_root / "latentsync_demo3_video.mp4", size=(270, 480), max_frames=15)
    source = write_video(base / "in.mp4", clip.frames, clip.fps, clip.audio[:, : clip.sample_rate // 2], clip.sample_rate)
    speech, rate = load_audio(golden_root / "audio" / "stereo_44100.wav")
    seconds = 0.7
    driving = {"waveform": speech[None, :, : round(rate * seconds)], "sample_rate": rate}
    out = sampler.LipSyncVideo.execute(dit, vae, encoder, InputImpl.VideoFromFile(str(source)), 3, face.MEDIAPIPE,
                                       SIZE, audio=driving)
    result, text = out.args
    path = Path(result.get_stream_source())
    assert path.parent == base / "temp" and path.suffix == ".mp4"
    written = read_video(path)
    assert len(written.frames) == round(seconds * 25) and written.fps == pytest.approx(25.0)
    assert written.audio.shape[1] / written.sample_rate == pytest.approx(seconds, abs=0.05)
    assert "ping-pong extended" in text and out.ui["text"] == [text]  # 0.5 s of video for 0.7 s of speech
    with pytest.raises(LipForcingInputError, match="no audio stream"):
        silent = write_video(base / "silent.mp4", clip.frames, clip.fps)
        sampler.LipSyncVideo.execute(dit, vae, encoder, InputImpl.VideoFromFile(str(silent)), 3, face.MEDIAPIPE, SIZE)
