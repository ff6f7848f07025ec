"""Demo nodes: procedural dubbing clips for the bundled demo model, so a workflow runs with no download.

The demo faces are cartoons the face detector does not find; each 64x64 frame already is the
aligned face, so a demo graph skips Face Align and composites the mouth in aligned space.
"""

from __future__ import annotations

import torch

from lipforcing_core.audio.io import SAMPLE_RATE
from lipforcing_core.config import FPS
from lipforcing_core.demo.constants import DEMO_SIZE, HELDOUT_BASE

from ._comfy import io, model_management
from ._types import LipForcingInputError

SEED_MAX = 2**31 - 1


def _seed(name: str, default: int, what: str) -> io.Int.Input:
    return io.Int.Input(name, default=default, min=0, max=SEED_MAX,
                        tooltip=f"Seed of the {what}. Seeds from {HELDOUT_BASE:,} up were never used to train "
                                "the demo models (held out); lower seeds are training data.")


def _audio(waveform: torch.Tensor) -> dict:
    return {"waveform": waveform.float().reshape(1, 1, -1).cpu(), "sample_rate": SAMPLE_RATE}


class DemoClip(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LipForcingDemoClip",
            display_name="Lip Forcing Demo Clip",
            category="LipForcing/demo",
            description="A cartoon face speaking one utterance (the video to dub) and the speech of another, "
                        f"rendered from seeds at {FPS} fps and {SAMPLE_RATE} Hz, with the exact ground truth: the "
                        f"same face saying the new speech. Frames are {DEMO_SIZE}x{DEMO_SIZE} aligned faces for "
                        "the bundled demo model (no Face Align needed).",
            inputs=[
                _seed("identity_seed", HELDOUT_BASE + 1, "face (look, head motion, blinks)"),
                _seed("source_seed", HELDOUT_BASE + 2, "utterance the face speaks in the source video"),
                _seed("target_seed", HELDOUT_BASE + 3, "utterance to dub to; must differ from source_seed"),
                io.Float.Input("duration_s", default=3.0, min=0.4, max=60.0, step=0.04,
                               tooltip=f"Clip length in seconds ({FPS} frames per second). The sampler's output is "
                                       "rounded down to whole chunks: 3 s = 75 frames -> 69 generated frames."),
            ],
            outputs=[
                io.Image.Output(display_name="source_frames", tooltip=f"[frames, {DEMO_SIZE}, {DEMO_SIZE}, 3]: "
                                                                      "the face speaking the source utterance."),
                io.Audio.Output(display_name="target_speech", tooltip="The speech to dub to (mono, 16 kHz)."),
                io.Image.Output(display_name="ground_truth", tooltip="The same face, with the same motion, "
                                                                     "actually saying the target speech."),
                io.Audio.Output(display_name="source_speech", tooltip="The speech of the source video."),
            ],
        )

    @classmethod
    def execute(cls, identity_seed: int, source_seed: int, target_seed: int, duration_s: float) -> io.NodeOutput:
        from lipforcing_core.demo.dub import dubbing_pair  # the demo's code loads on first use, not at start-up

        try:
            pair = dubbing_pair(identity_seed, source_seed, target_seed, duration_s, DEMO_SIZE)
        except ValueError as err:
            raise LipForcingInputError("target_seed", str(err), "Pick a different target_seed.") from err
        device = model_management.intermediate_device()
        return io.NodeOutput(pair.source.float().to(device), _audio(pair.target_audio),
                             pair.target.float().to(device), _audio(pair.source_audio))


NODES = [DemoClip]
