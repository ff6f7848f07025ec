"""A real ComfyUI server for the integration tests: ``main.py --cpu`` on a free loopback port with an
isolated ``--base-directory`` (its ``custom_nodes/`` links to this repository, an in-memory database).

``COMFYUI_PATH`` names the ComfyUI checkout and ``COMFYUI_PYTHON`` its interpreter; without
``COMFYUI_PATH`` the tests that need a server skip.
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACK_FOLDER = "comfyui-lipforcing"  # the pack's folder name in custom_nodes/ (and its template category)
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


def link_pack(base: Path) -> None:
    """``base/custom_nodes/comfyui-lipforcing`` -> this repository."""
    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    (base / "custom_nodes" / PACK_FOLDER).symlink_to(REPO, target_is_directory=True)


def require_comfyui() -> str:
    """The ComfyUI checkout named by ``COMFYUI_PATH``; skips the test without it."""
    comfy = os.environ.get("COMFYUI_PATH")
    if not comfy:
        pytest.skip("set COMFYUI_PATH (and COMFYUI_PYTHON) to run the pack inside a real ComfyUI")
    return comfy


@contextmanager
def comfyui(base: Path) -> Iterator[Server]:
    """A ComfyUI server on ``base`` (prepared by the caller), stopped on exit; skips without ``COMFYUI_PATH``."""
    comfy = require_comfyui()
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
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


def run_prompt(server: Server, workflow: dict) -> dict:
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
