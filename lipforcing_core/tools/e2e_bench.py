"""End-to-end benchmark: one whole file-to-file lip sync through the streaming job, timed by stage.

    python -m lipforcing_core bench --e2e --video V [--audio A] (--preset P --face-size N | --demo |
        --dit D --vae V --wav2vec W) --device D --out J.json

The run is :class:`~lipforcing_core.stream_job.StreamJob` exactly as ``sync`` runs it (decode,
detect + align, generate, paste back, encode + mux). ``--preset`` uses seeded random weights
(a preset-sized DiT, a Wan2.1-shaped VAE of ``--vae-dim`` base width, a wav2vec2-base-shaped audio
encoder): speed and memory do not depend on the values. Reported:

* ``fps``: output frames per second of wall time, from the job's start (audio features included,
  model loading excluded); ``ttff_s``: seconds from that start to the first frame handed to the encoder;
* ``ms_per_frame``: ``decode`` (PyAV decode and 25 fps conversion), ``face`` (detect + align),
  ``generate`` (the pipeline: VAE encode, denoise, decode), ``paste``, ``encode`` (H.264 + mux);
* ``peak_rss_mb``: the process's peak resident set during the job (Linux: ``VmHWM`` reset through
  ``/proc/self/clear_refs`` first; elsewhere the lifetime peak from ``getrusage``, or null), through
  ``lipforcing_core/tools/memory.py``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from ..audio.wav2vec2 import AudioEncoder, Wav2Vec2Config, build_model
from ..errors import InputError
from ..pipeline import LipSyncPipeline
from ..stream_job import LipSyncModel
from .memory import peak_rss_mb, reset_peak_rss, rounded


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``bench --e2e`` (``--preset``, ``--device``, ``--out``, ``--threads``,
    ``--vae-dim`` and ``--decoder`` are the student bench's own)."""
    parser.add_argument("--e2e", action="store_true", help="time a whole file-to-file lip sync instead (see below)")
    parser.add_argument("--video", help="--e2e: source video")
    parser.add_argument("--audio", help="--e2e: driving audio (default: the video's own)")
    parser.add_argument("--face-size", type=int, default=512, help="--e2e with --preset: aligned face size")
    parser.add_argument("--demo", action="store_true", help="--e2e: the bundled demo model (64x64 faces)")
    parser.add_argument("--dit", help="--e2e: a released student checkpoint (with --vae and --wav2vec)")
    parser.add_argument("--vae", help="--e2e: Wan2.1 VAE file, with --dit")
    parser.add_argument("--wav2vec", help="--e2e: wav2vec2-base-960h folder or file, with --dit")
    parser.add_argument("--taew", help="--e2e: TAEHV decoder file, with --dit")


def random_model(preset: str, device: torch.device, face_size: int, vae_dim: int, decoder: str) -> LipSyncModel:
    """A preset-sized student with seeded random weights and random-weight VAE and wav2vec2."""
    from .bench import bench_models

    config = Wav2Vec2Config()
    encoder = AudioEncoder(build_model(config), config).eval().requires_grad_(False).to(device)
    return LipSyncModel.for_faces(LipSyncPipeline(*bench_models(preset, device, vae_dim, decoder)), encoder, face_size)




def e2e(args: argparse.Namespace) -> dict:
    from ..sync import DEMO_SIZE, demo_model, open_job, release_model

    if args.video is None:
        raise InputError("bench --e2e needs --video (and optionally --audio)")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    face_size = DEMO_SIZE if args.demo else args.face_size
    job = open_job(args.video, args.audio, face_size=face_size)
    if args.demo:
        model, name = demo_model(), "demo"
    elif args.dit:
        model = release_model(args.dit, args.vae, args.wav2vec, face_size, taew=args.taew, device=device)
        name = f"released ({Path(args.dit).name})"
    else:
        defaults = {"vae_dim": 4, "decoder": "wan"} if device.type == "cpu" else {"vae_dim": 96, "decoder": "taehv"}
        model = random_model(args.preset, device, face_size, args.vae_dim or defaults["vae_dim"],
                             args.decoder or defaults["decoder"])
        name = f"preset {args.preset} (random weights)"
    reset = reset_peak_rss()
    with tempfile.TemporaryDirectory(prefix="lipforcing-e2e-") as tmp:
        info = job.run(model, Path(tmp) / "out.mp4")
    from .bench import machine

    return {"model": name, "device": str(device), "machine": machine(device), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "video": str(args.video), "audio": args.audio,
            "face_size": face_size, "frames": info["frames"], "fps": info["fps_end_to_end"], "ttff_s": info["ttff_s"],
            "peak_rss_mb": rounded(peak_rss_mb()),
            "peak_rss_method": "VmHWM after clear_refs" if reset else "lifetime peak (the platform cannot reset it)",
            "ms_per_frame": info["ms_per_frame"], "audio_features_s": info["audio_features_s"],
            "summary": {k: info[k] for k in ("audio_seconds", "generated_frames", "video_adjust", "faces_found",
                                             "frames_without_face", "seconds")}}


def run(args: argparse.Namespace) -> int:
    result = e2e(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("fps", "ttff_s", "frames", "peak_rss_mb", "ms_per_frame")}))
    return 0
