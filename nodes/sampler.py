"""The streaming sampler node: aligned faces + audio features -> lip-synced faces, chunk by chunk.

A thin front end to ``lipforcing_core.pipeline.LipSyncPipeline.stream``: ComfyUI loads the models
onto the GPU together, every generated chunk is one progress step with its last frame as preview
(Cancel stops between chunks), and the frames are returned as an IMAGE batch.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from lipforcing_core.config import STREAM_FULL, STREAM_WINDOW
from lipforcing_core.models.attention import attention_backend
from lipforcing_core.pipeline import LipSyncPipeline, frames_to_uint8, generation_length, pingpong_indices
from lipforcing_core.sampling.schedule import STUDENT_T_LIST

from ._comfy import io
from ._types import LipForcingInputError, frames_from_image, image_from_frames, text_from_conditioning
from .audio import AudioEmbeds, AudioEncode, AudioEncoder
from .face import BUILT_IN_MASK, INSIGHTFACE, MEDIAPIPE, FaceAlign, MouthMask, PasteBack, keep_mask
from .loaders import LipForcingModel, TinyDecoder, WanVAE
from .memory import expect, load_together
from .progress import Progress

LATENTSYNC_GRID = 256  # the mouth mask's own resolution; the release resizes the sampler's mask from it
WINDOWS = {"sliding 7 frames + 1 sink (released)": STREAM_WINDOW, "full causal (memory grows)": STREAM_FULL}


def parse_t_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.replace(" ", "").split(",") if t)
    except ValueError as err:
        raise LipForcingInputError("t_list", f"'{text}' is not a comma-separated list of numbers.",
                                   "Use e.g. 0.999, 0.769, 0") from err


class Sampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LipForcingSampler",
            display_name="Lip Forcing Sampler (streaming)",
            category="LipForcing/sampling",
            description="Regenerate the mouth of aligned faces to match the audio: causal few-step diffusion "
                        "with a KV cache, 3 latent frames (12 video frames) per chunk.",
            inputs=[
                LipForcingModel.Input("model", tooltip="From Lip Forcing Model Loader."),
                WanVAE.Input("vae", tooltip="Wan2.1 VAE: encodes the source faces (and decodes if no tiny "
                                            "decoder is wired)."),
                AudioEmbeds.Input("audio_embeds", tooltip="From Lip Forcing Audio Encode (25 fps)."),
                io.Image.Input("faces", tooltip="Aligned faces from Lip Forcing Face Align (sides multiple of 16). "
                                                "Cut or ping-pong extended to the audio length, as the release."),
                io.Mask.Input("mouth_mask", tooltip="Region to regenerate (1 = mouth), from Lip Forcing Mouth Mask, any "
                                                    "size with the faces' aspect. The release builds it at 256 (the "
                                                    "LatentSync grid) and resizes it to the frames and latents."),
                io.Int.Input("seed", default=42, min=0, max=2**63 - 1, control_after_generate=True,
                             tooltip="Seed of the clip noise."),
                io.String.Input("t_list", default=", ".join(str(t) for t in STUDENT_T_LIST),
                                tooltip="Denoising times ending in 0; the released student uses 0.999, 0.769, 0 "
                                        "(two steps, no CFG)."),
                io.Combo.Input("window", options=list(WINDOWS), default=next(iter(WINDOWS)),
                               tooltip="Attention window over past frames. The released model was trained with "
                                       "the sliding window; full causal attention grows with the clip."),
                io.Conditioning.Input("text", optional=True,
                                      tooltip="Prompt from CLIPTextEncode with a CLIPLoader of type 'wan' "
                                              "(UMT5-XXL), e.g. 'a person talking'. Without it a zero text "
                                              "embedding is used."),
                TinyDecoder.Input("taew", optional=True,
                                  tooltip="TAEHV tiny decoder: much faster decoding (the release default). "
                                          "Without it the Wan VAE decodes."),
            ],
            outputs=[io.Image.Output(display_name="faces", tooltip="The generated aligned faces."),
                     io.String.Output(display_name="summary",
                                      tooltip="How many frames were generated from how much audio and how the source "
                                              "video was cut or extended: wire it to Preview as Text.")],
        )

    @classmethod
    def execute(cls, model, vae, audio_embeds: torch.Tensor, faces: torch.Tensor, mouth_mask: torch.Tensor,
                seed: int, t_list: str, window: str, text: list | None = None, taew=None) -> io.NodeOutput:
        managed = [expect(model, "dit", "model"), expect(vae, "vae", "vae")]
        if taew is not None:
            managed.append(expect(taew, "taew", "taew"))
        frames = frames_from_image(faces, "faces")
        keep = keep_mask(mouth_mask, None, "mouth_mask")
        context = None if text is None else text_from_conditioning(text, "text")
        dit, wan_vae, *decoder = load_together(managed)
        try:
            pipeline = LipSyncPipeline(dit, wan_vae, decoder[0] if decoder else None, t_list=parse_t_list(t_list),
                                       spec=WINDOWS[window])
            total = generation_length(len(audio_embeds), pipeline.sampler.chunk_size)[0] // pipeline.sampler.chunk_size
        except ValueError as err:
            raise LipForcingInputError("t_list / audio_embeds", str(err)) from err
        progress, out = Progress(total), []  # uint8 frames, as the release rounds them
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the length decision is reported in the UI text below
            info: dict = {}
            try:
                with attention_backend(managed[0].attention):
                    for chunk in pipeline.stream(frames, audio_embeds, keep, text=context, seed=seed, info=info):
                        out.append(frames_to_uint8(chunk.frames)[0])
                        progress.step(chunk.index + 1, preview=out[-1][-1])
            except ValueError as err:
                raise LipForcingInputError("faces / audio_embeds / text", str(err)) from err
        summary = (f"{info['output_frames']} frames generated from {info['audio_frames']} audio frames; "
                   f"source video ({info['video_frames_in']} frames): {info['video_adjust']}")
        return io.NodeOutput(image_from_frames(np.concatenate(out)), summary, ui={"text": [summary]})


class LipSync(io.ComfyNode):
    """Face Align -> Audio Encode -> Sampler -> Paste Back in one node, with the released settings."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LipForcingLipSync",
            display_name="Lip Forcing Lip Sync (one node)",
            category="LipForcing/sampling",
            description="Lip sync a 25 fps video to an audio clip: align faces, encode the speech, generate the "
                        "mouth chunk by chunk and paste it back, with the built-in mouth mask.",
            inputs=[
                LipForcingModel.Input("model", tooltip="From Lip Forcing Model Loader."),
                WanVAE.Input("vae", tooltip="From Lip Forcing VAE Loader."),
                AudioEncoder.Input("audio_encoder", tooltip="From Lip Forcing Audio Encoder Loader."),
                io.Image.Input("images", tooltip="The video frames at 25 fps (Lip Forcing Load Video)."),
                io.Audio.Input("audio", tooltip="The speech to sync to; the output has one frame per 40 ms of it "
                                                "(rounded down to whole chunks)."),
                io.Int.Input("seed", default=42, min=0, max=2**63 - 1, control_after_generate=True,
                             tooltip="Seed of the clip noise."),
                io.Combo.Input("detector", options=[MEDIAPIPE, INSIGHTFACE], default=MEDIAPIPE,
                               tooltip="Face detector (see Lip Forcing Face Align)."),
                io.Int.Input("face_size", default=512, min=16, max=2048, step=16,
                             tooltip="Aligned face size: 512 for the released models, 64 for the demo model."),
                io.Conditioning.Input("text", optional=True, tooltip="Prompt from CLIPTextEncode (CLIPLoader type "
                                                                     "'wan'), e.g. 'a person talking'."),
                TinyDecoder.Input("taew", optional=True, tooltip="TAEHV tiny decoder for faster decoding."),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="The lip-synced frames (25 fps).")],
        )

    @classmethod
    def execute(cls, model, vae, audio_encoder, images: torch.Tensor, audio: dict, seed: int, detector: str,
                face_size: int, text: list | None = None, taew=None) -> io.NodeOutput:
        # the order of the release's `sync`: audio length first, then the frames cut or ping-pong extended
        # to it, aligned, generated with the 256-grid mask and pasted back with the face-size mask
        embeds, _ = AudioEncode.execute(audio_encoder, audio, 25.0, 0).args
        n = generation_length(len(embeds))[1]
        frames = images[torch.from_numpy(pingpong_indices(min(len(images), n), n))]
        faces, alignment = FaceAlign.execute(frames, detector, 0, face_size).args
        t_list = ", ".join(str(t) for t in STUDENT_T_LIST)
        mask = MouthMask.execute(BUILT_IN_MASK, LATENTSYNC_GRID).args[0]
        generated = Sampler.execute(model, vae, embeds, faces, mask, seed, t_list, next(iter(WINDOWS)), text, taew)
        paste_mask = MouthMask.execute(BUILT_IN_MASK, face_size).args[0]
        pasted = PasteBack.execute(frames, generated.args[0], alignment, paste_mask).args[0]
        return io.NodeOutput(pasted, ui=generated.ui)


NODES = [Sampler, LipSync]
