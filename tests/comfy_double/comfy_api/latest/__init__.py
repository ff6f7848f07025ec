"""Test double of ``comfy_api.latest``: the ``io`` module, ``ComfyExtension`` and the VIDEO value types
(``Input.Video`` = ``VideoInput``, ``InputImpl.VideoFromFile``)."""

from __future__ import annotations

import io as _bytes_io
from abc import ABC, abstractmethod

from . import _io as io


class ComfyExtension(ABC):
    async def on_load(self) -> None:
        """Called when the extension is loaded."""

    @abstractmethod
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        """The node classes this extension provides."""


class VideoInput(ABC):
    """A VIDEO value; nodes read it through ``get_stream_source`` (a path or a BytesIO for PyAV)."""

    @abstractmethod
    def get_stream_source(self) -> str | _bytes_io.BytesIO:
        """A streamable source of the video."""


class VideoFromFile(VideoInput):
    """A VIDEO backed by a file on disk or a BytesIO, as ComfyUI's Load Video makes it."""

    def __init__(self, file: str | _bytes_io.BytesIO):
        self.__file = file

    def get_stream_source(self) -> str | _bytes_io.BytesIO:
        if isinstance(self.__file, _bytes_io.BytesIO):
            self.__file.seek(0)
        return self.__file


class Input:
    Video = VideoInput


class InputImpl:
    VideoFromFile = VideoFromFile


IO = io

__all__ = ["IO", "ComfyExtension", "Input", "InputImpl", "io"]
