"""In-process node tests run against the ComfyUI test double in ``tests/comfy_double``.

Importing this module puts the double first on ``sys.path`` (the real ComfyUI is exercised in a
separate process, see ``test_nodes_double.py`` and ``integration/``), then exposes the pack's node list.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

DOUBLE = Path(__file__).resolve().parent / "comfy_double"
REPO = DOUBLE.parents[1]

for _path in (str(REPO), str(DOUBLE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import folder_paths  # noqa: E402

if not getattr(folder_paths, "__file__", "").startswith(str(DOUBLE)):
    raise ImportError(f"expected the ComfyUI test double, but folder_paths comes from {folder_paths.__file__}")


def node_classes() -> list[type]:
    """The pack's node classes, as ComfyUI gets them from ``comfy_entrypoint``."""
    from nodes import comfy_entrypoint

    extension = asyncio.run(comfy_entrypoint())
    return asyncio.run(extension.get_node_list())
