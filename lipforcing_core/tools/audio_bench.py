"""Peak memory and deviation of chunked vs one-shot wav2vec2 encoding, written as JSON.

Each mode runs in a fresh process so its peak memory is its own (CPU: peak RSS above the RSS
before encoding; CUDA: ``max_memory_allocated``). Without real weights, a base-960h-sized
model with seeded random weights stands in (the memory does not depend on the values).

    python -m lipforcing_core.tools.audio_bench --audio clip.wav --seconds 60 --out audio_bench.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from lipforcing_core.audio.features import DEFAULT_CHUNK, encode_audio
from lipforcing_core.audio.io import SAMPLE_RATE, load_audio, prepare_waveform
from lipforcing_core.audio.wav2vec2 import PRESETS, AudioEncoder, build_model, load_wav2vec2
from lipforcing_core.tools.memory import peak_rss_mb, rounded, rss_mb


def _encoder(weights: str | None, device: str) -> AudioEncoder:
    """The real encoder, or a base-960h-sized one with seeded random weights (memory does not depend on them)."""
    if weights:
        return load_wav2vec2(weights, device=device)
    torch.manual_seed(0)
    config = PRESETS["base-960h"]
    return AudioEncoder(build_model(config).requires_grad_(False), config).eval().to(device)


def _run_mode(weights: str | None, device: str, wave: torch.Tensor, chunk: int | None) -> dict:
    encoder = _encoder(weights, device)
    start_rss = rss_mb()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        start_cuda = torch.cuda.memory_allocated()
    began = time.perf_counter()
    features = encode_audio(encoder, wave, SAMPLE_RATE, chunk=chunk)
    seconds = time.perf_counter() - began
    result = {
        "chunk": chunk,
        "seconds": round(seconds, 3),
        "peak_rss_mb": rounded(peak_rss_mb()),
        "encode_peak_rss_above_start_mb": rounded(None if start_rss is None else peak_rss_mb() - start_rss),
        "output_mb": round(features.numel() * features.element_size() / 2**20, 1),
    }
    if device.startswith("cuda"):
        result["encode_peak_cuda_mb"] = round((torch.cuda.max_memory_allocated() - start_cuda) / 2**20, 1)
    return result | {"features": features.cpu()}


def bench_audio(
    out: str | Path,
    audio: str | Path,
    seconds: float = 60.0,
    weights: str | None = None,
    device: str = "cpu",
    chunk: int = DEFAULT_CHUNK,
    isolate: bool = True,
) -> dict:
    """Encode ``audio`` (looped to ``seconds``) one-shot and chunked; write and return the JSON report.

    ``isolate=False`` runs both modes in this process: quicker, CUDA peaks stay exact, but CPU
    RSS peaks then include whatever ran before.
    """
    wave, rate = load_audio(audio)
    mono = prepare_waveform(wave, rate)[0]
    wave = mono.repeat(int(seconds * SAMPLE_RATE) // mono.shape[-1] + 1)[: int(seconds * SAMPLE_RATE)]
    runs = {}
    for name, mode_chunk in (("one_shot", None), ("chunked", chunk)):
        if not isolate:
            runs[name] = _run_mode(weights, device, wave, mode_chunk)
            continue
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            runs[name] = pool.submit(_run_mode, weights, device, wave, mode_chunk).result()
    full, chunked = runs["one_shot"].pop("features"), runs["chunked"].pop("features")
    report = {
        "audio": str(audio),
        "audio_seconds": seconds,
        "isolated_processes": isolate,
        "model": weights or "random base-960h-sized wav2vec2 (seed 0)",
        "device": device,
        "frames": full.shape[0],
        "max_abs_deviation_chunked_vs_one_shot": (chunked - full).abs().max().item(),
        "max_abs_feature": full.abs().max().item(),
        **runs,
    }
    Path(out).write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", required=True, help="audio or video file to encode (looped to --seconds)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--weights", default=None, help="wav2vec2 folder/file (default: random base-sized model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="video frames per CNN chunk")
    parser.add_argument("--out", default="audio_bench.json")
    args = parser.parse_args(argv)
    print(json.dumps(bench_audio(args.out, args.audio, args.seconds, args.weights, args.device, args.chunk), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
