"""Run inside a real ComfyUI's Python: describe the pack's nodes and the real API signatures.

``python comfy_probe.py COMFYUI_PATH PACK_PATH BASE_DIR < names.json`` (``BASE_DIR`` as ComfyUI's
``--base-directory``: models, input, output) prints JSON with
``nodes`` (``GET_NODE_INFO_V1()`` of every node, as ``/object_info`` serves it), ``core`` (the same for
the V3 core nodes of ``CORE_NODES``, which the shipped workflows use through stand-ins) and ``signatures``
(for each requested ``[module, dotted.name]``, the parameter list, or null if the name is missing).
Used by ``test_nodes_double.py`` to keep ``tests/comfy_double`` faithful.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import sys

CORE_NODES = [("comfy_extras.nodes_video", "LoadVideo"), ("comfy_extras.nodes_video", "SaveVideo")]


def signature(module_name: str, dotted: str) -> list | None:
    import inspect

    target = importlib.import_module(module_name)
    for part in dotted.split("."):
        if not hasattr(target, part):
            return None
        target = getattr(target, part)
    if isinstance(target, type) or not callable(target):
        return []
    return [[p.name, repr(p.default) if p.default is not p.empty else None]
            for p in inspect.signature(target).parameters.values()]


def main() -> None:
    comfy_root, pack_root, base = sys.argv[1:4]
    sys.path.insert(0, comfy_root)
    from comfy.cli_args import args

    args.cpu = True
    args.base_directory = base
    spec = importlib.util.spec_from_file_location("lipforcing_pack", f"{pack_root}/__init__.py",
                                                  submodule_search_locations=[pack_root])
    pack = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = pack
    spec.loader.exec_module(pack)
    extension = asyncio.run(pack.comfy_entrypoint())
    nodes = {}
    for cls in asyncio.run(extension.get_node_list()):
        info = cls.GET_NODE_INFO_V1()
        info.pop("python_module")
        nodes[info["name"]] = info
    core = {name: getattr(importlib.import_module(module), name).GET_NODE_INFO_V1() for module, name in CORE_NODES}
    names = json.load(sys.stdin)
    signatures = {f"{m}:{n}": signature(m, n) for m, n in names}
    print(json.dumps({"nodes": nodes, "core": core, "signatures": signatures}, default=str))


if __name__ == "__main__":
    main()
