"""Frame-rate conversion node: 30 -> 25 fps and back, nearest frame by timestamp."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_env  # noqa: F401  (puts the ComfyUI test double on sys.path)
from comfy_executor import Executor
from lipforcing_pack.nodes import video
from lipforcing_pack.nodes._types import image_from_frames

from lipforcing_core.video import Video, convert_fps, frame_times


def numbered(n: int) -> torch.Tensor:
    """n tiny frames whose pixel value is the frame index."""
    return image_from_frames(np.arange(n, dtype=np.uint8)[:, None, None, None].repeat(2, 1).repeat(2, 2).repeat(3, 3))


def test_thirty_to_twenty_five_fps_is_the_core_conversion():
    images, fps = video.ResampleFrames.execute(numbered(30), 30.0, 25.0).args
    assert fps == 25.0 and images.shape == (25, 2, 2, 3)
    picked = (images[:, 0, 0, 0] * 255).round().long().tolist()
    frames = np.arange(30, dtype=np.uint8)
    expected = convert_fps(Video(frames, 30.0, None, None, frame_times(30, 30.0)), 25.0)[1]
    assert picked == expected.tolist()
    assert picked[:7] == [0, 1, 2, 4, 5, 6, 7]


def test_round_trip_in_a_workflow():
    from comfy_api.latest import io

    class Source(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="TestNumbered", inputs=[], outputs=[io.Image.Output()])

        @classmethod
        def execute(cls):
            return io.NodeOutput(numbered(60))

    workflow = {
        "1": {"class_type": "TestNumbered", "inputs": {}},
        "2": {"class_type": "LipForcingResampleFrames", "inputs": {"images": ["1", 0], "source_fps": 30.0, "fps": 25.0}},
        "3": {"class_type": "LipForcingResampleFrames", "inputs": {"images": ["2", 0], "source_fps": 25.0, "fps": 30.0}},
    }
    result = Executor([Source, *video.NODES]).run(workflow)
    back = (result.outputs["3"][0][:, 0, 0, 0] * 255).round().long()
    assert len(back) == 60 and (back - torch.arange(60)).abs().max() <= 1
