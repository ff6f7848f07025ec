"""ComfyUI entry point of the Lip Forcing node pack.

ComfyUI imports this folder as a package and calls ``comfy_entrypoint``. The core library ships in
this folder; it is registered as the top-level ``lipforcing_core`` (without touching ``sys.path``,
which would let our ``nodes`` package shadow ComfyUI's ``nodes`` module).
"""

import importlib.util
import sys
from pathlib import Path


def _register_bundled_core() -> None:
    if "lipforcing_core" in sys.modules:
        return
    root = Path(__file__).resolve().parent / "lipforcing_core"
    spec = importlib.util.spec_from_file_location("lipforcing_core", root / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["lipforcing_core"] = module
    spec.loader.exec_module(module)


_register_bundled_core()


async def comfy_entrypoint():
    """ComfyUI's V3 entry point (ComfyUI modules are imported only now, so the folder imports anywhere)."""
    from .nodes import comfy_entrypoint as entry

    return await entry()
