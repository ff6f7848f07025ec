"""Precomputed text embeddings: the release's low-memory alternative to running UMT5-XXL in ComfyUI."""

from __future__ import annotations

from lipforcing_core.checkpoints import CheckpointError
from lipforcing_core.sync import load_text

from ._comfy import io
from ._types import LipForcingInputError
from .paths import TEXT_FOLDER, choices, model_path


class LoadTextEmbedding(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LipForcingLoadTextEmbedding",
            display_name="Lip Forcing Load Text Embedding",
            category="LipForcing/loaders",
            description="A precomputed UMT5 prompt embedding ([1, N, 4096]) as CONDITIONING, instead of loading "
                        "the 11 GB text encoder with CLIPLoader (type wan) + CLIPTextEncode.",
            inputs=[
                io.Combo.Input("embedding_name", options=choices(TEXT_FOLDER),
                               tooltip="A .safetensors/.pt file holding one [1, N, 4096] tensor, in "
                                       "models/text_embeddings."),
            ],
            outputs=[io.Conditioning.Output(display_name="text")],
        )

    @classmethod
    def execute(cls, embedding_name: str) -> io.NodeOutput:
        try:
            context = load_text(model_path(TEXT_FOLDER, embedding_name, "embedding_name"))
        except CheckpointError as err:
            raise LipForcingInputError("embedding_name", str(err)) from err
        return io.NodeOutput([[context.float(), {}]])


NODES = [LoadTextEmbedding]
