"""Frame-rate conversion node: 30 -> 25 fps and back, nearest frame by timestamp."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_env  # first: puts the ComfyUI test double on sys.path

# isort: split
from comfy_executor import Executor
from lipforcing_pack.nodes import video
from lipforcing_pack.nodes._types import LipForcingInputError, image_from_frames

from lipforcing_core.video import Video, convert_fps, frame_times, read_video, write_video


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


@pytest.fixture()
def clip_file(tmp_path):
    base = comfy_env.use_base(tmp_path)
    t = np.arange(30)
    frames = np.zeros((30, 48, 64, 3), np.uint8) + (t * 8).astype(np.uint8)[:, None, None, None]
    tone = np.sin(np.arange(16000) / 16000 * 2 * np.pi * 220).astype(np.float32)[None] * 0.5
    write_video(base / "input" / "talk.mp4", frames, 30.0, tone, 16000)
    write_video(base / "input" / "mute.mp4", frames[:10], 30.0)
    return base


def test_load_video_at_25_fps(clip_file):
    assert video.LoadVideo.define_schema().inputs[0].options == ["mute.mp4", "talk.mp4"]
    images, audio, fps = video.LoadVideo.execute("talk.mp4", 25.0, 0).args
    assert images.shape == (25, 48, 64, 3) and fps == 25.0
    assert audio["sample_rate"] == 16000 and abs(audio["waveform"].shape[-1] - 16000) < 1100
    images, _, fps = video.LoadVideo.execute("talk.mp4", 0.0, 12).args
    assert images.shape[0] == 12 and fps == pytest.approx(30.0)
    frames, silence, _ = video.LoadVideo.execute("mute.mp4", 25.0, 0).args
    assert silence["waveform"].abs().max() == 0 and silence["waveform"].shape[-1] == len(frames) / 25 * 16000
    with pytest.raises(LipForcingInputError, match="'video'"):
        video.LoadVideo.execute("../talk.mp4", 25.0, 0)


def test_save_video_writes_into_the_output_folder(clip_file):
    images, audio, fps = video.LoadVideo.execute("talk.mp4", 25.0, 0).args
    out = video.SaveVideo.execute(images, fps, "lipsync/test", audio)
    saved = out.ui["images"][0]
    assert saved["subfolder"] == "lipsync" and saved["type"] == "output" and out.ui["animated"] == [True]
    written = read_video(clip_file / "output" / "lipsync" / saved["filename"])
    assert len(written.frames) == 25 and written.audio is not None and written.fps == pytest.approx(25.0)
    again = video.SaveVideo.execute(images, fps, "lipsync/test").ui["images"][0]["filename"]
    assert again != saved["filename"]
    with pytest.raises(Exception, match="outside the output folder"):
        video.SaveVideo.execute(images, fps, "../../escape")


def test_video_round_trip_workflow(clip_file):
    workflow = {
        "1": {"class_type": "LipForcingLoadVideo", "inputs": {"video": "talk.mp4", "fps": 25.0, "max_frames": 0}},
        "2": {"class_type": "LipForcingSaveVideo",
              "inputs": {"images": ["1", 0], "fps": ["1", 2], "filename_prefix": "wf", "audio": ["1", 1]}},
    }
    result = Executor(video.NODES).run(workflow)
    assert (clip_file / "output" / result.ui["2"]["images"][0]["filename"]).is_file()
