"""SyncNet nodes: load SyncNet v2 and score how well lips and audio agree (LSE-C, LSE-D, offset)."""

from __future__ import annotations

import numpy as np
import torch

from lipforcing_core.config import FPS
from lipforcing_core.syncnet.metrics import evaluate_sync
from lipforcing_core.syncnet.model import load_syncnet
from lipforcing_core.syncnet.plot import plot_offsets

from ._comfy import io, model_management
from ._types import LipForcingInputError, image_from_frames, mono_waveform
from .memory import expect, load_managed
from .paths import SYNCNET_FOLDER, choices

SyncNet = io.Custom("LIPFORCING_SYNCNET")


class SyncNetLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LipForcingSyncNetLoader",
            display_name="Lip Forcing SyncNet Loader",
            category="LipForcing/loaders",
            description="Load SyncNet v2 (syncnet_python), or the bundled demo SyncNet, to measure lip sync.",
            inputs=[
                io.Combo.Input("syncnet_name", options=choices(SYNCNET_FOLDER),
                               tooltip="syncnet_v2.model (or a safetensors copy) in models/syncnet, or the bundled "
                                       "demo_syncnet.safetensors for the demo clips (its scores are on its own "
                                       "scale: compare them with the ground truth's)."),
            ],
            outputs=[SyncNet.Output(display_name="syncnet")],
        )

    @classmethod
    def execute(cls, syncnet_name: str) -> io.NodeOutput:
        return io.NodeOutput(load_managed("syncnet", SYNCNET_FOLDER, syncnet_name, "syncnet_name", load_syncnet))


class SyncNetScore(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LipForcingSyncNetScore",
            display_name="Lip Forcing SyncNet Score",
            category="LipForcing/metrics",
            description="syncnet_python's evaluation: LSE-C (confidence, higher is better), LSE-D (distance, "
                        "lower is better) and the audio-video offset in frames.",
            inputs=[
                SyncNet.Input("syncnet", tooltip="From Lip Forcing SyncNet Loader."),
                io.Image.Input("faces", tooltip="Face crops at 25 fps, e.g. the aligned faces from Lip Forcing "
                                                "Face Align (any size; resized to the network's input, 224x224 for "
                                                "SyncNet v2)."),
                io.Audio.Input("audio", tooltip="The audio of the same clip, starting at the first frame."),
                io.Float.Input("fps", default=FPS, min=1.0, max=120.0, step=0.001,
                               tooltip="Frame rate of the faces; SyncNet v2 needs 25 fps."),
            ],
            outputs=[
                io.Float.Output(display_name="lse_c", tooltip="Sync confidence (median - min distance)."),
                io.Float.Output(display_name="lse_d", tooltip="Minimum mean distance over offsets."),
                io.Int.Output(display_name="offset", tooltip="AV offset in frames (positive: audio leads)."),
                io.Image.Output(display_name="plot", tooltip="Mean distance per offset."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, syncnet, faces: torch.Tensor, audio: dict, fps: float) -> io.NodeOutput:
        model = expect(syncnet, "syncnet", "syncnet")
        waveform, sample_rate = mono_waveform(audio, "audio")
        try:
            result = evaluate_sync(model.on_device(), faces, waveform, sample_rate=sample_rate, fps=fps)
        except ValueError as err:
            raise LipForcingInputError("faces/audio", str(err)) from err
        plot = image_from_frames(np.array(plot_offsets(result).convert("RGB"))[None])
        text = f"LSE-C {result.lse_c:.3f}  LSE-D {result.lse_d:.3f}  offset {result.offset}"
        return io.NodeOutput(float(result.lse_c), float(result.lse_d), int(result.offset),
                             plot.to(model_management.intermediate_device()), ui={"text": [text]})


NODES = [SyncNetLoader, SyncNetScore]
