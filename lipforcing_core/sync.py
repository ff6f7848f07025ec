"""End-to-end lip sync of a video file: ``python -m lipforcing_core sync --video V --audio A -o out.mp4 ...``.

read video -> 25 fps -> cut / ping-pong to the audio's generation length -> face alignment ->
wav2vec2 features -> streaming pipeline -> paste the generated mouths back chunk by chunk ->
H.264 mp4 with the driving audio (trimmed to the output's duration).
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from .audio import encode_audio, load_audio, load_wav2vec2
from .checkpoints import CheckpointError, load_dit, read_state_dict
from .config import FPS, STREAM_FULL, STREAM_WINDOW, TEXT_DIM
from .errors import InputError
from .face import FaceAligner, load_mouth_mask, paste_back
from .models.attention import BACKENDS, attention_backend, check_backend
from .demo.constants import DEMO_SIZE
from .face.mask import MASK_GRID
from .pipeline import (
    LipSyncPipeline,
    frames_to_uint8,
    generation_length,
    pingpong_indices,
)
from .preflight import check_sync
from .sampling.schedule import STUDENT_T_LIST
from .vae import load_taehv, load_wan_vae
from .video import convert_fps, read_video, write_video



def load_text(path: str | Path | None) -> torch.Tensor | None:
    """A text embedding file holding one ``[1, N, 4096]`` / ``[N, 4096]`` tensor (None -> zero text)."""
    if path is None:
        return None
    tensors = [v for v in read_state_dict(path).values() if isinstance(v, torch.Tensor)]
    if len(tensors) != 1 or tensors[0].ndim not in (2, 3) or tensors[0].shape[-1] != TEXT_DIM:
        raise CheckpointError(f"{path}: expected exactly one [1, N, 4096] text embedding tensor, "
                              f"found {[tuple(t.shape) for t in tensors]}")
    return tensors[0] if tensors[0].ndim == 3 else tensors[0][None]


def mono_or_stereo(audio: np.ndarray) -> np.ndarray:
    """``[C, N]`` float audio with at most 2 channels (more are mixed down to mono)."""
    return audio if audio.shape[0] <= 2 else audio.mean(0, keepdims=True)


@dataclass
class SyncInputs:
    """A video's frames at 25 fps cut or ping-pong extended to the driving audio's length, and that audio."""

    frames: np.ndarray  # [n, H, W, 3] uint8
    features: torch.Tensor  # [V, D] per-frame audio features (V >= n)
    waveform: np.ndarray  # [C, N] float
    sample_rate: int
    info: dict

    def audio_for_output(self) -> np.ndarray:
        """The driving audio trimmed to the output's duration, at most stereo."""
        return mono_or_stereo(self.waveform)[:, : math.floor(len(self.frames) / FPS * self.sample_rate)]


def read_inputs(video_path: str | Path, audio_path: str | Path | None, encoder, chunk_size: int = 3) -> SyncInputs:
    """Read ``video_path`` (and ``audio_path``, default: the video's own audio) and apply the length rule."""
    probe = read_video(video_path, max_frames=1, require_audio=audio_path is None)
    if audio_path is None:
        wave, rate = probe.audio, probe.sample_rate
    else:
        loaded, rate = load_audio(audio_path)
        wave = loaded.numpy()
    feats = encode_audio(encoder, torch.from_numpy(wave), rate)
    _, n = generation_length(len(feats), chunk_size)
    source = read_video(video_path, max_frames=math.ceil(n * probe.fps / FPS) + 1)  # only what the audio needs
    video, _ = convert_fps(source, FPS)
    adjust = "ping-pong extended" if len(video.frames) < n else "none"
    if len(video.frames) < n:
        warnings.warn(f"{video_path}: {len(video.frames)} frames at {FPS} fps for {n} frames of audio; "
                      "the video is ping-pong extended", stacklevel=3)
    frames = video.frames[pingpong_indices(len(video.frames), n)]
    info = {"video_frames_25fps": len(video.frames), "frames": n, "fps": FPS, "video_adjust": adjust}
    return SyncInputs(frames, feats, wave, rate, info)


def sync_video(pipe: LipSyncPipeline, encoder, video_path: str | Path, out_path: str | Path, *,
               audio_path: str | Path | None = None, mask_path: str | Path | None = None, aligner=None,
               text: torch.Tensor | None = None, seed: int = 42, face_size: int = 512,
               overwrite: bool = False) -> dict:
    """Lip-sync ``video_path`` to ``audio_path`` (default: the video's own audio); returns an info dict."""
    inputs = read_inputs(video_path, audio_path, encoder, pipe.sampler.chunk_size)
    frames, info = inputs.frames, inputs.info
    crops, transforms, has_face = (aligner or FaceAligner(size=face_size)).align(frames, str(video_path))
    paste_mask = load_mouth_mask(mask_path, crops.shape[1])
    info["faces_found"] = int(has_face.sum())

    def composited():
        for chunk in pipe.stream(crops, inputs.features, load_mouth_mask(mask_path, MASK_GRID), text=text,
                                 seed=seed, info=info):
            s = slice(chunk.frame_start, chunk.frame_start + chunk.frames.shape[2])
            yield from paste_back(frames[s], frames_to_uint8(chunk.frames)[0], transforms[s], paste_mask,
                                  original_crops=crops[s], has_face=has_face[s])

    out = write_video(out_path, composited(), FPS, inputs.audio_for_output(), inputs.sample_rate, overwrite=overwrite)
    return info | {"output": str(out)}


def sync_demo_video(video_path: str | Path, out_path: str | Path, *, audio_path: str | Path | None = None,
                    student: str | Path | None = None, seed: int = 42, overwrite: bool = False) -> dict:
    """Lip-sync with the bundled demo model, which takes the whole frame as the face (its domain: the
    64x64 cartoon faces of ``python -m lipforcing_core demo``); the mouth is pasted back at full size."""
    from .demo.dub import dub
    from .demo.dit_recipe import pixel_keep_mask
    from .demo.evaluate import load_demo_models

    models = load_demo_models(student=student)
    inputs = read_inputs(video_path, audio_path, models.features)
    size = DEMO_SIZE
    small = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in inputs.frames])
    keep = pixel_keep_mask(size)
    result = dub(models.pipeline(), small, inputs.features, keep, seed=seed)
    h, w = inputs.frames.shape[1:3]
    alpha = cv2.resize(keep.numpy(), (w, h), interpolation=cv2.INTER_LINEAR)[..., None]

    def pasted():
        for frame, face in zip(inputs.frames, result.frames, strict=True):
            big = cv2.resize(face, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.float32)
            yield (frame * alpha + big * (1 - alpha)).round().astype(np.uint8)

    out = write_video(out_path, pasted(), FPS, inputs.audio_for_output(), inputs.sample_rate, overwrite=overwrite)
    return inputs.info | {"output": str(out), "model": "demo", "fps_generation": result.fps}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--video", required=True, help="source video with a visible face")
    parser.add_argument("--audio", help="driving audio (default: the video's own audio)")
    parser.add_argument("-o", "--output", required=True, help="output .mp4")
    parser.add_argument("--dit", help="Lip Forcing student checkpoint (.pth/.safetensors); without it the bundled "
                                      "demo model runs (no download; it knows only the demo's cartoon faces)")
    parser.add_argument("--vae", help="Wan2.1 VAE (Wan2.1_VAE.pth / wan_2.1_vae.safetensors), with --dit")
    parser.add_argument("--wav2vec", help="wav2vec2-base-960h folder or weight file, with --dit")
    parser.add_argument("--taew", help="TAEHV taew2_1.pth: fast streaming decoder (default: decode with the VAE)")
    parser.add_argument("--mask", help="LatentSync mask.png (default: the built-in mask)")
    parser.add_argument("--text", help="text embedding file, one [1, N, 4096] tensor (default: zero text)")
    parser.add_argument("--t-list", type=float, nargs="+", default=list(STUDENT_T_LIST),
                        help="denoising times ending in 0 (default: the released 0.999 0.769 0)")
    parser.add_argument("--full-attention", action="store_true", help="attend to the whole past (memory grows)")
    parser.add_argument("--attention", choices=BACKENDS, default="auto",
                        help="attention kernel (auto: flash-attn / xformers for 16-bit CUDA when installed, else SDPA)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("bf16", "fp16", "fp32"),
                        help="DiT, VAE and TAEHV dtype (default bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--face-size", type=int, default=512, help="aligned face size (the released model: 512)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def run(args: argparse.Namespace) -> int:
    try:
        check_backend(args.attention)
    except ValueError as err:
        raise InputError(f"--attention: {err}") from err
    with attention_backend(args.attention):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    check_sync(args)  # output, media, audio, model files (headers) and a face: before anything is loaded
    if args.dit is None:
        if args.vae or args.wav2vec or args.taew:
            raise InputError("--vae/--wav2vec/--taew go with --dit (a released checkpoint); without --dit the "
                             "bundled demo model runs")
        print("sync: generating with the bundled demo model ...", file=sys.stderr)
        info = sync_demo_video(args.video, args.output, audio_path=args.audio, seed=args.seed, overwrite=args.overwrite)
        print(f"wrote {info['output']}: {info['frames']} frames at {FPS} fps with the demo model "
              f"(video {info['video_adjust']}, generation {info['fps_generation']:.1f} fps)")
        return 0
    if not (args.vae and args.wav2vec):
        raise InputError("--dit needs --vae (the Wan2.1 VAE) and --wav2vec (wav2vec2-base-960h)")
    device = torch.device(args.device)
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    dtype = dtypes[args.dtype] if args.dtype else (torch.float32 if device.type == "cpu" else torch.bfloat16)
    print("sync: loading the models ...", file=sys.stderr)
    model = load_dit(args.dit, dtype=dtype, device=device)
    vae = load_wan_vae(args.vae, dtype=dtype, device=device)  # bf16 on CUDA by default, like the DiT
    decoder = load_taehv(args.taew, dtype=dtype, device=device) if args.taew else None
    pipe = LipSyncPipeline(model, vae, decoder, t_list=args.t_list,
                           spec=STREAM_FULL if args.full_attention else STREAM_WINDOW)
    print("sync: reading the video, aligning faces and generating ...", file=sys.stderr)
    info = sync_video(pipe, load_wav2vec2(args.wav2vec, device=device), args.video, args.output,
                      audio_path=args.audio, mask_path=args.mask, text=load_text(args.text), seed=args.seed,
                      face_size=args.face_size, overwrite=args.overwrite)
    print(f"wrote {info['output']}: {info['frames']} frames at {FPS} fps "
          f"(video {info['video_adjust']}, faces in {info['faces_found']} frames)")
    return 0
