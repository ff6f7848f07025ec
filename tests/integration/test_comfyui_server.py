"""The pack inside a real ComfyUI server (runs when ``COMFYUI_PATH`` is set, skips otherwise).

Starts ``main.py --cpu`` on a free loopback port with an isolated ``--base-directory`` (a temp folder
whose ``custom_nodes/`` links to this repo, an in-memory database), then talks HTTP to it:
``GET /object_info`` must list every node of ``workflows/node_list.json``; a workflow mixing our nodes
with ComfyUI's own (LoadImage, LoadAudio, SaveImage, PreviewAny) on the golden tiny models is queued
with ``POST /prompt`` and polled in ``/history`` until it finishes; a bad input must come back as a
node error a user can read. The shipped demo workflow runs on the files bundled in this repo alone
(``lipforcing_core/demo/weights``, registered as extra model paths), with nothing in ``models/``.

    COMFYUI_PATH=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/venv/bin/python python -m pytest tests/integration
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 300
RUN_TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, url: str, proc: subprocess.Popen, log: Path, base: Path):
        self.url, self.proc, self.log, self.base = url, proc, log, base

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=60) as resp:
            return json.load(resp)

    def post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as err:
            raise AssertionError(f"POST {path} -> {err.code}: {err.read().decode()[:4000]}") from err

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _prepare_base(base: Path, golden: Path) -> None:
    """custom_nodes/ -> this repo; the golden tiny wav2vec2; a face frame and a speech clip in input/."""
    from PIL import Image
    from safetensors.torch import load_file

    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "comfyui-lipforcing").symlink_to(REPO, target_is_directory=True)
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
    # for workflows/syncnet_score_api.json: 12 real face frames with speech, and a SyncNet v2 file
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
    comfy = os.environ.get("COMFYUI_PATH")
    if not comfy:
        pytest.skip("set COMFYUI_PATH (and COMFYUI_PYTHON) to run the pack inside a real ComfyUI")
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    base = tmp_path_factory.mktemp("comfy_base")
    _prepare_base(base, golden_root)
    port = _free_port()
    log = base / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base),
             "--database-url", "sqlite:///:memory:", "--disable-auto-launch"],
            cwd=comfy, stdout=out, stderr=subprocess.STDOUT)
    srv = Server(f"http://127.0.0.1:{port}", proc, log, base)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ComfyUI exited with {proc.returncode}:\n{srv.log_text()[-4000:]}")
            try:
                srv.get("/system_stats")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    pytest.fail(f"ComfyUI did not start in {START_TIMEOUT_S}s:\n{srv.log_text()[-4000:]}")
                time.sleep(1)
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_pack_loads_and_lists_its_nodes(server):
    log = server.log_text()
    ours = [line for line in log.splitlines() if "comfyui-lipforcing" in line]
    assert any("seconds" in line for line in ours), log[-4000:]  # listed in "Import times for custom nodes"
    assert not [line for line in ours if "IMPORT FAILED" in line or "Cannot import" in line], log[-4000:]
    assert "Error while calling comfy_entrypoint" not in log, log[-4000:]
    info = server.get("/object_info")
    expected = json.loads((REPO / "workflows" / "node_list.json").read_text())["nodes"]
    assert sorted(name for name in info if name.startswith("LipForcing")) == sorted(expected)
    for name in expected:
        node = info[name]
        assert node["category"].startswith("LipForcing/")
        for section in ("required", "optional"):
            for input_name, spec in node["input"].get(section, {}).items():
                assert spec[1].get("tooltip"), f"{name}.{input_name} has no tooltip"


def _run(server: Server, workflow: dict) -> dict:
    """Queue ``workflow`` and return its ``/history`` entry once ComfyUI has finished it."""
    prompt_id = server.post("/prompt", {"prompt": workflow, "client_id": "lipforcing-test"})["prompt_id"]
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        entry = server.get(f"/history/{prompt_id}").get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None and (
                entry["status"]["completed"] or entry["status"].get("status_str") == "error"):
            return entry
        time.sleep(0.5)
    raise AssertionError(f"prompt {prompt_id} did not finish in {RUN_TIMEOUT_S}s:\n{server.log_text()[-4000:]}")


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
    workflow = json.loads((REPO / "workflows" / "syncnet_score_api.json").read_text())
    entry = _run(server, workflow)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert entry["outputs"]["4"]["text"][0].startswith("LSE-C")


def test_shipped_demo_workflow_runs_with_nothing_installed(server):
    from lipforcing_core.demo.constants import STUDENT_FILE
    from lipforcing_core.video import read_video

    if not STUDENT_FILE.is_file():
        pytest.skip(f"the demo student is not bundled in this checkout ({STUDENT_FILE} is missing)")
    assert not list(server.base.glob("models/*/demo_*"))  # only the bundled files can be used
    workflow = json.loads((REPO / "workflows" / "lipforcing_demo_api.json").read_text())
    entry = _run(server, workflow)
    assert entry["status"]["status_str"] == "success", entry["status"]
    video = entry["outputs"]["9"]["images"][0]
    path = server.base / "output" / video["subfolder"] / video["filename"]
    assert video["filename"].endswith(".mp4") and path.is_file()
    clip = read_video(path)
    assert clip.frames.shape == (69, 64, 64, 3) and clip.audio is not None  # 3 s of speech -> 69 frames
    for node in ("11", "12"):  # sync scores of the output and of the ground truth
        assert entry["outputs"][node]["text"][0].startswith("LSE-C")
