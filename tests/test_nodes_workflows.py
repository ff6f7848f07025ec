"""The shipped workflows: each example (UI) workflow describes the same graph as its API file, reads well
(every node in a group, no overlaps, a note for each model file it cannot offer to download), and the API
ones run in-process."""

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
from comfy_workflows import (API_DIR, DOWNLOAD_HOSTS, DOWNLOAD_SUFFIXES, DOWNLOADS, LAYOUTS, TEMPLATE_DIR, api_from_ui,
                             node_classes, schemas_by_type, template)
from lipforcing_pack.nodes.audio import DEMO_LOGMEL

from lipforcing_core.face import MediaPipeDetector, ModelNotFoundError
from lipforcing_core.video import read_video, write_video

WORKFLOWS = sorted(API_DIR.glob("*_api.json"))
BY_API = {layout.api: layout for layout in LAYOUTS}


def _ui(api_file: Path) -> dict:
    return json.loads((TEMPLATE_DIR / f"{BY_API[api_file.name].name}.json").read_text())


def test_template_folder_holds_only_ui_workflows_and_their_thumbnails():
    """ComfyUI lists every ``*.json`` of ``example_workflows/`` as a template, with ``<name>.jpg`` as its
    thumbnail: each must be a loadable UI workflow (no API file, no node list)."""
    names = {layout.name for layout in LAYOUTS}
    assert {p.stem for p in TEMPLATE_DIR.glob("*.json")} == names
    assert {p.stem for p in TEMPLATE_DIR.glob("*.jpg")} == names
    assert {p.suffix for p in TEMPLATE_DIR.iterdir()} == {".json", ".jpg"}
    assert {layout.api for layout in LAYOUTS} == {p.name for p in WORKFLOWS}
    for name in names:
        ui = json.loads((TEMPLATE_DIR / f"{name}.json").read_text())
        assert ui["nodes"] and ui["links"] and ui["groups"] and ui["extra"]["ds"]["scale"] >= 0.7
        assert (TEMPLATE_DIR / f"{name}.jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG
    for folder in ("example", "examples", "workflow", "workflows"):  # ComfyUI lists these folders too
        assert not (comfy_env.REPO / folder).exists()


@pytest.mark.parametrize("api_file", WORKFLOWS, ids=lambda p: p.name)
def test_ui_and_api_files_describe_the_same_graph(api_file):
    api = json.loads(api_file.read_text())
    ui = _ui(api_file)
    assert api_from_ui(ui, schemas_by_type()) == api
    assert ui == json.loads(json.dumps(template(BY_API[api_file.name])))  # python tests/comfy_workflows.py


def _box(node: dict) -> tuple[float, float, float, float]:
    """A node's rectangle with its title bar (LiteGraph draws the 30-unit title above ``pos``)."""
    (x, y), (w, h) = node["pos"], node["size"]
    return x, y - 30, x + w, y + h


@pytest.mark.parametrize("api_file", WORKFLOWS, ids=lambda p: p.name)
def test_layout_reads_left_to_right_in_groups_without_overlaps(api_file):
    ui = _ui(api_file)
    boxes = {n["id"]: _box(n) for n in ui["nodes"]}
    for a in boxes:
        for b in boxes:
            if a < b:
                (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = boxes[a], boxes[b]
                assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0, f"nodes {a} and {b} overlap"
    for node_id, (x0, y0, x1, y1) in boxes.items():
        inside = [g["title"] for g in ui["groups"] if g["bounding"][0] <= x0 and x1 <= g["bounding"][0] + g["bounding"][2]
                  and g["bounding"][1] <= y0 and y1 <= g["bounding"][1] + g["bounding"][3]]
        assert len(inside) == 1, f"node {node_id} lies in groups {inside}"
    titles = [g["title"] for g in ui["groups"]]
    assert titles[:2] == ["Models", "Inputs"] and set(titles) <= {"Models", "Inputs", "Faces", "Lip sync", "Output",
                                                                  "Scores"}, titles
    models, inputs = (next(g for g in ui["groups"] if g["title"] == t)["bounding"] for t in ("Models", "Inputs"))
    assert models[0] + models[2] <= inputs[0]  # models on the left, then the inputs
    shown = [n.get("title") or n["type"] for n in ui["nodes"]]  # untitled nodes show their type's name
    assert len(set(shown)) == len(shown), f"two nodes look the same: {shown}"


@pytest.mark.parametrize("api_file", WORKFLOWS, ids=lambda p: p.name)
def test_results_are_shown_by_stock_display_nodes(api_file):
    """Every SyncNet score's and sampler's summary feeds Preview as Text, every plot Preview Image."""
    api = json.loads(api_file.read_text())
    shown = {(tuple(n["inputs"].get("source") or n["inputs"]["images"]), n["class_type"]) for n in api.values()
             if n["class_type"] in ("PreviewAny", "PreviewImage")}
    for node_id, node in api.items():
        if node["class_type"] == "LipForcingSyncNetScore":
            assert {((node_id, 4), "PreviewAny"), ((node_id, 3), "PreviewImage")} <= shown
        if node["class_type"] in ("LipForcingSampler", "LipForcingLipSyncVideo"):
            assert ((node_id, 1), "PreviewAny") in shown


FILE_INPUTS = {"model_name": "models/diffusion_models", "vae_name": "models/vae", "taew_name": "models/vae_approx",
               "audio_encoder_name": "models/audio_encoders", "embedding_name": "models/text_embeddings",
               "syncnet_name": "models/syncnet", "video": "input", "file": "input"}


@pytest.mark.parametrize("api_file", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_validates_against_the_node_schemas(api_file, tmp_path):
    """With the files it names in place, every link, type, option and range of the workflow is valid."""
    base = comfy_env.use_base(tmp_path)
    api = json.loads(api_file.read_text())
    for node in api.values():
        for name, value in node["inputs"].items():
            if name in FILE_INPUTS and isinstance(value, str) and value != DEMO_LOGMEL:  # a file name, not a link
                (base / FILE_INPUTS[name] / value).parent.mkdir(parents=True, exist_ok=True)
                (base / FILE_INPUTS[name] / value).write_bytes(b"")
    assert Executor(node_classes()).validate(api).keys() == api.keys()


@pytest.mark.parametrize("api_file", WORKFLOWS, ids=lambda p: p.name)
def test_every_model_file_is_downloadable_or_explained(api_file):
    """A loader's ``properties.models`` (the editor's Missing Models dialog) lists its file only where the
    dialog can download it (a Hugging Face / Civitai ``.safetensors`` into the loader's folder); every file
    the workflow loads is named in its Models note with its folder."""
    ui, api = _ui(api_file), json.loads(api_file.read_text())
    notes = " ".join(n["widgets_values"][0] for n in ui["nodes"] if n["type"] == "MarkdownNote")
    for node in ui["nodes"]:
        if node["type"] == "MarkdownNote":
            continue
        files = {FILE_INPUTS[k].removeprefix("models/"): v for k, v in api[str(node["id"])]["inputs"].items()
                 if k in FILE_INPUTS and FILE_INPUTS[k] != "input"}
        listed = {m["name"]: m for m in node["properties"].get("models", [])}
        assert listed.keys() == {name for name in files.values() if name in DOWNLOADS}
        for entry in listed.values():
            assert files[entry["directory"]] == entry["name"] and entry["url"].endswith("/" + entry["name"])
            assert entry["url"].startswith(DOWNLOAD_HOSTS) and entry["name"].endswith(DOWNLOAD_SUFFIXES)
        for folder, name in files.items():
            if name != DEMO_LOGMEL:
                assert f"`{name.split('/')[-1]}`" in notes and folder in notes, f"no note names {folder}/{name}"


def test_demo_workflow_names_only_bundled_files():
    """Nothing to download: every file the demo workflow loads ships with the pack (or is built in)."""
    from lipforcing_core.demo.constants import STUDENT_FILE, SYNCNET_FILE, VAE_FILE

    api = json.loads((API_DIR / "lipforcing_demo_api.json").read_text())
    named = {(FILE_INPUTS[k].removeprefix("models/"), v) for node in api.values()
             for k, v in node["inputs"].items() if k in FILE_INPUTS}
    bundled = {(f.parent.name, f.name) for f in (STUDENT_FILE, VAE_FILE, SYNCNET_FILE)}
    assert named == bundled | {("audio_encoders", DEMO_LOGMEL)}
    assert STUDENT_FILE.parent.name == "diffusion_models" and not any(
        n["properties"].get("models") for n in _ui(API_DIR / "lipforcing_demo_api.json")["nodes"])


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
    workflow = json.loads((API_DIR / "lipforcing_demo_api.json").read_text())
    result = Executor(node_classes()).run(workflow)
    source = result.outputs["1"][0]
    assert source.shape == (75, 64, 64, 3)
    generated, composited = result.outputs["7"][0], result.outputs["8"][0]
    assert generated.shape == composited.shape == (69, 64, 64, 3)  # 75 frames -> 18 latents -> 1 + 4*17
    assert "69 frames generated from 75 audio frames" in result.ui["13"]["text"][0]  # the length summary
    mouth = result.outputs["6"][0][0] >= 0.5  # the composite's binary mask (keep = 1 - mouth > 0.5)
    assert torch.equal(composited[:, ~mouth], (source[:69, ~mouth] * 255).round() / 255)  # outside: the source
    assert torch.equal(composited[:, mouth], generated[:, mouth])  # the mouth: generated
    saved = result.ui["9"]["images"][0]
    video = read_video(base / "output" / saved["subfolder"] / saved["filename"])
    assert saved["filename"].endswith(".mp4") and video.frames.shape == (69, 64, 64, 3)
    assert video.audio is not None and video.sample_rate == 16000
    for node, shown, plot in (("11", "14", "15"), ("12", "16", "17")):  # the output's and ground truth's scores
        lse_c, lse_d, *_ = result.outputs[node]
        assert np.isfinite([lse_c, lse_d]).all()
        assert result.ui[shown]["text"][0].startswith(f"LSE-C {lse_c:.3f}  LSE-D {lse_d:.3f}")  # Preview as Text
        assert result.ui[plot]["images"][0]["shape"][0] == 1  # the offset plot into Preview Image
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
    result = Executor(node_classes()).run(json.loads((API_DIR / "syncnet_score_api.json").read_text()))
    lse_c, lse_d, offset, plot, summary = result.outputs["4"]
    assert np.isfinite([lse_c, lse_d]).all() and lse_d > 0 and -15 <= offset <= 15
    assert plot.shape[0] == 1 and result.ui["5"]["text"][0] == summary and summary.startswith("LSE-C")


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


def _released_stand_ins(base: Path, golden_root: Path, fps: float = 25.0) -> np.ndarray:
    """Each file the released-model workflows load replaced by a tiny one of the same kind and name, and
    ``input/talking_head.mp4``: 12 real face frames at ``fps`` with speech. Returns the frames."""
    try:
        MediaPipeDetector()
    except ModelNotFoundError as err:
        pytest.skip(f"MediaPipe face models not installed: {err}")
    from safetensors.torch import load_file, save_file

    from lipforcing_core.audio.io import load_audio
    from lipforcing_core.vae.taehv import TAEHV

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
    write_video(base / "input" / "talking_head.mp4", frames, fps, speech[:, : round(rate * 12 / fps)].numpy(), rate)
    return frames


@pytest.mark.parametrize("name", ["lipforcing_14b_api.json"])
def test_released_workflow_runs_with_tiny_stand_ins(name, tmp_path, golden_root):
    """The released-model workflow on tiny stand-ins of its files (faces aligned at 64 instead of 512 to
    keep it fast on CPU)."""
    base = comfy_env.use_base(tmp_path)
    frames = _released_stand_ins(base, golden_root)
    workflow = json.loads((API_DIR / name).read_text())
    workflow["8"]["inputs"]["size"] = workflow["10"]["inputs"]["size"] = 64  # 64x64 faces keep CPU time low
    result = Executor(node_classes()).run(workflow)
    generated = result.outputs["11"][0]
    assert generated.shape == (9, 64, 64, 3)  # 12 audio frames -> 3 latent frames -> 1 + 4 * 2 video frames
    assert [p for p in result.progress if p[0] == "11"] == [("11", 1, 1, True)]
    saved = result.ui["13"]["images"][0]
    written = read_video(base / "output" / saved["subfolder"] / saved["filename"])
    assert len(written.frames) == 9 and written.frames.shape[1:] == frames.shape[1:]


def test_long_video_workflow_streams_with_tiny_stand_ins(tmp_path, golden_root):
    """The streamed long-video workflow on tiny stand-ins of the released files and a 30 fps input: core
    Load Video -> Lip Sync (video) -> core Save Video writes a 25 fps mp4 as long as the speech, with it
    muxed in, and the summary reaches Preview as Text."""
    base = comfy_env.use_base(tmp_path)
    frames = _released_stand_ins(base, golden_root, fps=30.0)  # 0.4 s of video and speech
    workflow = json.loads((API_DIR / "lipforcing_14b_video_api.json").read_text())
    workflow["7"]["inputs"]["face_size"] = 64  # 64x64 faces keep CPU time low
    result = Executor(node_classes()).run(workflow)
    assert [p[1:3] for p in result.progress if p[0] == "7"] == [(1, 2), (2, 2)]  # a progress step per chunk
    summary = result.outputs["7"][1]
    assert summary.startswith("10 frames for 0.4") and "face in 10 frames" in summary  # 0.4 s at 25 fps
    assert result.ui["9"]["text"][0] == summary
    saved = result.ui["8"]["images"][0]
    written = read_video(base / "output" / saved["subfolder"] / saved["filename"])
    assert saved["filename"].endswith(".mp4") and written.fps == pytest.approx(25.0)
    assert len(written.frames) == 10 and written.frames.shape[1:] == frames.shape[1:]
    assert written.audio.shape[1] / written.sample_rate == pytest.approx(0.4, abs=0.05)
