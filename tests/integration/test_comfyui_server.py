"""The pack inside a real ComfyUI server (runs when ``COMFYUI_PATH`` is set, skips otherwise).

Starts ``main.py --cpu`` on a free loopback port with an isolated ``--base-directory`` (a temp folder
whose ``custom_nodes/`` links to this repo, an in-memory database), then talks HTTP to it:
``GET /object_info`` must list every node of ``workflows/node_list.json``, and each API-format
workflow of ``RUNNABLE`` is queued with ``POST /prompt`` and polled in ``/history`` until it succeeds.

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


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    comfy = os.environ.get("COMFYUI_PATH")
    if not comfy:
        pytest.skip("set COMFYUI_PATH (and COMFYUI_PYTHON) to run the pack inside a real ComfyUI")
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    base = tmp_path_factory.mktemp("comfy_base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "comfyui-lipforcing").symlink_to(REPO, target_is_directory=True)
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
