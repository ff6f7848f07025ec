"""The Lip Forcing node pack: its node list and the ComfyUI extension that registers it.

Nodes only adapt ComfyUI types to ``lipforcing_core`` calls; the math lives in the core library.
"""

from __future__ import annotations

from . import audio, demo, face, loaders, sampler, syncnet, text, video
from ._comfy import ComfyExtension, io
from .paths import register_model_folders

NODES: list[type[io.ComfyNode]] = [
    *loaders.NODES, *text.NODES, *video.NODES, *audio.NODES, *face.NODES, *sampler.NODES, *syncnet.NODES,
    *demo.NODES,
]


class LipForcingExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> LipForcingExtension:
    """Called by ComfyUI after ``extra_model_paths.yaml`` is applied: add our folders, list the nodes."""
    register_model_folders()
    return LipForcingExtension()
