"""Face nodes: align faces to the 512x512 crops the model saw, the mouth mask, and paste-back.

The alignment travels between nodes as the core's ``Alignment`` (per-frame float16 frame->crop
matrices and a has-face flag) on a ``LIPFORCING_FACE_ALIGNMENT`` socket.
"""

from __future__ import annotations

import numpy as np
import torch

from lipforcing_core.face import (
    Alignment,
    FaceAligner,
    FaceNotFoundError,
    InsightFaceDetector,
    MediaPipeDetector,
    ModelNotFoundError,
    load_mouth_mask,
    paste_back,
)
from lipforcing_core.pipeline import composite_mouth, pingpong_indices, pixel_mask

from ._comfy import folder_paths, io, model_management
from ._types import LipForcingInputError, frames_from_image, image_from_frames, same_length
from .paths import INSIGHTFACE_FOLDER, input_files, input_path
from .progress import Progress

FaceAlignment = io.Custom("LIPFORCING_FACE_ALIGNMENT")

BUILT_IN_MASK = "built-in (LatentSync mouth mask)"
CATEGORY = "LipForcing/face"
PASTE_CHUNK = 16  # frames per progress update (paste-back is independent per frame)
MEDIAPIPE = "mediapipe (offline, bundled)"
INSIGHTFACE = "insightface buffalo_l (reference)"


def make_detector(name: str):
    """The chosen core face detector; missing model files become an error on the ``detector`` input."""
    try:
        if name == MEDIAPIPE:
            return MediaPipeDetector()
        return InsightFaceDetector(folder_paths.get_folder_paths(INSIGHTFACE_FOLDER)[0])
    except (ModelNotFoundError, ImportError) as err:
        raise LipForcingInputError("detector", str(err)) from err


class FaceAlign(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LipForcingFaceAlign",
            display_name="Lip Forcing Face Align",
            category=CATEGORY,
            description="Detect the face in every frame and warp it to the 512x512 crop Lip Forcing was "
                        "trained on (LatentSync geometry, smoothed over time).",
            inputs=[
                io.Image.Input("images", tooltip="The video frames (IMAGE batch, one entry per frame)."),
                io.Combo.Input("detector", options=[MEDIAPIPE, INSIGHTFACE], default=MEDIAPIPE,
                               tooltip="MediaPipe runs offline with OpenCV (its two model files ship with the "
                                       "pack). InsightFace buffalo_l is the official detector: "
                                       "needs insightface + onnxruntime and models/insightface/models/buffalo_l."),
                io.Int.Input("face_index", default=0, min=0, max=16,
                             tooltip="Which face when several are visible: 0 = the largest, 1 = the next..."),
                io.Int.Input("size", default=512, min=16, max=2048, step=16,
                             tooltip="Side of the aligned crop. The released models need 512; the bundled demo "
                                     "model works at 64."),
            ],
            outputs=[
                io.Image.Output(display_name="faces", tooltip="Aligned size x size faces, one per frame."),
                FaceAlignment.Output(display_name="alignment",
                                     tooltip="Per-frame transforms, for Paste Back and the sampler."),
            ],
        )

    @classmethod
    def execute(cls, images: torch.Tensor, detector: str, face_index: int, size: int = 512) -> io.NodeOutput:
        frames = frames_from_image(images, "images")
        try:
            aligner = FaceAligner(make_detector(detector), face_index=face_index, size=size)
            alignment = aligner.align(frames, "images")
        except FaceNotFoundError as err:
            raise LipForcingInputError("images", str(err)) from err
        return io.NodeOutput(image_from_frames(alignment.crops), alignment)


def keep_mask(mouth_mask: torch.Tensor, size: int | None, name: str) -> np.ndarray:
    """ComfyUI MASK (1 = regenerate) -> the core's keep-mask float64 (1 = keep original).

    ``size`` demands a ``size x size`` mask (paste-back works on the aligned face); None accepts any.
    """
    mask = mouth_mask[0] if mouth_mask.ndim == 3 else mouth_mask
    if mouth_mask.ndim not in (2, 3) or (size is not None and tuple(mask.shape) != (size, size)):
        wanted = "a 2-D MASK" if size is None else f"a {size}x{size} MASK on the aligned face"
        raise LipForcingInputError(name, f"expected {wanted}, got {tuple(mouth_mask.shape)}.",
                                   "Use the Lip Forcing Mouth Mask node or resize your mask to the aligned face size.")
    return 1.0 - mask.detach().cpu().double().numpy()


class MouthMask(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LipForcingMouthMask",
            display_name="Lip Forcing Mouth Mask",
            category=CATEGORY,
            description="The region of the aligned 512x512 face that Lip Forcing regenerates (white = mouth).",
            inputs=[
                io.Combo.Input("mask_image", options=[BUILT_IN_MASK, *input_files("image")], default=BUILT_IN_MASK,
                               tooltip="The built-in mask reproduces LatentSync's mask.png (no download). Or pick a "
                                       "mask.png from ComfyUI's input folder: white = keep, black = regenerate, "
                                       "red channel read, as LatentSync does."),
                io.Int.Input("size", default=512, min=64, max=2048, step=8,
                             tooltip="Side of the aligned face in pixels; the released models use 512."),
            ],
            outputs=[io.Mask.Output(display_name="mouth_mask",
                                    tooltip="MASK [1,size,size]: 1 = mouth region to regenerate, 0 = keep.")],
        )

    @classmethod
    def execute(cls, mask_image: str, size: int) -> io.NodeOutput:
        path = None if mask_image == BUILT_IN_MASK else input_path(mask_image, "mask_image")
        keep = load_mouth_mask(path, size)
        mouth = torch.from_numpy(1.0 - keep).float()[None]
        return io.NodeOutput(mouth.to(model_management.intermediate_device()))


class PasteBack(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LipForcingPasteBack",
            display_name="Lip Forcing Paste Back",
            category=CATEGORY,
            description="Warp generated aligned faces back into the original frames with a soft edge. Without an "
                        "alignment (the demo's frames already are aligned faces) only the mouth is composited.",
            inputs=[
                io.Image.Input("images", tooltip="The original full frames the faces were aligned from (without an "
                                                 "alignment: the aligned source faces themselves)."),
                io.Image.Input("faces", tooltip="Generated aligned faces. If the sampler cut or ping-pong extended "
                                                "the clip to the audio length, the frames are matched the same way."),
                FaceAlignment.Input("alignment", optional=True,
                                    tooltip="The alignment output of Lip Forcing Face Align for these frames. Leave "
                                            "it unwired when the images are aligned faces (the demo clips): then "
                                            "the generated mouth is composited onto them, nothing is warped."),
                io.Mask.Input("mouth_mask", optional=True,
                              tooltip="If given, only this region (1 = mouth) is taken from the generated face and "
                                      "the rest from the aligned original, as the released pipeline does. If not, "
                                      "the whole generated face is pasted. Required without an alignment."),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="The frames with the new faces pasted in.")],
        )

    @classmethod
    def execute(cls, images: torch.Tensor, faces: torch.Tensor, alignment: Alignment | None = None,
                mouth_mask: torch.Tensor | None = None) -> io.NodeOutput:
        frames = frames_from_image(images, "images")
        generated = frames_from_image(faces, "faces")
        if alignment is not None:
            same_length(len(frames), len(alignment.transforms), "images", "the alignment")
        if len(generated) != len(frames):  # the sampler's length rule: cut, or extend forward-backward
            idx = pingpong_indices(len(frames), len(generated))
            frames = frames[idx]
            if alignment is not None:
                alignment = Alignment(alignment.crops[idx], alignment.transforms[idx], alignment.has_face[idx])
        if alignment is None:
            return io.NodeOutput(image_from_frames(composite_aligned(frames, generated, mouth_mask)))
        mask = None if mouth_mask is None else keep_mask(mouth_mask, generated.shape[1], "mouth_mask")
        pasted, progress = np.empty_like(frames), Progress(len(frames))
        for start in range(0, len(frames), PASTE_CHUNK):
            part = slice(start, start + PASTE_CHUNK)
            pasted[part] = paste_back(frames[part], generated[part], alignment.transforms[part], mask,
                                      alignment.crops[part], alignment.has_face[part])
            progress.step(min(start + PASTE_CHUNK, len(frames)), preview=pasted[part][-1])
        return io.NodeOutput(image_from_frames(pasted))


def composite_aligned(frames: np.ndarray, generated: np.ndarray, mouth_mask: torch.Tensor | None) -> np.ndarray:
    """The generated mouth on the aligned source faces (uint8 ``[T,H,W,3]`` both), with the core's
    composite: the mask resized to the faces and binarised, generated pixels where it marks the mouth."""
    if mouth_mask is None:
        raise LipForcingInputError("mouth_mask", "is required when no alignment is wired (nothing would be "
                                   "composited or pasted).", "Wire a Lip Forcing Mouth Mask, or Face Align's "
                                   "alignment to paste whole faces into full frames.")
    if frames.shape[1:3] != generated.shape[1:3]:
        raise LipForcingInputError("images", f"are {frames.shape[2]}x{frames.shape[1]} but the generated faces are "
                                   f"{generated.shape[2]}x{generated.shape[1]}; without an alignment the images "
                                   "must be the aligned source faces.", "Wire Face Align's alignment to paste "
                                   "into full frames.")
    keep = keep_mask(mouth_mask, None, "mouth_mask")
    try:
        keep = pixel_mask(keep, generated.shape[1:3])
    except ValueError as err:
        raise LipForcingInputError("mouth_mask", str(err)) from err
    signed = torch.from_numpy(generated).permute(3, 0, 1, 2)[None].float() / 127.5 - 1  # [1,3,T,H,W] in [-1,1]
    return composite_mouth(signed, frames, keep)


NODES = [FaceAlign, MouthMask, PasteBack]
