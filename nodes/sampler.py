"""The streaming sampler node (aligned faces + audio features -> lip-synced faces, chunk by chunk) and
the one-node lip syncs (IMAGE batch or VIDEO in).

The sampler is a thin front end to ``lipforcing_core.pipeline.LipSyncPipeline.stream``; the one-node
lip syncs to ``lipforcing_core.stream_job`` (the orchestration ``sync`` runs). ComfyUI loads the
models onto the GPU together, every generated chunk is one progress step (Cancel stops between
chunks).
"""

from __future__ import annotations

import uuid
import warnings
from pathlib import Path

import numpy as np
import torch

from lipforcing_core.config import STREAM_FULL, STREAM_WINDOW
from lipforcing_core.errors import InputError
from lipforcing_core.face import FaceNotFoundError
from lipforcing_core.face.align import FaceTracker
from lipforcing_core.models.attention import attention_backend
from lipforcing_core.pipeline import LipSyncPipeline, frames_to_uint8, generation_length
from lipforcing_core.preflight import check_audio_width, check_latent_width
from lipforcing_core.sampling.schedule import STUDENT_T_LIST
from lipforcing_core.stream_job import LipSyncModel, StreamJob, video_job
from lipforcing_core.video import VideoError, write_video

from ._comfy import InputImpl, folder_paths, io
from ._types import (
    LipForcingInputError,
    clip_waveform,
    frames_from_image,
    image_from_frames,
    text_from_conditioning,
)
from .audio import AudioEmbeds, AudioEncoder
from .face import INSIGHTFACE, MEDIAPIPE, keep_mask, make_detector
from .loaders import LipForcingModel, TinyDecoder, WanVAE
from .memory import expect, load_together
from .progress import Progress

WINDOWS = {"sliding 7 frames + 1 sink (released)": STREAM_WINDOW, "full causal (memory grows)": STREAM_FULL}


def parse_t_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.replace(" ", "").split(",") if t)
    except ValueError as err:
        raise LipForcingInputError("t_list", f"'{text}' is not a comma-separated list of numbers.",
                                   "Use e.g. 0.999, 0.769, 0") from err


def check_widths(dit_config, vae_config, audio_embeds: torch.Tensor) -> None:
    """The core's model-compatibility checks (the command line runs them on the files' headers)."""
    try:
        check_audio_width(dit_config.audio_dim, audio_embeds.shape[-1])
    except InputError as err:
        raise LipForcingInputError("audio_embeds", str(err)) from err
    try:
        check_latent_width(dit_config.out_dim, vae_config.z_dim)
    except InputError as err:
        raise LipForcingInputError("vae", str(err)) from err


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
        check_widths(managed[0].module.config, managed[1].module.config, audio_embeds)
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


def lip_sync_inputs(media: io.Input, audio: io.Input) -> list:
    """The inputs of the one-node lip syncs: models, the frames (``media``), audio, seed, face settings."""
    return [
        LipForcingModel.Input("model", tooltip="From Lip Forcing Model Loader."),
        WanVAE.Input("vae", tooltip="From Lip Forcing VAE Loader."),
        AudioEncoder.Input("audio_encoder", tooltip="From Lip Forcing Audio Encoder Loader."),
        media,
        *([] if audio.optional else [audio]),
        io.Int.Input("seed", default=42, min=0, max=2**63 - 1, control_after_generate=True,
                     tooltip="Seed of the clip noise."),
        io.Combo.Input("detector", options=[MEDIAPIPE, INSIGHTFACE], default=MEDIAPIPE,
                       tooltip="Face detector (see Lip Forcing Face Align)."),
        io.Int.Input("face_size", default=512, min=16, max=2048, step=16,
                     tooltip="Aligned face size: 512 for the released models, 64 for the demo model (which "
                             "then replaces only the mouth)."),
        *([audio] if audio.optional else []),
        io.Conditioning.Input("text", optional=True, tooltip="Prompt from CLIPTextEncode (CLIPLoader type "
                                                             "'wan'), e.g. 'a person talking'."),
        TinyDecoder.Input("taew", optional=True, tooltip="TAEHV tiny decoder for faster decoding."),
    ]


def run_lip_sync(job_for, model, vae, audio_encoder, seed: int, detector: str, face_size: int, text, taew,
                 output, writer=write_video) -> dict:
    """The streaming job (:mod:`lipforcing_core.stream_job`) with ComfyUI's models: one progress step
    per chunk. ``job_for(tracker)`` opens the job; ``writer`` consumes the frames."""
    managed = [expect(model, "dit", "model"), expect(vae, "vae", "vae"), expect(audio_encoder, "audio_encoder",
                                                                                 "audio_encoder")]
    if taew is not None:
        managed.append(expect(taew, "taew", "taew"))
    context = None if text is None else text_from_conditioning(text, "text")
    try:
        job = job_for(FaceTracker(make_detector(detector), size=face_size))
    except (FaceNotFoundError, VideoError, ValueError) as err:
        raise LipForcingInputError("video / audio", str(err)) from err
    dit, wan_vae, encoder, *decoder = load_together(managed)
    pipe = LipSyncPipeline(dit, wan_vae, decoder[0] if decoder else None)
    lip_model = LipSyncModel.for_faces(pipe, encoder, face_size, text=context, seed=seed)
    progress = Progress(job.chunks(pipe.sampler.chunk_size))
    try:
        with warnings.catch_warnings(), attention_backend(managed[0].attention):
            warnings.simplefilter("ignore")  # the decisions are in the summary
            return job.run(lip_model, output, on_chunk=lambda done, total, fps: progress.step(done), writer=writer)
    except ValueError as err:
        raise LipForcingInputError("video / audio / text", str(err)) from err


def summary(info: dict) -> str:
    return (f"{info['frames']} frames for {info['audio_seconds']:.2f} s of audio; video {info['video_adjust']}; "
            f"face in {info['faces_found']} frames, {info['frames_without_face']} without a face left unchanged; "
            f"{info['fps_end_to_end']:.1f} fps")


class LipSync(io.ComfyNode):
    """Face Align -> Audio Encode -> Sampler -> Paste Back in one node, streamed chunk by chunk."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LipForcingLipSync",
            display_name="Lip Forcing Lip Sync (one node)",
            category="LipForcing/sampling",
            description="Lip sync a 25 fps video to an audio clip: align faces, encode the speech, generate the "
                        "mouth chunk by chunk and paste it back, with the built-in mouth mask. For long clips use "
                        "Lip Forcing Lip Sync (video), which never holds the frames in memory.",
            inputs=lip_sync_inputs(
                io.Image.Input("images", tooltip="The video frames at 25 fps (Lip Forcing Load Video)."),
                io.Audio.Input("audio", tooltip="The speech to sync to; the output has one frame per 40 ms of all "
                                                "of it.")),
            outputs=[io.Image.Output(display_name="images", tooltip="The lip-synced frames (25 fps).")],
        )

    @classmethod
    def execute(cls, model, vae, audio_encoder, images: torch.Tensor, audio: dict, seed: int, detector: str,
                face_size: int, text: list | None = None, taew=None) -> io.NodeOutput:
        frames = frames_from_image(images, "images")
        waveform, rate = clip_waveform(audio, "audio")
        collected: list[np.ndarray] = []

        def keep_frames(path, it, fps, audio, rate, overwrite=False):
            collected.extend(it)
            return path

        info = run_lip_sync(lambda tracker: StreamJob(lambda: iter(frames), waveform.numpy(), rate, tracker, "images"),
                            model, vae, audio_encoder, seed, detector, face_size, text, taew, "images", keep_frames)
        return io.NodeOutput(image_from_frames(np.stack(collected)), ui={"text": [summary(info)]})


class LipSyncVideo(io.ComfyNode):
    """The one-node lip sync on ComfyUI's VIDEO type: streamed from file to file, any length."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LipForcingLipSyncVideo",
            display_name="Lip Forcing Lip Sync (video)",
            category="LipForcing/sampling",
            description="Lip sync a VIDEO (Load Video) to speech, streamed: frames are decoded, aligned, "
                        "generated, pasted back and encoded chunk by chunk, so memory does not grow with the clip. "
                        "Any frame rate in (converted to 25 fps); H.264 mp4 out with the speech as its audio.",
            inputs=lip_sync_inputs(
                io.Video.Input("video", tooltip="The source video (ComfyUI's Load Video), any frame rate."),
                io.Audio.Input("audio", optional=True, tooltip="The speech to sync to (default: the video's own "
                                                               "audio); the output lasts as long as it.")),
            outputs=[io.Video.Output(display_name="video", tooltip="The lip-synced video at 25 fps with the "
                                                                   "speech muxed in."),
                     io.String.Output(display_name="summary",
                                      tooltip="Frames, audio length, how the video was cut or extended, faces found "
                                              "and speed: wire it to Preview as Text.")],
        )

    @classmethod
    def execute(cls, model, vae, audio_encoder, video, seed: int, detector: str, face_size: int,
                audio: dict | None = None, text: list | None = None, taew=None) -> io.NodeOutput:
        source = video.get_stream_source()
        wave, rate = (None, None) if audio is None else clip_waveform(audio, "audio")
        folder = Path(folder_paths.get_temp_directory())
        folder.mkdir(parents=True, exist_ok=True)
        output = folder / f"LipForcing_{uuid.uuid4().hex[:12]}.mp4"
        info = run_lip_sync(lambda tracker: video_job(source, tracker, None if wave is None else wave.numpy(), rate),
                            model, vae, audio_encoder, seed, detector, face_size, text, taew, output)
        text = summary(info)
        return io.NodeOutput(InputImpl.VideoFromFile(str(output)), text, ui={"text": [text]})


NODES = [Sampler, LipSync, LipSyncVideo]
