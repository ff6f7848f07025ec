"""Video nodes: load a clip at 25 fps, change frame rates, save frames + audio as mp4.

The released models work on 25 fps video. Audio needs no conversion (it is timed in samples), so
only frames are resampled, with the core's nearest-frame-by-timestamp rule: every output frame is a
real input frame, and converting back to the source rate picks the matching frames again.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from lipforcing_core.errors import InputError
from lipforcing_core.preflight import check_media
from lipforcing_core.video import MODEL_FPS, Video, convert_fps, frame_times, read_video, write_video

from ._comfy import folder_paths, io
from ._types import LipForcingInputError, clip_waveform, frames_from_image, image_from_frames
from .paths import input_files, input_path

SILENCE_RATE = 16000


class LoadVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LipForcingLoadVideo",
            display_name="Lip Forcing Load Video",
            category="LipForcing/video",
            description="Decode a video from ComfyUI's input folder into frames (resampled to the model's 25 fps) "
                        "and its audio.",
            inputs=[
                io.Combo.Input("video", options=input_files("video"),
                               tooltip="A video file in ComfyUI's input folder."),
                io.Float.Input("fps", default=MODEL_FPS, min=0.0, max=240.0, step=0.001,
                               tooltip="Frame rate to resample to (nearest frame by time); 0 keeps the file's rate."),
                io.Int.Input("max_frames", default=0, min=0, max=1_000_000,
                             tooltip="Read at most this many frames of the file (0 = all)."),
            ],
            outputs=[
                io.Image.Output(display_name="images"),
                io.Audio.Output(display_name="audio", tooltip="The file's audio; silence if it has none."),
                io.Float.Output(display_name="fps"),
            ],
        )

    @classmethod
    def execute(cls, video: str, fps: float, max_frames: int) -> io.NodeOutput:
        path = input_path(video, "video")
        try:
            check_media(path, "video")
            clip = read_video(path, max_frames=max_frames or None)
        except InputError as err:
            raise LipForcingInputError("video", str(err)) from err
        if fps:
            clip, _ = convert_fps(clip, fps)
        if clip.audio is None:
            audio = {"waveform": torch.zeros(1, 1, round(clip.duration * SILENCE_RATE)), "sample_rate": SILENCE_RATE}
        else:
            audio = {"waveform": torch.from_numpy(clip.audio)[None], "sample_rate": int(clip.sample_rate)}
        return io.NodeOutput(image_from_frames(clip.frames), audio, float(clip.fps))


class SaveVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LipForcingSaveVideo",
            display_name="Lip Forcing Save Video",
            category="LipForcing/video",
            description="Write frames (and audio) as an H.264 mp4 into ComfyUI's output folder.",
            inputs=[
                io.Image.Input("images", tooltip="The frames to write."),
                io.Float.Input("fps", default=MODEL_FPS, min=1.0, max=240.0, step=0.001,
                               tooltip="Frame rate of the frames (25 for Lip Forcing output)."),
                io.String.Input("filename_prefix", default="LipForcing",
                                tooltip="File name prefix inside the output folder; a counter is appended."),
                io.Audio.Input("audio", optional=True, tooltip="Audio to mux in (mono or stereo), from the start."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images: torch.Tensor, fps: float, filename_prefix: str, audio: dict | None = None
                ) -> io.NodeOutput:
        frames = frames_from_image(images, "images")
        waveform, rate = (None, None) if audio is None else clip_waveform(audio, "audio")
        output_dir = folder_paths.get_output_directory()
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, output_dir, frames.shape[2], frames.shape[1])
        filename = f"{name}_{counter:05}_.mp4"
        try:
            write_video(os.path.join(folder, filename), frames, fps,
                        None if waveform is None else np.ascontiguousarray(waveform.numpy()), rate)
        except ValueError as err:
            raise LipForcingInputError("audio", str(err)) from err
        saved = {"filename": filename, "subfolder": subfolder, "type": "output"}
        return io.NodeOutput(ui={"images": [saved], "animated": [True]})


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


NODES = [LoadVideo, ResampleFrames, SaveVideo]
