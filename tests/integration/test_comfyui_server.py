"""The pack inside a real ComfyUI server (runs when ``COMFYUI_PATH`` is set, skips otherwise).

Starts ``main.py --cpu`` on a free loopback port with an isolated ``--base-directory`` (a temp folder
whose ``custom_nodes/`` links to this repo, an in-memory database; see ``comfy_server.py``), then talks
HTTP to it: ``GET /object_info`` must list every node of ``tests/node_list.json``; a workflow mixing our nodes
with ComfyUI's own (LoadImage, LoadAudio, SaveImage, PreviewAny) on the golden tiny models is queued
with ``POST /prompt`` and polled in ``/history`` until it finishes; a bad input must come back as a
node error a user can read. The shipped demo workflow runs on the files bundled in this repo alone
(``lipforcing_core/demo/weights``, registered as extra model paths), with nothing in ``models/``; so
does the long-video one (ComfyUI's Load Video and Save Video around Lip Sync (video)) with the demo loaders.

    COMFYUI_PATH=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/venv/bin/python python -m pytest tests/integration
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfy_server import REPO, comfyui, link_pack, require_comfyui
from comfy_server import run_prompt as _run


def _prepare_base(base: Path, golden: Path) -> None:
    """custom_nodes/ -> this repo; the golden tiny wav2vec2; a face frame and a speech clip in input/."""
    from PIL import Image
    from safetensors.torch import load_file

    link_pack(base)
    (base / "models" / "audio_encoders").mkdir(parents=True)
    (base / "models" / "audio_encoders" / "wav2vec2_tiny").symlink_to(golden / "audio" / "wav2vec2_tiny")
    (base / "input").mkdir()
    frame = load_file(str(golden / "face" / "inputs.safetensors"))["frames"][0].numpy()
    Image.fromarray(frame).save(base / "input" / "face.png")
    (base / "input" / "speech.wav").symlink_to(golden / "audio" / "stereo_44100.wav")
    from lipforcing_core.video import write_video

    ramp = np.linspace(0, 255, 30).astype(np.uint8)[:, None, None, None] + np.zeros((30, 48, 64, 3), np.uint8)
    tone = (0.5 * np.sin(np.arange(16000) * 2 * np.pi * 220 / 16000)).astype(np.float32)[None]
    write_video(base / "input" / "clip.mp4", ramp, 30.0, tone, 16000)
    # for api_workflows/syncnet_score_api.json: 12 real face frames with speech, and a SyncNet v2 file
    import torch

    from lipforcing_core.audio.io import load_audio

    frames = load_file(str(golden / "face" / "inputs.safetensors"))["frames"].numpy()[[0, 1, 2, 3, 4, 5, 4, 3, 2, 1, 0, 1]]
    speech, speech_rate = load_audio(golden / "audio" / "stereo_44100.wav")
    write_video(base / "input" / "talking_head.mp4", frames, 25.0, speech[:, : speech_rate * 12 // 25].numpy(),
                speech_rate)
    (base / "models" / "syncnet").mkdir(parents=True)
    torch.save(load_file(str(golden / "syncnet" / "syncnet_v2_random.safetensors")),
               base / "models" / "syncnet" / "syncnet_v2.model")
    rate, silence = 16000, np.zeros(1600, np.int16)  # 0.1 s: too short to lip sync
    import wave

    with wave.open(str(base / "input" / "short.wav"), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(rate), out.writeframes(silence.tobytes())


@pytest.fixture(scope="module")
def server(tmp_path_factory, golden_root):
    require_comfyui()
    base = tmp_path_factory.mktemp("comfy_base")
    _prepare_base(base, golden_root)
    with comfyui(base) as srv:
        yield srv


def test_pack_loads_and_lists_its_nodes(server):
    log = server.log_text()
    ours = [line for line in log.splitlines() if "comfyui-lipforcing" in line]
    assert any("seconds" in line for line in ours), log[-4000:]  # listed in "Import times for custom nodes"
    assert not [line for line in ours if "IMPORT FAILED" in line or "Cannot import" in line], log[-4000:]
    assert "Error while calling comfy_entrypoint" not in log, log[-4000:]
    info = server.get("/object_info")
    expected = json.loads((REPO / "tests" / "node_list.json").read_text())["nodes"]
    assert sorted(name for name in info if name.startswith("LipForcing")) == sorted(expected)
    for name in expected:
        node = info[name]
        assert node["category"].startswith("LipForcing/")
        for section in ("required", "optional"):
            for input_name, spec in node["input"].get(section, {}).items():
                assert spec[1].get("tooltip"), f"{name}.{input_name} has no tooltip"


WORKFLOW = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "face.png"}},
    "2": {"class_type": "LipForcingFaceAlign", "inputs": {"images": ["1", 0], "detector": "mediapipe (offline, bundled)",
                                                          "face_index": 0, "size": 512}},
    "3": {"class_type": "LipForcingMouthMask", "inputs": {"mask_image": "built-in (LatentSync mouth mask)", "size": 512}},
    "4": {"class_type": "LipForcingPasteBack", "inputs": {"images": ["1", 0], "faces": ["2", 0], "alignment": ["2", 1],
                                                          "mouth_mask": ["3", 0]}},
    "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "lipforcing_pasted"}},
    "6": {"class_type": "LoadAudio", "inputs": {"audio": "speech.wav"}},
    "7": {"class_type": "LipForcingAudioEncoderLoader",
          "inputs": {"audio_encoder_name": "wav2vec2_tiny/model.safetensors", "weight_dtype": "fp32"}},
    "8": {"class_type": "LipForcingAudioEncode", "inputs": {"audio_encoder": ["7", 0], "audio": ["6", 0], "fps": 25.0,
                                                            "frames": 0}},
    "9": {"class_type": "PreviewAny", "inputs": {"source": ["8", 1]}},
    "10": {"class_type": "LipForcingLoadVideo", "inputs": {"video": "clip.mp4", "fps": 25.0, "max_frames": 0}},
    "11": {"class_type": "LipForcingSaveVideo", "inputs": {"images": ["10", 0], "fps": ["10", 2],
                                                           "filename_prefix": "lipforcing/clip", "audio": ["10", 1]}},
}


def test_workflow_runs_through_comfyui(server):
    entry = _run(server, WORKFLOW)
    assert entry["status"]["status_str"] == "success", entry["status"]
    saved = entry["outputs"]["5"]["images"][0]
    assert (server.base / "output" / saved.get("subfolder", "") / saved["filename"]).is_file()
    video = entry["outputs"]["11"]["images"][0]
    assert (server.base / "output" / video["subfolder"] / video["filename"]).is_file()
    assert video["filename"].endswith(".mp4")
    duration = 352844 / (44100 * 2 * 2)  # the golden clip: 16-bit stereo at 44.1 kHz, about 2 s
    assert abs(int(entry["outputs"]["9"]["text"][0]) - duration * 25) <= 1


def test_bad_input_is_a_readable_node_error(server):
    workflow = {key: WORKFLOW[key] for key in ("6", "7", "8", "9")}
    workflow["6"] = {"class_type": "LoadAudio", "inputs": {"audio": "short.wav"}}
    entry = _run(server, workflow)
    assert entry["status"]["status_str"] == "error"
    errors = [msg for kind, msg in entry["status"]["messages"] if kind == "execution_error"]
    assert errors and errors[0]["node_type"] == "LipForcingAudioEncode"
    assert "Lip Forcing input 'audio'" in errors[0]["exception_message"]


def test_shipped_syncnet_workflow_runs(server):
    workflow = json.loads((REPO / "api_workflows" / "syncnet_score_api.json").read_text())
    entry = _run(server, workflow)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert entry["outputs"]["4"]["text"][0].startswith("LSE-C")
    assert entry["outputs"]["5"]["text"] == entry["outputs"]["4"]["text"]  # ComfyUI's Preview as Text shows it
    assert entry["outputs"]["6"]["images"][0]["type"] == "temp"  # the offset plot in Preview Image


def test_shipped_demo_workflow_runs_with_nothing_installed(server):
    from lipforcing_core.demo.constants import STUDENT_FILE
    from lipforcing_core.video import read_video

    if not STUDENT_FILE.is_file():
        pytest.skip(f"the demo student is not bundled in this checkout ({STUDENT_FILE} is missing)")
    assert not list(server.base.glob("models/*/demo_*"))  # only the bundled files can be used
    workflow = json.loads((REPO / "api_workflows" / "lipforcing_demo_api.json").read_text())
    entry = _run(server, workflow)
    assert entry["status"]["status_str"] == "success", entry["status"]
    video = entry["outputs"]["9"]["images"][0]
    path = server.base / "output" / video["subfolder"] / video["filename"]
    assert video["filename"].endswith(".mp4") and path.is_file()
    clip = read_video(path)
    assert clip.frames.shape == (69, 64, 64, 3) and clip.audio is not None  # 3 s of speech -> 69 frames
    assert "69 frames generated" in entry["outputs"]["13"]["text"][0]  # the sampler's summary, Preview as Text
    for node, shown, plot in (("11", "14", "15"), ("12", "16", "17")):  # scores of the output and ground truth
        assert entry["outputs"][node]["text"][0].startswith("LSE-C")
        assert entry["outputs"][shown]["text"] == entry["outputs"][node]["text"]
        assert entry["outputs"][plot]["images"][0]["filename"].endswith(".png")


def test_shipped_long_video_workflow_runs_with_core_video_nodes(server):
    """The long-video template through ComfyUI's own Load Video and Save Video, with the demo workflow's
    loaders (the bundled files) instead of the released ones: 64-pixel faces, no text embedding, no tiny
    decoder."""
    from lipforcing_core.demo.constants import STUDENT_FILE
    from lipforcing_core.video import read_video

    if not STUDENT_FILE.is_file():
        pytest.skip(f"the demo student is not bundled in this checkout ({STUDENT_FILE} is missing)")
    workflow = json.loads((REPO / "api_workflows" / "lipforcing_14b_video_api.json").read_text())
    demo = {n["class_type"]: n for n in json.loads((REPO / "api_workflows" / "lipforcing_demo_api.json").read_text()).values()}
    for node_id in ("1", "2", "4"):
        workflow[node_id] = demo[workflow[node_id]["class_type"]]
    for node_id, name in (("3", "taew"), ("5", "text")):  # the released tiny decoder and text embedding
        del workflow[node_id], workflow["7"]["inputs"][name]
    workflow["7"]["inputs"]["face_size"] = 64
    entry = _run(server, workflow)
    assert entry["status"]["status_str"] == "success", entry["status"]
    video = entry["outputs"]["8"]["images"][0]
    clip = read_video(server.base / "output" / video["subfolder"] / video["filename"])
    assert len(clip.frames) == 12 and clip.fps == pytest.approx(25.0) and clip.audio is not None  # 0.48 s of speech
    assert entry["outputs"]["9"]["text"][0].startswith("12 frames for 0.")  # the node's summary, Preview as Text
