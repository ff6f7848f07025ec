"""In-process node tests run against the ComfyUI test double in ``tests/comfy_double``.

Importing this module puts the double first on ``sys.path`` (the real ComfyUI is exercised in a
separate process, see ``test_nodes_double.py`` and ``integration/``) and imports the repository
the way ComfyUI does: as a package (named ``lipforcing_pack`` here) whose ``nodes`` subpackage holds
the nodes. Tests import ``lipforcing_pack.nodes...``; a bare ``import nodes`` would be ambiguous
(ComfyUI has a ``nodes`` module, and pytest may name the repo package after its folder).
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

DOUBLE = Path(__file__).resolve().parent / "comfy_double"
REPO = DOUBLE.parents[1]
PACK = "lipforcing_pack"

if str(DOUBLE) not in sys.path:
    sys.path.insert(0, str(DOUBLE))

import folder_paths

if not getattr(folder_paths, "__file__", "").startswith(str(DOUBLE)):
    raise ImportError(f"expected the ComfyUI test double, but folder_paths comes from {folder_paths.__file__}")


def _import_pack():
    if PACK not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK] = module
        spec.loader.exec_module(module)
    return sys.modules[PACK]


pack = _import_pack()


def node_classes() -> list[type]:
    """The pack's node classes, as ComfyUI gets them from ``comfy_entrypoint``."""
    extension = asyncio.run(pack.comfy_entrypoint())
    return asyncio.run(extension.get_node_list())


def use_base(base: Path) -> Path:
    """Point the double's ``folder_paths`` at a fresh ComfyUI base folder (with our folders registered)."""
    folder_paths.set_base_path(str(base))
    (base / "input").mkdir(parents=True, exist_ok=True)
    from lipforcing_pack.nodes.paths import register_model_folders

    register_model_folders()
    return base


def bundled(folder: str) -> list[str]:
    """The bundled demo weight files the pack adds to a model folder's choices (sorted, maybe none)."""
    from lipforcing_core.demo.constants import WEIGHTS_DIR

    root = WEIGHTS_DIR / folder
    return sorted(p.name for p in root.glob("*.safetensors")) if root.is_dir() else []


def link_model(base: Path, folder: str, source: Path, name: str | None = None) -> str:
    """Make ``source`` (a file or an HF folder) appear in ``models/<folder>``; returns the combo value."""
    target = base / "models" / folder / (name or source.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source, target_is_directory=source.is_dir())
    return target.name
