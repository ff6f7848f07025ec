"""Keep the ComfyUI test double honest against a real ComfyUI (runs when ``COMFYUI_PATH`` is set).

1. Every public function/class/method of ``tests/comfy_double`` exists in the real ComfyUI and its
   parameters are a prefix of the real ones (same names, same defaults).
2. Every node's ``/object_info`` description built through the double equals the one built by the
   real ``comfy_api``, so schema tests run in CI mean the same thing as in ComfyUI.
3. The stand-ins of the core video nodes (``tests/comfy_workflows.py``) have the real nodes' sockets and
   widgets, so the shipped workflows stay valid for ComfyUI.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_env  # first: puts the ComfyUI test double on sys.path

# isort: split

DOUBLE_MODULES = ["comfy_api.latest._io", "comfy_api.latest", "folder_paths", "comfy.model_management",
                  "comfy.model_patcher", "comfy.utils"]
DOUBLE_ONLY = {"folder_paths:set_base_path", "folder_paths:MODEL_FOLDERS", "comfy_api.latest._io:_tensor_type"}


def _params(obj) -> list:
    """Parameters of a function (a class only has to exist; its methods are listed separately)."""
    if isinstance(obj, type) or not callable(obj):
        return []
    return [[p.name, repr(p.default) if p.default is not p.empty else None]
            for p in inspect.signature(obj).parameters.values()]


def double_surface() -> dict[str, list]:
    """``module:dotted.name`` -> parameters, for everything the double defines."""
    import importlib

    surface = {}
    for module_name in DOUBLE_MODULES:
        module = importlib.import_module(module_name)
        for name, obj in vars(module).items():
            if name.startswith("__") or inspect.ismodule(obj) or f"{module_name}:{name}" in DOUBLE_ONLY:
                continue
            if getattr(obj, "__module__", module_name) != module.__name__ and not isinstance(obj, type):
                continue
            surface[f"{module_name}:{name}"] = _params(obj)
            if isinstance(obj, type) and obj.__module__ == module.__name__:
                for attr, member in vars(obj).items():
                    if isinstance(member, (classmethod, staticmethod)):
                        member = member.__func__
                    if attr in ("Input", "Output") and isinstance(member, type):
                        surface[f"{module_name}:{name}.{attr}.__init__"] = _params(member.__init__)
                    elif inspect.isfunction(member) and (not attr.startswith("_") or attr == "__init__"):
                        surface[f"{module_name}:{name}.{attr}"] = _params(member)
    return surface


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """One ComfyUI base folder both sides list files from: a file in every folder a node lists."""
    base = tmp_path_factory.mktemp("comfy_base")
    for folder in ("diffusion_models", "vae", "vae_approx", "audio_encoders", "syncnet"):
        (base / "models" / folder).mkdir(parents=True)
        (base / "models" / folder / f"{folder}_model.safetensors").write_bytes(b"")
    (base / "input").mkdir()
    (base / "input" / "mask.png").write_bytes(b"")
    return base


@pytest.fixture(scope="module")
def real(base):
    comfy_path = os.environ.get("COMFYUI_PATH")
    if not comfy_path:
        pytest.skip("set COMFYUI_PATH (and COMFYUI_PYTHON) to check the test double against a real ComfyUI")
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    names = [key.split(":", 1) for key in double_surface()]
    probe = Path(__file__).with_name("comfy_probe.py")
    proc = subprocess.run([python, str(probe), comfy_path, str(comfy_env.REPO), str(base)],
                          input=json.dumps(names), capture_output=True, text=True, cwd=comfy_path, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _strip_self(params: list) -> list:
    return params[1:] if params and params[0][0] in ("self", "cls") else params


def test_double_names_exist_in_comfyui_with_compatible_parameters(real):
    problems = []
    for key, params in double_surface().items():
        theirs = real["signatures"][key]
        if theirs is None:
            problems.append(f"{key} does not exist in ComfyUI")
            continue
        theirs, ours = _strip_self(theirs), _strip_self(params)
        if theirs[: len(ours)] != ours:
            problems.append(f"{key}: double {ours} vs ComfyUI {theirs}")
    assert not problems, "\n".join(problems)


def test_node_descriptions_match_the_real_comfy_api(real, base):
    comfy_env.use_base(base)
    ours = {}
    for cls in comfy_env.node_classes():
        info = cls.GET_NODE_INFO_V1()
        info.pop("python_module")
        ours[info["name"]] = json.loads(json.dumps(info, default=str))
    assert ours == real["nodes"]
    assert "mask.png" in ours["LipForcingMouthMask"]["input"]["required"]["mask_image"][1]["options"]


def _sockets(info: dict) -> dict:
    """What a workflow sees of a node: its socket and widget inputs (types, combo options, defaults) in
    order, and its output types (no texts, no hidden inputs)."""
    sections = ("required", "optional")
    inputs = {section: {name: [spec[0], {k: v for k, v in spec[1].items() if k in ("options", "default")}]
                        for name, spec in info["input"].get(section, {}).items()} for section in sections}
    order = {section: info["input_order"].get(section, []) for section in sections}
    return {"inputs": inputs, "order": order, "outputs": info["output"], "output_node": info["output_node"]}


def test_core_video_stand_ins_match_the_real_nodes(real, base):
    from comfy_workflows import LoadVideo, SaveVideo

    comfy_env.use_base(base)
    for cls in (LoadVideo, SaveVideo):
        info = json.loads(json.dumps(cls.GET_NODE_INFO_V1(), default=str))
        assert _sockets(info) == _sockets(real["core"][info["name"]]), info["name"]
