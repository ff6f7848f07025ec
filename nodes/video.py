"""Frame-rate conversion: the released models work on 25 fps video.

Audio needs no conversion (it is timed in samples), so this node only resamples the frames, with the
core's nearest-frame-by-timestamp rule: every output frame is a real input frame, and converting the
result back to the source rate picks the matching frames again.
"""

from __future__ import annotations

import torch

from lipforcing_core.video import MODEL_FPS, Video, convert_fps, frame_times

from ._comfy import io
from ._types import frames_from_image, image_from_frames


class ResampleFrames(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LipForcingResampleFrames",
            display_name="Lip Forcing Resample Frames (fps)",
            category="LipForcing/video",
            description="Change the frame rate of an IMAGE batch (nearest frame by time, no blending): to 25 fps "
                        "before Lip Forcing, back to the source rate afterwards.",
            inputs=[
                io.Image.Input("images", tooltip="Video frames, e.g. from Get Video Components."),
                io.Float.Input("source_fps", default=30.0, min=1.0, max=240.0, step=0.001,
                               tooltip="Frame rate of the input frames (the fps output of Get Video Components)."),
                io.Float.Input("fps", default=MODEL_FPS, min=1.0, max=240.0, step=0.001,
                               tooltip="Frame rate to produce; Lip Forcing and SyncNet need 25."),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="round(duration x fps) frames."),
                io.Float.Output(display_name="fps", tooltip="The new frame rate, for Create Video."),
            ],
        )

    @classmethod
    def execute(cls, images: torch.Tensor, source_fps: float, fps: float) -> io.NodeOutput:
        frames = frames_from_image(images, "images")
        clip = Video(frames, source_fps, None, None, frame_times(len(frames), source_fps))
        resampled, _ = convert_fps(clip, fps)
        return io.NodeOutput(image_from_frames(resampled.frames), float(fps))


NODES = [ResampleFrames]
