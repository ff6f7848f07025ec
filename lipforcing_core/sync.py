"""End-to-end lip sync of a video file: ``python -m lipforcing_core sync --video V --audio A -o out.mp4 ...``.

read video -> 25 fps -> cut / ping-pong to the audio's generation length -> face alignment ->
wav2vec2 features -> streaming pipeline -> paste the generated mouths back chunk by chunk ->
H.264 mp4 with the driving audio (trimmed to the output's duration).
"""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

import numpy as np
import torch

from .audio import encode_audio, load_audio, load_wav2vec2
from .checkpoints import CheckpointError, load_dit, read_state_dict
from .config import STREAM_FULL, STREAM_WINDOW
from .face import FaceAligner, load_mouth_mask, paste_back
from .pipeline import (
    FPS,
    LipSyncPipeline,
    frames_to_uint8,
    generation_length,
    pingpong_indices,
)
from .sampling.schedule import STUDENT_T_LIST
from .vae import load_taehv, load_wan_vae
from .video import convert_fps, read_video, write_video

MASK_GRID = 256  # the LatentSync mask's own resolution: the official latent mask is resized from it


def load_text(path: str | Path | None) -> torch.Tensor | None:
    """A text embedding file holding one ``[1, N, 4096]`` / ``[N, 4096]`` tensor (None -> zero text)."""
    if path is None:
        return None
    tensors = [v for v in read_state_dict(path).values() if isinstance(v, torch.Tensor)]
    if len(tensors) != 1 or tensors[0].ndim not in (2, 3) or tensors[0].shape[-1] != 4096:
        raise CheckpointError(f"{path}: expected exactly one [1, N, 4096] text embedding tensor, "
                              f"found {[tuple(t.shape) for t in tensors]}")
    return tensors[0] if tensors[0].ndim == 3 else tensors[0][None]


def mono_or_stereo(audio: np.ndarray) -> np.ndarray:
    """``[C, N]`` float audio with at most 2 channels (more are mixed down to mono)."""
    return audio if audio.shape[0] <= 2 else audio.mean(0, keepdims=True)


def sync_video(pipe: LipSyncPipeline, encoder, video_path: str | Path, out_path: str | Path, *,
               audio_path: str | Path | None = None, mask_path: str | Path | None = None, aligner=None,
               text: torch.Tensor | None = None, seed: int = 42, face_size: int = 512,
               overwrite: bool = False) -> dict:
    """Lip-sync ``video_path`` to ``audio_path`` (default: the video's own audio); returns an info dict."""
    probe = read_video(video_path, max_frames=1, require_audio=audio_path is None)
    if audio_path is None:
        wave, rate = probe.audio, probe.sample_rate
    else:
        loaded, rate = load_audio(audio_path)
        wave = loaded.numpy()
    feats = encode_audio(encoder, torch.from_numpy(wave), rate)
    _, n = generation_length(len(feats), pipe.sampler.chunk_size)
    source = read_video(video_path, max_frames=math.ceil(n * probe.fps / FPS) + 1)  # only what the audio needs
    video, _ = convert_fps(source, FPS)
    adjust = "ping-pong extended" if len(video.frames) < n else "none"
    if len(video.frames) < n:
        warnings.warn(f"{video_path}: {len(video.frames)} frames at {FPS} fps for {n} frames of audio; "
                      "the video is ping-pong extended", stacklevel=2)
    frames = video.frames[pingpong_indices(min(len(video.frames), n), n)]
    crops, transforms, has_face = (aligner or FaceAligner(size=face_size)).align(frames, str(video_path))
    paste_mask = load_mouth_mask(mask_path, crops.shape[1])
    info = {"video_frames_25fps": len(video.frames), "faces_found": int(has_face.sum())}

    def composited():
        for chunk in pipe.stream(crops, feats, load_mouth_mask(mask_path, MASK_GRID), text=text, seed=seed, info=info):
            s = slice(chunk.frame_start, chunk.frame_start + chunk.frames.shape[2])
            yield from paste_back(frames[s], frames_to_uint8(chunk.frames)[0], transforms[s], paste_mask,
                                  original_crops=crops[s], has_face=has_face[s])

    samples = math.floor(n / FPS * rate)
    out = write_video(out_path, composited(), FPS, mono_or_stereo(wave)[:, :samples], rate, overwrite=overwrite)
    return info | {"output": str(out), "frames": n, "fps": FPS, "video_adjust": adjust}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--video", required=True, help="source video with a visible face")
    parser.add_argument("--audio", help="driving audio (default: the video's own audio)")
    parser.add_argument("-o", "--output", required=True, help="output .mp4")
    parser.add_argument("--dit", required=True, help="Lip Forcing student checkpoint (.pth/.safetensors)")
    parser.add_argument("--vae", required=True, help="Wan2.1 VAE (Wan2.1_VAE.pth / wan_2.1_vae.safetensors)")
    parser.add_argument("--wav2vec", required=True, help="wav2vec2-base-960h folder or weight file")
    parser.add_argument("--taew", help="TAEHV taew2_1.pth: fast streaming decoder (default: decode with the VAE)")
    parser.add_argument("--mask", help="LatentSync mask.png (default: the built-in mask)")
    parser.add_argument("--text", help="text embedding file, one [1, N, 4096] tensor (default: zero text)")
    parser.add_argument("--t-list", type=float, nargs="+", default=list(STUDENT_T_LIST),
                        help="denoising times ending in 0 (default: the released 0.999 0.769 0)")
    parser.add_argument("--full-attention", action="store_true", help="attend to the whole past (memory grows)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), help="DiT dtype (default bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--face-size", type=int, default=512, help="aligned face size (the released model: 512)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    dtype = dtypes[args.dtype] if args.dtype else (torch.float32 if device.type == "cpu" else torch.bfloat16)
    model = load_dit(args.dit, dtype=dtype, device=device)
    vae = load_wan_vae(args.vae, device=device)
    decoder = load_taehv(args.taew, device=device) if args.taew else None
    pipe = LipSyncPipeline(model, vae, decoder, t_list=args.t_list,
                           spec=STREAM_FULL if args.full_attention else STREAM_WINDOW)
    info = sync_video(pipe, load_wav2vec2(args.wav2vec, device=device), args.video, args.output,
                      audio_path=args.audio, mask_path=args.mask, text=load_text(args.text), seed=args.seed,
                      face_size=args.face_size, overwrite=args.overwrite)
    print(f"wrote {info['output']}: {info['frames']} frames at {FPS} fps "
          f"(video {info['video_adjust']}, faces in {info['faces_found']} frames)")
    return 0
