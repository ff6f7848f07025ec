"""``python -m lipforcing_core demo --out DIR``: dub a rendered face to new speech with the bundled models.

Renders a held-out identity saying one sentence, dubs it to another sentence with the streaming
two-step student (no download, CPU), and writes

- ``DIR/out.mp4``: source | dubbed | ground truth side by side, with the new speech;
- ``DIR/strip.png``: the same three rows at a few evenly spaced frames;
- ``DIR/report.json``: sync scores (demo SyncNet), fidelity, FPS and time to first frame;
- ``DIR/source.mp4`` and ``DIR/speech.wav``: the inputs, to try ``sync --video DIR/source.mp4 --audio DIR/speech.wav``;
- with ``--eval N``, ``DIR/eval.json``: the acceptance measurements on N held-out pairs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..atomic import atomic_output, check_target
from ..audio.io import write_wav
from ..config import FPS
from ..errors import InputError, about
from ..video import write_video
from .dub import DubbingPair, dub, dubbing_pair, heldout_pairs, to_uint8
from .dit_recipe import pixel_keep_mask
from .evaluate import DemoModels, evaluate_demo, load_demo_models, psnr_u8, sync_scores

SCALE = 4  # the 64x64 faces are shown 4x larger
ROWS = ("source", "dubbed", "ground truth")
OUTPUTS = ("out.mp4", "strip.png", "report.json", "source.mp4", "speech.wav")


def progress_bar(done: int, total: int, width: int = 30) -> None:
    """A one-line text progress bar on stderr, one update per generated chunk."""
    filled = width * done // total
    end = "\n" if done == total else ""
    print(f"\rdubbing [{'#' * filled}{'.' * (width - filled)}] chunk {done}/{total}", end=end, file=sys.stderr, flush=True)


def upscale(frames: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` enlarged ``scale`` times with nearest-neighbour (pixels stay honest)."""
    return frames.repeat(scale, axis=1).repeat(scale, axis=2)


def side_by_side(*videos: np.ndarray) -> np.ndarray:
    """Equal-length uint8 videos joined left to right, each upscaled."""
    return np.concatenate([upscale(v) for v in videos], axis=2)


def strip_image(videos: tuple[np.ndarray, ...], columns: int = 8) -> Image.Image:
    """Rows = ``videos`` (labelled with :data:`ROWS`), columns = evenly spaced frames; a PIL image."""
    n = len(videos[0])
    picks = np.linspace(0, n - 1, columns).round().astype(int)
    rows = [np.concatenate(list(upscale(v[picks], 2)), axis=1) for v in videos]
    label_w = 110
    grid = np.concatenate(rows, axis=0)
    canvas = Image.new("RGB", (grid.shape[1] + label_w, grid.shape[0]), "white")
    canvas.paste(Image.fromarray(grid), (label_w, 0))
    draw, row_h = ImageDraw.Draw(canvas), grid.shape[0] // len(videos)
    for i, name in enumerate(ROWS[:len(videos)]):
        draw.text((6, i * row_h + row_h // 2 - 6), name, fill="black")
    return canvas


def run_demo(models: DemoModels, pair: DubbingPair, out_dir: Path, *, seed: int = 0, overwrite: bool = False) -> dict:
    """Dub ``pair`` and write out.mp4, strip.png and report.json into ``out_dir``; returns the report."""
    check_outputs(out_dir, overwrite)
    keep = pixel_keep_mask(pair.source.shape[1])
    features = models.features(pair.target_audio)[0]
    result = dub(models.pipeline(), pair.source, features, keep, seed=seed, on_chunk=progress_bar)
    n = len(result.frames)
    source, truth = to_uint8(pair.source)[:n], to_uint8(pair.target)[:n]
    audio = pair.target_audio[: n * (pair.sample_rate // FPS)]
    video = write_video(out_dir / "out.mp4", side_by_side(source, result.frames, truth), FPS,
                        audio[None].numpy(), pair.sample_rate, overwrite=overwrite)
    write_video(out_dir / "source.mp4", upscale(to_uint8(pair.source)), FPS, pair.source_audio[None].numpy(),
                pair.sample_rate, overwrite=overwrite)
    write_wav(out_dir / "speech.wav", pair.target_audio.numpy(), pair.sample_rate, overwrite=overwrite)
    with atomic_output(out_dir / "strip.png", overwrite) as tmp:
        strip_image((source, result.frames, truth)).save(tmp)
    strip = out_dir / "strip.png"
    mouth = 1 - keep.numpy()
    report = {
        "seeds": {"identity": pair.seeds[0], "source_utterance": pair.seeds[1], "target_utterance": pair.seeds[2]},
        "frames": n, "fps_video": FPS, "size": list(pair.source.shape[1:3]),
        "sync": {"dubbed": sync_scores(models.syncnet, result.frames, audio),
                 "ground_truth": sync_scores(models.syncnet, truth, audio),
                 "source_with_new_speech": sync_scores(models.syncnet, source, audio)},
        "fidelity": {"psnr_mouth_vs_truth_db": psnr_u8(result.frames, truth, mouth),
                     "psnr_mouth_source_vs_truth_db": psnr_u8(source, truth, mouth),
                     "psnr_outside_mouth_vs_source_db": psnr_u8(result.frames, source, keep.numpy())},
        "speed": {"fps": result.fps, "ttff_s": result.ttff_s, "seconds": result.seconds,
                  "threads": torch.get_num_threads(), "note": "encode + 2 steps + cache write + decode + composite"},
        "outputs": {"video": str(video), "strip": str(strip), "source": str(out_dir / "source.mp4"),
                    "speech": str(out_dir / "speech.wav")},
    }
    with atomic_output(out_dir / "report.json", overwrite) as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    return report


def check_outputs(out_dir: Path, overwrite: bool = False) -> None:
    """Every file :func:`run_demo` writes can be written into ``out_dir`` (checked before any work)."""
    for name in OUTPUTS:
        check_target(out_dir / name, overwrite)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output folder (out.mp4, strip.png, report.json)")
    parser.add_argument("--seconds", type=float, default=4.0, help="clip length")
    parser.add_argument("--identity", type=int, help="identity seed (default: a held-out one)")
    parser.add_argument("--source-utterance", type=int, help="seed of the sentence the source video says")
    parser.add_argument("--target-utterance", type=int, help="seed of the sentence to dub to")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (and the held-out pair drawn)")
    parser.add_argument("--eval", type=int, default=0, metavar="N",
                        help="also run the acceptance evaluation on N held-out pairs (needs the teacher too)")
    parser.add_argument("--student", help="student weights (default: the bundled demo_student)")
    parser.add_argument("--teacher", help="teacher weights for --eval (default: the bundled demo_teacher)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing out.mp4")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    with about("--out"):
        check_outputs(args.out, args.overwrite)
    if args.seconds < 0.4:
        raise InputError(f"--seconds {args.seconds}: at least 0.4 s (one 9-frame chunk at 25 fps)")
    seeds = (args.identity, args.source_utterance, args.target_utterance)
    if any(s is not None for s in seeds) and any(s is None for s in seeds):
        raise InputError("--identity, --source-utterance and --target-utterance go together")
    pair = dubbing_pair(*seeds, args.seconds) if seeds[0] is not None else heldout_pairs(1, args.seconds, seed=args.seed)[0]
    models = load_demo_models(student=args.student, teacher=args.teacher, with_teacher=args.eval > 0)
    report = run_demo(models, pair, args.out, seed=args.seed, overwrite=args.overwrite)
    dubbed, truth = report["sync"]["dubbed"], report["sync"]["ground_truth"]
    print(f"wrote {report['outputs']['video']} ({report['frames']} frames, {report['speed']['fps']:.1f} fps, "
          f"first frame after {report['speed']['ttff_s']:.2f} s); LSE-C {dubbed['lse_c']:.3f} "
          f"(ground truth {truth['lse_c']:.3f}), offset {dubbed['offset']}")
    if args.eval:
        result = evaluate_demo(models, args.eval, seed=args.seed, log=lambda s: print(s, file=sys.stderr))
        with atomic_output(args.out / "eval.json", overwrite=True) as tmp:  # --eval's own, refreshed each run
            tmp.write_text(json.dumps(result, indent=1))
        print(json.dumps(result["summary"]["checks"], indent=1))
    return 0
