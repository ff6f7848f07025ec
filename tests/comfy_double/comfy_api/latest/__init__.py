"""Test double of ``comfy_api.latest``: the ``io`` module and ``ComfyExtension``."""

from __future__ import annotations

from abc import ABC, abstractmethod

from . import _io as io


class ComfyExtension(ABC):
    async def on_load(self) -> None:
        """Called when the extension is loaded."""

    @abstractmethod
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        """The node classes this extension provides."""


IO = io

__all__ = ["IO", "ComfyExtension", "io"]
