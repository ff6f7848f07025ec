"""A/B of the streaming student's chunk loop: this checkout against another one, in one process.

    python .ci/ab_stream.py --base /path/to/other/checkout [--device cpu|cuda] [--preset tiny] [--latent 16]

Both packages are imported side by side (the other one under another name), given the same seeded
random weights, inputs and noise, and run the same loop (``CausalSampler.start``, then per chunk
``denoise`` and ``commit``, no VAE) alternately for ``--rounds`` rounds after one warm-up clip
each. It prints JSON: median seconds per clip of each, their ratio, and the largest difference
between the two outputs (a cross-check that the faster loop computes the same thing). On CUDA
the device is synchronised at the end of each clip (a benchmark may wait; the pipeline does not).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def load_package(root: Path, name: str):
    """Import ``root/lipforcing_core`` as the top-level package ``name``."""
    init = root / "lipforcing_core" / "__init__.py"
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def loop(pkg: str, sampler, inputs: dict, device) -> tuple[float, torch.Tensor]:
    """One clip through ``sampler`` (kept across clips: its CUDA graphs, if any, are captured once)."""
    causal = importlib.import_module(f"{pkg}.sampling.causal")
    chunk, frames = sampler.chunk_size, inputs["noise"].shape[2]
    noise = causal.ReplayNoise(inputs["noise"], inputs["eps"])
    began = time.perf_counter()
    with torch.no_grad():
        state = sampler.start(inputs["text"], inputs["audio"], tuple(inputs["noise"].shape[-2:]), frames)
        outs = []
        for c0 in range(0, frames, chunk):
            y = inputs["y"][:, :, c0:c0 + chunk]
            x0 = sampler.denoise(state, inputs["noise"][:, :, c0:c0 + chunk], y, noise, c0)
            sampler.commit(state, x0, y, c0)
            outs.append(x0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - began, torch.cat(outs, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, type=Path, help="the other checkout (the 'before')")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default=None, help="default: fp32 on CPU, bf16 on CUDA")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--latent", type=int, default=16, help="latent height = width (frame size / 8)")
    parser.add_argument("--chunks", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--text-rows", type=int, default=1, help="1: the pipeline's zero text; e.g. 512: a UMT5 text")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype or ("fp32" if device.type == "cpu" else "bf16")]
    packages = {"base": load_package(args.base, "lf_base"), "this": load_package(REPO, "lf_this")}
    bench = importlib.import_module("lf_this.bench")
    reference = bench.random_dit(args.preset, device, dtype)
    models = {"this": reference}
    with torch.device("meta"):
        models["base"] = importlib.import_module("lf_base.models.dit").LipForcingDiT(reference.config)
    models["base"] = models["base"].to_empty(device=device).to(dtype).eval().requires_grad_(False)
    models["base"].load_state_dict(reference.state_dict(), strict=True)
    g = torch.Generator(device).manual_seed(0)
    frames, hw = 3 * args.chunks, (args.latent, args.latent)
    inputs = {"noise": torch.randn(1, 16, frames, *hw, generator=g, device=device, dtype=dtype),
              "y": torch.randn(1, 49, frames, *hw, generator=g, device=device, dtype=dtype),
              "audio": torch.randn(1, 4 * frames - 3, reference.config.audio_dim, generator=g, device=device,
                                   dtype=dtype),
              "text": torch.zeros(1, args.text_rows, reference.config.text_dim, device=device, dtype=dtype)}
    inputs["eps"] = [torch.randn(1, 16, 3, *hw, generator=g, device=device, dtype=dtype) for _ in range(args.chunks)]
    samplers = {name: importlib.import_module(f"lf_{name}.sampling.causal").CausalSampler(models[name])
                for name in models}
    times: dict[str, list[float]] = {"base": [], "this": []}
    outs = {}
    for name in times:  # warm-up clip each (first-use costs, CUDA graph capture)
        loop(f"lf_{name}", samplers[name], inputs, device)
    for _ in range(args.rounds):
        for name in times:
            seconds, outs[name] = loop(f"lf_{name}", samplers[name], inputs, device)
            times[name].append(seconds)
    base, this = statistics.median(times["base"]), statistics.median(times["this"])
    print(json.dumps({
        "device": str(device), "dtype": str(dtype).removeprefix("torch."), "preset": args.preset,
        "latent_hw": list(hw), "chunks": args.chunks, "text_rows": args.text_rows, "threads": torch.get_num_threads(),
        "base": str(args.base), "base_s_per_clip": round(base, 4), "this_s_per_clip": round(this, 4),
        "speedup": round(base / this, 2), "rounds": {k: [round(s, 4) for s in v] for k, v in times.items()},
        "max_abs_diff": float((outs["base"].float() - outs["this"].float()).abs().max()),
        "packages": {k: str(Path(v.__file__).parent) for k, v in packages.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
