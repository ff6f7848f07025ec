"""The shipped workflows: UI and API files describe the same graph, and the API ones run in-process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_env  # first: puts the ComfyUI test double on sys.path

# isort: split
from comfy_executor import Executor
from comfy_workflows import DOWNLOADS, api_from_ui, ui_from_api
from lipforcing_pack.nodes.audio import DEMO_LOGMEL

from lipforcing_core.face import MediaPipeDetector, ModelNotFoundError
from lipforcing_core.video import read_video, write_video

WORKFLOWS = sorted((comfy_env.REPO / "workflows").glob("*_api.json"))


def schemas_by_type() -> dict:
    return {cls.GET_SCHEMA().node_id: cls.GET_SCHEMA() for cls in comfy_env.node_classes()}


@pytest.mark.parametrize("api_file", WORKFLOWS, ids=lambda p: p.name)
def test_ui_and_api_files_describe_the_same_graph(api_file):
    api = json.loads(api_file.read_text())
    ui = json.loads(api_file.with_name(api_file.name.replace("_api.json", ".json")).read_text())
    schemas = schemas_by_type()
    assert api_from_ui(ui, schemas) == api
    assert ui == json.loads(json.dumps(ui_from_api(api, {k: schemas[n["class_type"]] for k, n in api.items()})))


FILE_INPUTS = {"model_name": "models/diffusion_models", "vae_name": "models/vae", "taew_name": "models/vae_approx",
               "audio_encoder_name": "models/audio_encoders", "embedding_name": "models/text_embeddings",
               "syncnet_name": "models/syncnet", "video": "input"}


@pytest.mark.parametrize("api_file", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_validates_against_the_node_schemas(api_file, tmp_path):
    """With the files it names in place, every link, type, option and range of the workflow is valid."""
    base = comfy_env.use_base(tmp_path)
    api = json.loads(api_file.read_text())
    for node in api.values():
        for name, value in node["inputs"].items():
            if name in FILE_INPUTS and value != DEMO_LOGMEL:
                (base / FILE_INPUTS[name] / value).parent.mkdir(parents=True, exist_ok=True)
                (base / FILE_INPUTS[name] / value).write_bytes(b"")
    assert Executor(comfy_env.node_classes()).validate(api).keys() == api.keys()


@pytest.mark.parametrize("api_file", WORKFLOWS, ids=lambda p: p.name)
def test_loaders_say_where_to_download_their_files(api_file):
    """``properties.models`` (the editor's missing-model download) names the loader's own file and folder."""
    ui = json.loads(api_file.with_name(api_file.name.replace("_api.json", ".json")).read_text())
    api = json.loads(api_file.read_text())
    for node in ui["nodes"]:
        files = {FILE_INPUTS[k].removeprefix("models/"): v for k, v in api[str(node["id"])]["inputs"].items()
                 if k in FILE_INPUTS and k != "video"}
        listed = {m["name"]: m for m in node["properties"].get("models", [])}
        assert listed.keys() == {name for name in files.values() if name in DOWNLOADS}
        for entry in listed.values():
            assert files[entry["directory"]] == entry["name"] and entry["url"].startswith("https://")
            assert entry["url"].endswith("/" + entry["name"])


def test_demo_workflow_names_only_bundled_files():
    """Nothing to download: every file the demo workflow loads ships with the pack (or is built in)."""
    from lipforcing_core.demo.constants import STUDENT_FILE, SYNCNET_FILE, VAE_FILE

    api = json.loads((comfy_env.REPO / "workflows" / "lipforcing_demo_api.json").read_text())
    named = {(FILE_INPUTS[k].removeprefix("models/"), v) for node in api.values()
             for k, v in node["inputs"].items() if k in FILE_INPUTS}
    bundled = {(f.parent.name, f.name) for f in (STUDENT_FILE, VAE_FILE, SYNCNET_FILE)}
    assert named == bundled | {("audio_encoders", DEMO_LOGMEL)}
    assert STUDENT_FILE.parent.name == "diffusion_models" and not any(
        n["properties"].get("models") for n in json.loads(
            (comfy_env.REPO / "workflows" / "lipforcing_demo.json").read_text())["nodes"])


def _stand_in_demo_student(folder: Path) -> None:
    """A seeded random model with the demo student's layout and file format (fp16 flat safetensors)."""
    from safetensors.torch import save_file

    from lipforcing_core.config import get_preset
    from lipforcing_core.models.dit import LipForcingDiT

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    state = LipForcingDiT(get_preset("demo")).state_dict()
    save_file({k: v.half().contiguous() for k, v in state.items()}, str(folder / "demo_student.safetensors"))


def test_demo_workflow_runs_without_downloads(tmp_path, single_thread):
    """The shipped demo graph on the bundled VAE and SyncNet, the built-in log-mel and a stand-in student
    (the trained one is bundled later): 3 s of speech -> 69 composited frames in an mp4 with the speech."""
    base = comfy_env.use_base(tmp_path)
    _stand_in_demo_student(base / "models" / "diffusion_models")
    workflow = json.loads((comfy_env.REPO / "workflows" / "lipforcing_demo_api.json").read_text())
    result = Executor(comfy_env.node_classes()).run(workflow)
    source = result.outputs["1"][0]
    assert source.shape == (75, 64, 64, 3)
    generated, composited = result.outputs["7"][0], result.outputs["8"][0]
    assert generated.shape == composited.shape == (69, 64, 64, 3)  # 75 frames -> 18 latents -> 1 + 4*17
    assert "69 frames generated from 75 audio frames" in result.ui["7"]["text"][0]
    mouth = result.outputs["6"][0][0] >= 0.5  # the composite's binary mask (keep = 1 - mouth > 0.5)
    assert torch.equal(composited[:, ~mouth], (source[:69, ~mouth] * 255).round() / 255)  # outside: the source
    assert torch.equal(composited[:, mouth], generated[:, mouth])  # the mouth: generated
    saved = result.ui["9"]["images"][0]
    video = read_video(base / "output" / saved["subfolder"] / saved["filename"])
    assert saved["filename"].endswith(".mp4") and video.frames.shape == (69, 64, 64, 3)
    assert video.audio is not None and video.sample_rate == 16000
    for node in ("11", "12"):  # the output's and the ground truth's sync scores
        lse_c, lse_d, _, _ = result.outputs[node]
        assert np.isfinite([lse_c, lse_d]).all() and result.ui[node]["text"][0].startswith("LSE-C")
    assert result.outputs["12"][2] == 0  # the demo SyncNet finds the ground truth in sync


def test_syncnet_score_workflow_runs(tmp_path, golden_root):
    try:
        MediaPipeDetector()
    except ModelNotFoundError as err:
        pytest.skip(f"MediaPipe face models not installed: {err}")
    from safetensors.torch import load_file

    from lipforcing_core.audio.io import load_audio

    base = comfy_env.use_base(tmp_path)
    frames = load_file(str(golden_root / "face" / "inputs.safetensors"))["frames"].numpy()
    clip = frames[[0, 1, 2, 3, 4, 5, 4, 3, 2, 1, 0, 1]]  # 12 real frames at 25 fps
    speech, rate = load_audio(golden_root / "audio" / "stereo_44100.wav")
    write_video(base / "input" / "talking_head.mp4", clip, 25.0, speech[:, : rate * 12 // 25].numpy(), rate)
    (base / "models" / "syncnet").mkdir(parents=True)
    torch.save(load_file(str(golden_root / "syncnet" / "syncnet_v2_random.safetensors")),
               base / "models" / "syncnet" / "syncnet_v2.model")
    result = Executor(comfy_env.node_classes()).run(json.loads((comfy_env.REPO / "workflows" /
                                                                "syncnet_score_api.json").read_text()))
    lse_c, lse_d, offset, plot = result.outputs["4"]
    assert np.isfinite([lse_c, lse_d]).all() and lse_d > 0 and -15 <= offset <= 15
    assert plot.shape[0] == 1 and result.ui["4"]["text"][0].startswith("LSE-C")


def _tiny_wav2vec2(folder: Path, golden_root: Path) -> None:
    """A random wav2vec2 with base-960h's feature layout (12 layers x 768 -> 10752 values per frame)."""
    from safetensors.torch import save_file

    from lipforcing_core.audio.wav2vec2 import Wav2Vec2Config, build_model

    config = json.loads((golden_root / "audio" / "wav2vec2_tiny" / "config.json").read_text())
    config |= {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 32}
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    model = build_model(Wav2Vec2Config.from_hf(config))
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))


@pytest.mark.parametrize("name", ["lipforcing_14b_api.json"])
def test_released_workflow_runs_with_tiny_stand_ins(name, tmp_path, golden_root):
    """The released-model workflow, each model file replaced by a tiny one of the same kind and name
    (faces aligned at 64 instead of 512 to keep it fast on CPU)."""
    try:
        MediaPipeDetector()
    except ModelNotFoundError as err:
        pytest.skip(f"MediaPipe face models not installed: {err}")
    from safetensors.torch import load_file, save_file

    from lipforcing_core.audio.io import load_audio
    from lipforcing_core.vae.taehv import TAEHV

    base = comfy_env.use_base(tmp_path)
    models = base / "models"
    for folder in ("diffusion_models", "vae", "vae_approx", "text_embeddings"):
        (models / folder).mkdir(parents=True)
    torch.save(load_file(str(golden_root / "dit" / "weights.safetensors")), models / "diffusion_models" / "lipforcing_14b.pth")
    (models / "vae" / "wan_2.1_vae.safetensors").symlink_to(golden_root / "vae" / "weights.safetensors")
    torch.manual_seed(0)
    save_file({k: v.half() for k, v in TAEHV().state_dict().items()}, str(models / "vae_approx" / "taew2_1.safetensors"))
    _tiny_wav2vec2(models / "audio_encoders" / "wav2vec2-base-960h", golden_root)
    save_file({"context": torch.randn(1, 512, 4096)}, str(models / "text_embeddings" / "a_person_talking.safetensors"))
    frames = load_file(str(golden_root / "face" / "inputs.safetensors"))["frames"].numpy()[[0, 1, 2, 3, 4, 5, 4, 3, 2, 1, 0, 1]]
    speech, rate = load_audio(golden_root / "audio" / "stereo_44100.wav")
    write_video(base / "input" / "talking_head.mp4", frames, 25.0, speech[:, : rate * 12 // 25].numpy(), rate)

    workflow = json.loads((comfy_env.REPO / "workflows" / name).read_text())
    workflow["8"]["inputs"]["size"] = workflow["10"]["inputs"]["size"] = 64  # 64x64 faces keep CPU time low
    result = Executor(comfy_env.node_classes()).run(workflow)
    generated = result.outputs["11"][0]
    assert generated.shape == (9, 64, 64, 3)  # 12 audio frames -> 3 latent frames -> 1 + 4 * 2 video frames
    assert [p for p in result.progress if p[0] == "11"] == [("11", 1, 1, True)]
    saved = result.ui["13"]["images"][0]
    written = read_video(base / "output" / saved["subfolder"] / saved["filename"])
    assert len(written.frames) == 9 and written.frames.shape[1:] == frames.shape[1:]
