"""Student vs teacher benchmark: speed, time to first frame, stage times, peak memory, analytic FLOPs.

    python -m lipforcing_core bench --preset tiny --device cpu --out bench.json

One process runs the streaming student and the 50-step CFG teacher of one preset on the same
random clip (random weights: speed and memory do not depend on the values), after a short
warm-up of both. Both include the same stages, each timed: ``encode`` (two VAE streams:
masked and unmasked source), ``denoise`` (transformer passes; the student's cache-write pass is
timed separately as ``cache_write``), ``decode`` (streaming decoder, TAEHV by default) and
``composite`` (mouth-only blend with the source face in aligned space and conversion to uint8;
the paste-back into full-resolution frames depends on the source size and is left out).

* ``student_fps`` / ``teacher_fps``: output frames per second of wall time, whole pipeline.
* ``ttff_s``: seconds from the call to the first chunk's composited uint8 frames on the host (the teacher's is
  its total time).
* ``peak_memory_mb``: peak memory of the windowed student, measured in fresh processes for a
  short and a long clip. CPU: the process's peak resident set (``VmHWM``) and the rise of the
  peak over the resident set just before the run (the peak is reset through
  ``/proc/self/clear_refs`` first). CUDA: ``torch.cuda.max_memory_allocated``.
* ``--e2e``: a whole file-to-file lip sync instead (``lipforcing_core/tools/e2e_bench.py``).
* ``flops_per_frame``: analytic multiply-add x 2 counts of the transformer per output frame for
  the 1.3B and 14B presets at 512x512 on an 81-frame clip with a 512-row text embedding.
* ``fast_paths``: the switchable fast paths (``--no-fast`` turns them off for a before/after in
  one process): CUDA graphs for the student's passes, cuDNN autotuning, the attention backend
  ("auto" vs plain "sdpa"), and the composite on the device (off: the numpy composite on the CPU).
  Every window shape is warmed up (a 3-chunk clip) before anything is timed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ..config import STREAM_FULL, STREAM_WINDOW, CausalSpec, DiTConfig, get_preset
from ..face.mask import load_mouth_mask
from ..models.attention import attention_backend
from ..models.dit import LipForcingDiT
from ..pipeline import (
    HostCopy,
    LipSyncPipeline,
    StageTimer,
    composite_mouth,
    composite_mouth_device,
    generation_length,
    pixel_mask,
    teacher_clip,
)
from ..sampling.schedule import STUDENT_T_LIST
from ..sampling.teacher import teacher_passes
from ..vae.taehv import TAEHV
from ..vae.wan_vae import SPACE_FACTOR, WanVAE, WanVAEConfig
from .memory import peak_rss_mb, reset_peak_rss, rounded, rss_mb

CPU_DEFAULTS = {"size": 128, "chunks": 4, "memory_chunks": (4, 16), "vae_dim": 4, "decoder": "wan"}
CUDA_DEFAULTS = {"size": 512, "chunks": 7, "memory_chunks": (4, 16), "vae_dim": 96, "decoder": "taehv"}
TEACHER_STEPS, TEACHER_SHIFT, TEACHER_CFG = 50, 5.0, 4.5


# ------------------------------------------------------------------------------------------ FLOPs


def dit_pass_flops(cfg: DiTConfig, frames: int, key_frames: int, tokens_per_frame: int, text_len: int = 512) -> int:
    """FLOPs (2 per multiply-add) of one transformer pass over ``frames`` latent frames attending to ``key_frames``."""
    d, q, k = cfg.dim, frames * tokens_per_frame, key_frames * tokens_per_frame
    per_layer = (2 * q * 4 * d * d  # self-attention q, k, v, o
                 + 2 * 2 * q * k * d  # scores and weighted sum
                 + 2 * q * 2 * d * d  # cross-attention q, o
                 + 2 * 2 * q * text_len * d  # cross-attention scores and sum
                 + 2 * q * 2 * d * cfg.ffn_dim)  # FFN
    patch = 2 * q * cfg.in_dim * 4 * d + 2 * q * d * cfg.out_dim * 4
    audio = 2 * frames * (cfg.audio_dim * cfg.audio_frames_per_latent * cfg.audio_hidden
                          + cfg.num_audio_projs * cfg.audio_hidden * d)
    return cfg.num_layers * per_layer + patch + audio


def text_flops(cfg: DiTConfig, text_len: int = 512) -> int:
    """Once per clip: text embedding and every block's cross-attention K/V."""
    return 2 * text_len * (cfg.text_dim * cfg.dim + cfg.dim * cfg.dim) + cfg.num_layers * 2 * text_len * 2 * cfg.dim ** 2


def student_flops_per_frame(cfg: DiTConfig, latent_frames: int = 21, size: int = 512, spec: CausalSpec = STREAM_WINDOW,
                            steps: int = len(STUDENT_T_LIST) - 1, text_len: int = 512) -> float:
    tpf = (size // SPACE_FACTOR // 2) ** 2
    total, c = text_flops(cfg, text_len), spec.chunk_size
    for c0 in range(0, latent_frames, c):
        keys = c0 + c
        if spec.local_attn_size > 0:
            keys = min(keys, spec.local_attn_size)
        total += (steps + 1) * dit_pass_flops(cfg, c, keys, tpf, text_len)
    return total / (1 + 4 * (latent_frames - 1))


def teacher_flops_per_frame(cfg: DiTConfig, latent_frames: int = 21, size: int = 512, text_len: int = 512) -> float:
    tpf = (size // SPACE_FACTOR // 2) ** 2
    passes = teacher_passes(TEACHER_STEPS, TEACHER_SHIFT, TEACHER_CFG)
    total = text_flops(cfg, text_len) + passes * dit_pass_flops(cfg, latent_frames, latent_frames, tpf, text_len)
    return total / (1 + 4 * (latent_frames - 1))


def flops_table() -> dict:
    out = {"clip": "81 frames (21 latent), 512x512, text 512 rows", "unit": "GFLOP per output frame"}
    for name in ("1.3b", "14b"):
        cfg = get_preset(name)
        s, t = student_flops_per_frame(cfg), teacher_flops_per_frame(cfg)
        out[name] = {"student": round(s / 1e9, 1), "student_full_attention": round(
            student_flops_per_frame(cfg, spec=STREAM_FULL) / 1e9, 1), "teacher": round(t / 1e9, 1),
            "ratio": round(t / s, 1)}
    return out


# ------------------------------------------------------------------------------------------ models


def random_dit(preset: str, device: torch.device, dtype: torch.dtype, seed: int = 0) -> LipForcingDiT:
    """A preset-sized DiT with seeded random weights, materialised directly on ``device``."""
    with torch.device("meta"):
        model = LipForcingDiT(get_preset(preset))
    model = model.to_empty(device=device).to(dtype)
    return model.init_weights(torch.Generator(device).manual_seed(seed)).eval().requires_grad_(False)


def bench_models(preset: str, device: torch.device, vae_dim: int, decoder: str):
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    torch.manual_seed(0)
    vae = WanVAE(WanVAEConfig(dim=vae_dim)).eval().requires_grad_(False).to(device, dtype)
    dec = TAEHV().eval().requires_grad_(False).to(device, dtype) if decoder == "taehv" else None
    return random_dit(preset, device, dtype), vae, dec


def bench_inputs(chunks: int, size: int, seed: int = 0) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    frames_n = generation_length(1 + 4 * (3 * chunks - 1))[1]
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (frames_n, size, size, 3), dtype=np.uint8)
    audio = torch.from_numpy(rng.standard_normal((frames_n, 10752), dtype=np.float32))
    return frames, audio, load_mouth_mask(None, size)


# ------------------------------------------------------------------------------------------ runs


def composite_to_host(chunk, frames: np.ndarray, keep: torch.Tensor, device_composite: bool) -> np.ndarray:
    """The chunk's uint8 composite on the host: blended on the device and copied once, or in numpy."""
    source = frames[chunk.frame_start:chunk.frame_start + chunk.frames.shape[2]]
    if not device_composite:
        return composite_mouth(chunk.frames, source, keep)
    dev = chunk.frames.device
    out = composite_mouth_device(chunk.frames, torch.from_numpy(source).to(dev, non_blocking=True), keep.to(dev))
    return HostCopy(out).wait().numpy()


def run_student(pipe: LipSyncPipeline, frames, audio, mask, device_composite: bool = True) -> dict:
    """Stream a clip; a chunk counts as out when its composited uint8 frames are on the host."""
    pipe.timer = timer = StageTimer()
    keep = pixel_mask(mask, frames.shape[1:3])
    began = last = time.perf_counter()
    ttff, chunk_s, n = None, [], 0
    for chunk in pipe.stream(frames, audio, mask, seed=0):
        with timer.stage("composite", pipe.device):
            composite_to_host(chunk, frames, keep, device_composite)
        if ttff is None:
            ttff = time.perf_counter() - began
        n += chunk.frames.shape[2]
        now = time.perf_counter()
        chunk_s.append(now - last)
        last = now
    total = time.perf_counter() - began
    return {"frames": n, "seconds": total, "fps": n / total, "ttff_s": ttff, "chunk_s": chunk_s,
            "stages_s": dict(timer.seconds)}


def run_teacher(model, vae, decoder, frames, audio, mask, steps: int = TEACHER_STEPS) -> dict:
    timer = StageTimer()
    began = time.perf_counter()
    out = teacher_clip(model, vae, frames, audio, mask, decoder=decoder, steps=steps, cfg_scale=TEACHER_CFG,
                       shift=TEACHER_SHIFT, timer=timer)
    with timer.stage("composite"):
        composite_mouth(out, frames, pixel_mask(mask, frames.shape[1:3]))
    total = time.perf_counter() - began
    return {"frames": len(frames), "seconds": total, "fps": len(frames) / total, "ttff_s": total,
            "stages_s": dict(timer.seconds), "passes": teacher_passes(steps, TEACHER_SHIFT, TEACHER_CFG)}


# ------------------------------------------------------------------------------------------ memory


def memory_probe(preset: str, device: str, chunks: int, size: int, vae_dim: int, decoder: str,
                 threads: int | None = None) -> dict:
    """Run the windowed student on a clip of ``chunks`` chunks; return its peak memory (fresh process)."""
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    model, vae, dec = bench_models(preset, dev, vae_dim, decoder)
    frames, audio, mask = bench_inputs(chunks, size)
    pipe = LipSyncPipeline(model, vae, dec, spec=STREAM_WINDOW)
    result = {"chunks": chunks, "frames": len(frames)}
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        start = torch.cuda.memory_allocated(dev)
    reset = reset_peak_rss()
    before = rss_mb()
    for _ in pipe.stream(frames, audio, mask, seed=0):
        pass
    peak = peak_rss_mb()
    result |= {"peak_rss_mb": rounded(peak), "peak_reset": reset,
               "peak_rss_rise_mb": rounded(None if peak is None or before is None else peak - before)}
    if dev.type == "cuda":
        result |= {"peak_cuda_mb": round(torch.cuda.max_memory_allocated(dev) / 2**20, 1),
                   "peak_cuda_rise_mb": round((torch.cuda.max_memory_allocated(dev) - start) / 2**20, 1)}
    return result


# glibc otherwise keeps freed large blocks (its mmap threshold adapts upwards), so the resident set
# would depend on the order of allocations rather than on the live memory; fixed thresholds make
# every large buffer an mmap returned on free.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def memory_in_fresh_process(*args) -> dict:
    saved = {k: os.environ.get(k) for k in MALLOC_ENV}
    os.environ.update(MALLOC_ENV)
    try:
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            return pool.apply(memory_probe, args)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v


# ------------------------------------------------------------------------------------------ bench


def machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    cpus = f"{multiprocessing.cpu_count()} CPU cores ({cpu})"
    return f"{torch.cuda.get_device_name(device)}, {cpus}" if device.type == "cuda" else f"{cpus}, no GPU"


def bench(preset: str, device: str, decoder: str | None = None, size: int | None = None, chunks: int | None = None,
          teacher_steps: int = TEACHER_STEPS, memory: bool = True, threads: int | None = None,
          vae_dim: int | None = None, fast: bool = True) -> dict:
    """One bench run (see the module docstring); ``teacher_steps=0`` skips the teacher."""
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    defaults = CPU_DEFAULTS if dev.type == "cpu" else CUDA_DEFAULTS
    size, chunks = size or defaults["size"], chunks or defaults["chunks"]
    vae_dim, decoder = vae_dim or defaults["vae_dim"], decoder or defaults["decoder"]
    torch.backends.cudnn.benchmark = fast and dev.type == "cuda"
    with attention_backend("auto" if fast else "sdpa"):
        return _bench(preset, dev, decoder, size, chunks, teacher_steps, memory, threads, vae_dim, fast)


def _bench(preset, dev, decoder, size, chunks, teacher_steps, memory, threads, vae_dim, fast) -> dict:
    defaults = CPU_DEFAULTS if dev.type == "cpu" else CUDA_DEFAULTS
    model, vae, dec = bench_models(preset, dev, vae_dim, decoder)
    pipe = LipSyncPipeline(model, vae, dec, cuda_graphs=None if fast else False)
    warm = bench_inputs(3, size)  # every window phase (chunks 0, 1, 2+), both chunk lengths, the teacher's path
    run_student(pipe, *warm, device_composite=fast)
    if teacher_steps:
        run_teacher(model, vae, dec, *warm, steps=1)
    frames, audio, mask = bench_inputs(chunks, size)
    student = run_student(pipe, frames, audio, mask, device_composite=fast)
    teacher = run_teacher(model, vae, dec, frames, audio, mask, steps=teacher_steps) if teacher_steps else None
    steady = statistics.median(student["chunk_s"][1:]) if chunks > 1 else student["chunk_s"][0]
    result = {
        "preset": preset, "device": str(dev), "machine": machine(dev), "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "dtype": str(model.patch_embedding.weight.dtype).removeprefix("torch."),
        "clip": {"frames": student["frames"], "chunks": chunks, "size": size, "latent_hw": size // SPACE_FACTOR,
                 "decoder": decoder, "vae_dim": vae_dim, "weights": "random (seeded)"},
        "fast_paths": {"enabled": fast, "cuda_graphs": pipe.sampler.graphs is not None,
                       "cudnn_benchmark": torch.backends.cudnn.benchmark, "attention": "auto" if fast else "sdpa",
                       "composite": "device" if fast else "numpy"},
        "student_fps": round(student["fps"], 3), "ttff_s": round(student["ttff_s"], 3),
        "steady_chunk_s": round(steady, 3), "ttff_le_chunk": student["ttff_s"] <= steady,
        "chunk_s": [round(s, 3) for s in student["chunk_s"]],
        "stages_s": {"student": {k: round(v, 3) for k, v in student["stages_s"].items()}},
        "passes_per_chunk": {"student": pipe.sampler.passes_per_chunk},
        "flops_per_frame": flops_table(),
    }
    if teacher is not None:
        result |= {
            "teacher_fps": round(teacher["fps"], 4), "speedup": round(student["fps"] / teacher["fps"], 1),
            "denoise_speedup": round(teacher["stages_s"]["denoise"] / (student["stages_s"]["denoise"]
                                                                       + student["stages_s"]["cache_write"]), 1),
            "teacher_ttff_s": round(teacher["ttff_s"], 3),
            "teacher": {"steps": teacher_steps, "shift": TEACHER_SHIFT, "cfg": TEACHER_CFG}}
        result["stages_s"]["teacher"] = {k: round(v, 3) for k, v in teacher["stages_s"].items()}
        result["passes_per_chunk"]["teacher"] = f"{teacher['passes']} passes over the whole clip ({chunks} chunks)"
    if memory:
        probes = [memory_in_fresh_process(preset, str(dev), n, size, vae_dim, decoder, threads)
                  for n in defaults["memory_chunks"]]
        key = "peak_cuda_mb" if dev.type == "cuda" else "peak_rss_mb"
        result["peak_memory_mb"] = probes[0][key]
        result["memory"] = {"method": "CUDA max_memory_allocated" if dev.type == "cuda" else
                            "peak RSS (VmHWM) of a fresh process with fixed glibc malloc thresholds; rise = peak minus RSS before the run",
                            "windowed_student": probes,
                            "long_over_short": round(probes[-1][key] / probes[0][key], 3)}
    else:
        result["peak_memory_mb"] = rounded(peak_rss_mb())
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="tiny", help="DiT preset: tiny, 1.3b, 14b (random weights)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--out", required=True, type=Path, help="JSON file to write")
    parser.add_argument("--decoder", choices=("taehv", "wan"), help="streaming decoder (default: wan on CPU, taehv on CUDA)")
    parser.add_argument("--vae-dim", type=int, help="Wan VAE base width (default 4 on CPU, 96 = Wan2.1 on CUDA)")
    parser.add_argument("--size", type=int, help="frame size in pixels (default 128 on CPU, 512 on CUDA)")
    parser.add_argument("--chunks", type=int, help="clip length in chunks (default 4 on CPU, 7 on CUDA)")
    parser.add_argument("--teacher-steps", type=int, default=TEACHER_STEPS, help="teacher Euler steps (0: no teacher)")
    parser.add_argument("--no-fast", action="store_true",
                        help="switchable fast paths off (CUDA graphs, cuDNN autotuning, fused attention, device composite)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--no-memory", action="store_true", help="skip the fresh-process memory probes")
    from . import e2e_bench

    e2e_bench.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.e2e:
        from . import e2e_bench

        return e2e_bench.run(args)
    result = bench(args.preset, args.device, args.decoder, args.size, args.chunks, args.teacher_steps,
                   memory=not args.no_memory, threads=args.threads, vae_dim=args.vae_dim, fast=not args.no_fast)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    keys = ("student_fps", "teacher_fps", "speedup", "ttff_s", "peak_memory_mb")
    print(json.dumps({k: result[k] for k in keys if k in result}))
    return 0
