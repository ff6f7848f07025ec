"""Lip sync a video file: ``python -m lipforcing_core sync --video V --audio A -o out.mp4 (--dit ... | --demo)``.

The command layer over :mod:`lipforcing_core.stream_job`: it checks the arguments, opens the job
(reads the audio, finds the first face -- before any model is loaded), loads the released model
files or the bundled demo model, and streams the clip into the output with a progress line on
stderr (chunk k/N, FPS).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .audio import load_audio, load_wav2vec2
from .checkpoints import CheckpointError, load_dit, read_state_dict
from .config import FPS, STREAM_FULL, STREAM_WINDOW, TEXT_DIM
from .demo.constants import DEMO_SIZE
from .errors import InputError, about
from .face.align import RESOLUTION as RELEASE_SIZE
from .face.align import FaceTracker
from .face.detect import MediaPipeDetector
from .models.attention import BACKENDS, attention_backend, check_backend
from .pipeline import LipSyncPipeline
from .preflight import check_sync
from .sampling.schedule import STUDENT_T_LIST
from .stream_job import LipSyncModel, StreamJob, mono_or_stereo, video_job
from .vae import load_taehv, load_wan_vae
from .video import MediaSource

NEEDS_MODEL = ("sync needs the released model files --dit (Lip Forcing student), --vae (Wan2.1 VAE) and --wav2vec "
               "(wav2vec2-base-960h), see README 'The released models'; or --demo for the bundled demo model (no download)")

__all__ = ["load_text", "mono_or_stereo", "open_job", "demo_model", "release_model"]


def load_text(path: str | Path | None) -> torch.Tensor | None:
    """A text embedding file holding one ``[1, N, 4096]`` / ``[N, 4096]`` tensor (None -> zero text)."""
    if path is None:
        return None
    tensors = [v for v in read_state_dict(path).values() if isinstance(v, torch.Tensor)]
    if len(tensors) != 1 or tensors[0].ndim not in (2, 3) or tensors[0].shape[-1] != TEXT_DIM:
        raise CheckpointError(f"{path}: expected exactly one [1, N, 4096] text embedding tensor, "
                              f"found {[tuple(t.shape) for t in tensors]}")
    return tensors[0] if tensors[0].ndim == 3 else tensors[0][None]


def open_job(video: MediaSource, audio: str | Path | None = None, *, face_size: int = RELEASE_SIZE,
             detector=None, face_index: int = 0) -> StreamJob:
    """The streaming job for ``video`` driven by ``audio`` (default: the video's own audio track):
    reads the audio and finds the first face; loads no model."""
    wave, rate = (None, None) if audio is None else load_audio(audio)
    tracker = FaceTracker(detector or MediaPipeDetector(), face_index=face_index, size=face_size)
    return video_job(video, tracker, None if wave is None else wave.numpy(), rate)


def demo_model(seed: int = 42, student: str | Path | None = None) -> LipSyncModel:
    """The bundled demo model on aligned 64x64 faces; it replaces only the mouth in the frame."""
    from .demo.evaluate import load_demo_models

    models = load_demo_models(student=student)
    return LipSyncModel.for_faces(models.pipeline(), models.features, DEMO_SIZE, seed=seed)


def release_model(dit: str | Path, vae: str | Path, wav2vec: str | Path, face_size: int, *,
                  taew: str | Path | None = None, device: str | torch.device = "cpu", dtype: str | None = None,
                  t_list=STUDENT_T_LIST, full_attention: bool = False, mask: str | Path | None = None,
                  text: str | Path | None = None, seed: int = 42) -> LipSyncModel:
    """The released student from its files (the ``--dit/--vae/--wav2vec/--taew`` of ``sync``); the DiT,
    VAE and TAEHV in ``dtype`` (bf16/fp16/fp32; default bf16 on CUDA, fp32 on CPU)."""
    device = torch.device(device)
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    dtype = dtypes[dtype] if dtype else (torch.float32 if device.type == "cpu" else torch.bfloat16)
    pipe = LipSyncPipeline(load_dit(dit, dtype=dtype, device=device), load_wan_vae(vae, dtype=dtype, device=device),
                           load_taehv(taew, dtype=dtype, device=device) if taew else None, t_list=t_list,
                           spec=STREAM_FULL if full_attention else STREAM_WINDOW)
    return LipSyncModel.for_faces(pipe, load_wav2vec2(wav2vec, device=device), face_size, mask,
                                  text=load_text(text), seed=seed)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--video", required=True, help="source video with a visible face")
    parser.add_argument("--audio", help="driving audio (default: the video's own audio)")
    parser.add_argument("-o", "--output", required=True, help="output .mp4")
    parser.add_argument("--dit", help="Lip Forcing student checkpoint (.pth/.safetensors)")
    parser.add_argument("--vae", help="Wan2.1 VAE (Wan2.1_VAE.pth / wan_2.1_vae.safetensors), with --dit")
    parser.add_argument("--wav2vec", help="wav2vec2-base-960h folder or weight file, with --dit")
    parser.add_argument("--demo", action="store_true",
                        help="use the bundled demo model instead (no download; trained on cartoon faces only: "
                             "on a real video it shows the pipeline, not lip-sync quality)")
    parser.add_argument("--taew", help="TAEHV taew2_1.pth: fast streaming decoder (default: decode with the VAE)")
    parser.add_argument("--mask", help="LatentSync mask.png (default: the built-in mask)")
    parser.add_argument("--text", help="text embedding file, one [1, N, 4096] tensor (default: zero text)")
    parser.add_argument("--t-list", type=float, nargs="+", default=list(STUDENT_T_LIST),
                        help="denoising times ending in 0 (default: the released 0.999 0.769 0)")
    parser.add_argument("--full-attention", action="store_true", help="attend to the whole past (memory grows)")
    parser.add_argument("--attention", choices=BACKENDS, default="auto",
                        help="attention kernel (auto: FlashAttention-3, flash-attn 2 or xformers for 16-bit CUDA when installed, "
                             "else SDPA with its cuDNN kernel first)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), help="DiT, VAE and TAEHV dtype (default bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--face-size", type=int, help=f"aligned face size (default {RELEASE_SIZE}, the released "
                                                      f"model; the demo model works at {DEMO_SIZE})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def run(args: argparse.Namespace) -> int:
    try:
        check_backend(args.attention)
    except ValueError as err:
        raise InputError(f"--attention: {err}") from err
    with attention_backend(args.attention):
        return _run(args)


def check_arguments(args: argparse.Namespace) -> int:
    """The face size the arguments ask for; a one-line exit for a missing or mixed model choice."""
    released = (args.dit, args.vae, args.wav2vec, args.taew)
    if args.demo:
        if any(released):
            raise InputError("--demo runs the bundled demo model: drop --dit/--vae/--wav2vec/--taew")
        if args.face_size not in (None, DEMO_SIZE):
            raise InputError(f"--demo works on {DEMO_SIZE}x{DEMO_SIZE} faces; drop --face-size")
        return DEMO_SIZE
    if not (args.dit and args.vae and args.wav2vec):
        raise InputError(NEEDS_MODEL)
    return args.face_size or RELEASE_SIZE


def progress_line(done: int, total: int, fps: float) -> None:
    """``chunk k/N, x.x fps`` rewritten in place on stderr."""
    print(f"\rchunk {done}/{total}, {fps:.1f} fps", end="\n" if done == total else "", file=sys.stderr, flush=True)


def summary(info: dict, model: str) -> str:
    return (f"wrote {info['output']}: {info['frames']} frames at {FPS} fps with the {model} model, "
            f"{info['audio_seconds']:.2f} s of audio; video {info['video_adjust']}; face in {info['faces_found']} "
            f"frames, {info['frames_without_face']} without a face passed through unchanged; "
            f"{info['fps_end_to_end']:.1f} fps end to end, first frame after {info['ttff_s']:.2f} s")


def _run(args: argparse.Namespace) -> int:
    if not (args.dit or args.demo):
        raise InputError(NEEDS_MODEL)
    check_sync(args)  # output, media, audio and model files (headers): before anything is loaded
    face_size = check_arguments(args)
    try:
        with about("--video"):  # the job stops at the first face: a clip without one fails here
            job = open_job(args.video, args.audio, face_size=face_size)
    except ValueError as err:
        raise InputError(str(err)) from err
    model = demo_model(args.seed) if args.demo else release_model(
        args.dit, args.vae, args.wav2vec, face_size, taew=args.taew, device=args.device, dtype=args.dtype,
        t_list=args.t_list, full_attention=args.full_attention, mask=args.mask, text=args.text, seed=args.seed)
    info = job.run(model, args.output, overwrite=args.overwrite, on_chunk=progress_line)
    print(summary(info, "demo" if args.demo else "Lip Forcing"))
    return 0
