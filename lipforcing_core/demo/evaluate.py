"""The demo model's acceptance measurements on held-out dubbing pairs (faces and sentences never trained on).

Per pair, the shipped streaming student dubs the source video to the target speech through the
real pipeline (:func:`~lipforcing_core.demo.dub.dub`), and is compared with the exact ground truth:

- lip sync: PSNR against the ground-truth rendering, for the student, the same student fed silence,
  and the 50-step CFG teacher, over two regions: the lips (the pixels where the source and the
  ground-truth renderings differ in some frame of the clip, dilated by one pixel: lips, mouth
  opening, jaw line; the acceptance checks use this one) and the whole generated mouth mask (lower
  face, most of which no utterance changes); the demo SyncNet's LSE-C / LSE-D and AV offset on the
  student's output, on the ground truth and on the demo VAE's reconstruction of the ground truth
  (the best any generated mouth can show the SyncNet); the offset measured against the speech
  moved by ``k`` frames (a correctly timed mouth reads as offset ``k``);
- fidelity: PSNR outside the mouth against the source, of the composited output (what users get)
  and of the raw decoded frames (how much of the face the network itself keeps);
- speed: student and teacher end to end (encode, denoise, decode, composite) on one longer clip,
  in one run, and the student's time to first frame.

Clips are 3 s long, as in the SyncNet's own held-out evaluation: the offset search over ±15
frames needs them. On 33-frame windows even the VAE's reconstruction of the ground truth read at
offset 0 ± 1 on only 1 of 8 clips (7 of 8 at 3 s).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from ..config import FPS
from ..pipeline import LipSyncPipeline, composite_mouth, pixel_mask, teacher_clip
from ..syncnet import evaluate_sync
from .dit_recipe import pixel_keep_mask, to_video
from .dub import DubbingPair, dub, heldout_pairs, to_uint8
from .syncnet_train import shift_audio
from .vae_train import encodable_frames

SHIFTS = (-3, 3)


@dataclass
class DemoModels:
    """Everything the demo runs on: the student (and teacher), the VAE, the log-mel front end, the SyncNet."""

    student: torch.nn.Module
    vae: torch.nn.Module
    features: torch.nn.Module
    syncnet: torch.nn.Module
    teacher: torch.nn.Module | None = None

    def pipeline(self) -> LipSyncPipeline:
        return LipSyncPipeline(self.student, self.vae)


def load_demo_models(student=None, teacher=None, vae=None, syncnet=None, with_teacher: bool = False) -> DemoModels:
    """The bundled demo models (float32 on CPU); any path given replaces the shipped file."""
    from ..checkpoints import load_dit
    from .audio_features import LogMelFeatures
    from .constants import STUDENT_FILE, SYNCNET_FILE, TEACHER_FILE, VAE_FILE
    from .recipe import load_demo_syncnet, load_demo_vae

    return DemoModels(
        student=load_dit(student or STUDENT_FILE, dtype=torch.float32),
        vae=load_demo_vae(vae or VAE_FILE),
        features=LogMelFeatures(),
        syncnet=load_demo_syncnet(syncnet or SYNCNET_FILE),
        teacher=load_dit(teacher or TEACHER_FILE, dtype=torch.float32) if with_teacher or teacher else None,
    )


def psnr_u8(a: np.ndarray, b: np.ndarray, region: np.ndarray | None = None) -> float:
    """PSNR in dB of uint8 frames ``[T, H, W, 3]``, over the pixels where ``region [H, W]`` is 1."""
    err = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    if region is not None:
        err = err[:, region.astype(bool)]
    return 10 * math.log10(255.0**2 / max(float(err.mean()), 1e-10))


def lips_region(source: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``[H, W]`` 0/1: pixels where the two renderings differ in some frame, dilated by one pixel."""
    changed = (source != truth).any(axis=(0, 3)).astype(np.uint8)
    return cv2.dilate(changed, np.ones((3, 3), np.uint8))


def sync_scores(syncnet, frames: np.ndarray, audio: Tensor) -> dict:
    """The demo SyncNet's AV offset, LSE-D and LSE-C of ``frames`` with ``audio`` (16 kHz)."""
    result = evaluate_sync(syncnet, torch.from_numpy(frames), audio)
    return {"offset": result.offset, "lse_d": result.lse_d, "lse_c": result.lse_c}


def evaluate_pair(models: DemoModels, pair: DubbingPair, seed: int = 0) -> dict:
    """Every per-clip number of the module docstring for one (window of a) pair."""
    size = pair.source.shape[1]
    keep = pixel_keep_mask(size)
    mouth = 1 - keep.numpy()
    feats = models.features(pair.target_audio)[0]
    pipe = models.pipeline()
    dubbed = dub(pipe, pair.source, feats, keep, seed=seed).frames
    silent = dub(pipe, pair.source, models.features(torch.zeros_like(pair.target_audio))[0], keep, seed=seed).frames
    n = len(dubbed)
    source, truth = to_uint8(pair.source)[:n], to_uint8(pair.target)[:n]
    audio = pair.target_audio[: n * (pair.sample_rate // FPS)]
    lips = lips_region(source, truth)
    with torch.no_grad():
        decoded = models.vae.decode(models.vae.encode(to_video(torch.from_numpy(truth) / 255)))
    outputs = {"": dubbed, "_silent": silent, "_source": source, "_vae": composite_mouth(decoded, source, keep)}
    if models.teacher is not None:
        out = teacher_clip(models.teacher, models.vae, source, feats[:n], keep, seed=seed)
        outputs["_teacher"] = composite_mouth(out, source, keep)
    row = {}
    for name, frames in outputs.items():
        row[f"psnr_lips{name}_db"] = psnr_u8(frames, truth, lips)
        row[f"psnr_mouth{name}_db"] = psnr_u8(frames, truth, mouth)
    row["psnr_outside_db"] = psnr_u8(dubbed, source, keep.numpy())
    student, gt = sync_scores(models.syncnet, dubbed, audio), sync_scores(models.syncnet, truth, audio)
    row |= {f"student_{k}": v for k, v in student.items()} | {f"truth_{k}": v for k, v in gt.items()}
    row |= {f"vae_{k}": v for k, v in sync_scores(models.syncnet, outputs["_vae"], audio).items()}
    row["shift_offsets"] = {k: sync_scores(models.syncnet, dubbed, shift_audio(audio, k))["offset"] for k in SHIFTS}
    return row


def summarize(rows: list[dict]) -> dict:
    """Means over clips, and the acceptance checks of the demo issue as booleans."""
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if not isinstance(rows[0][k], dict)}
    offsets = [r["student_offset"] for r in rows]
    shift_hits = [abs(off - k) <= 1 for r in rows for k, off in r["shift_offsets"].items()]
    out = mean | {
        "clips": len(rows),
        "offset_within_1": sum(abs(o) <= 1 for o in offsets) / len(rows),
        "shift_within_1": sum(shift_hits) / len(shift_hits),
        "lse_c_ratio": mean["student_lse_c"] / mean["truth_lse_c"],
        "lse_d_ratio": mean["student_lse_d"] / mean["truth_lse_d"],
        "vae_offset_within_1": sum(abs(r["vae_offset"]) <= 1 for r in rows) / len(rows),
        "vae_lse_c_ratio": mean["vae_lse_c"] / mean["truth_lse_c"],
        "vae_lse_d_ratio": mean["vae_lse_d"] / mean["truth_lse_d"],
        "sync_gain_db": mean["psnr_lips_db"] - mean["psnr_lips_silent_db"],
        "sync_gain_mouth_mask_db": mean["psnr_mouth_db"] - mean["psnr_mouth_silent_db"],
    }
    checks = {
        "sync_gain_ge_3db": out["sync_gain_db"] >= 3,
        "lse_c_ge_80pct": out["lse_c_ratio"] >= 0.8,
        "lse_d_le_120pct": out["lse_d_ratio"] <= 1.2,
        "offset_0_pm_1": out["offset_within_1"] == 1.0,
        "shift_follows_k": out["shift_within_1"] == 1.0,
        "outside_ge_30db": out["psnr_outside_db"] >= 30,
    }
    if "psnr_lips_teacher_db" in out:
        out["teacher_gap_db"] = out["psnr_lips_teacher_db"] - out["psnr_lips_db"]
        checks["within_1db_of_teacher"] = out["teacher_gap_db"] <= 1
    return out | {"checks": checks}


def measure_speed(models: DemoModels, pair: DubbingPair, teacher_steps: int = 50) -> dict:
    """Student and teacher end to end on the same clip, in this process, one after the other."""
    keep = pixel_keep_mask(pair.source.shape[1])
    feats = models.features(pair.target_audio)[0]
    pipe = models.pipeline()
    dub(pipe, pair.source[:33], feats[:33], keep)  # warm-up (allocator, kernels)
    result = dub(pipe, pair.source, feats, keep)
    out = {"frames": len(result.frames), "student_fps": result.fps, "student_ttff_s": result.ttff_s,
           "student_seconds": result.seconds, "threads": torch.get_num_threads()}
    if models.teacher is not None:
        source = to_uint8(pair.source)[: len(result.frames)]
        began = time.perf_counter()
        gen = teacher_clip(models.teacher, models.vae, source, feats[: len(source)], keep, steps=teacher_steps)
        composite_mouth(gen, source, pixel_mask(keep, source.shape[1:3]))
        seconds = time.perf_counter() - began
        out |= {"teacher_fps": len(source) / seconds, "teacher_seconds": seconds, "teacher_steps": teacher_steps,
                "student_speedup": result.fps * seconds / len(source)}
    return out


def evaluate_demo(models: DemoModels, clips: int = 16, seconds: float = 3.0, speed_clip_s: float = 3.0,
                  seed: int = 0, log=print) -> dict:
    """The acceptance report: per-clip rows on ``seconds``-long held-out pairs, their summary, and speed."""
    rows = []
    for i, pair in enumerate(heldout_pairs(clips, seconds, seed=seed)):
        rows.append(evaluate_pair(models, pair.window(0, encodable_frames(len(pair.source))), seed=i))
        log(f"eval {i + 1}/{clips}: lips {rows[-1]['psnr_lips_db']:.2f} dB (silent {rows[-1]['psnr_lips_silent_db']:.2f}, "
            f"teacher {rows[-1].get('psnr_lips_teacher_db', float('nan')):.2f}), offset {rows[-1]['student_offset']}")
    speed = measure_speed(models, heldout_pairs(1, speed_clip_s, seed=seed + 7)[0])
    checks = {"student_ge_25fps": speed["student_fps"] >= FPS}
    if "student_speedup" in speed:
        checks["student_ge_20x_teacher"] = speed["student_speedup"] >= 20
    summary = summarize(rows)
    summary["checks"] |= checks
    return {"summary": summary, "speed": speed, "rows": rows}
