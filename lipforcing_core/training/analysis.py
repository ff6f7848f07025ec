"""Teacher trajectory analysis: where along the teacher's ODE does CFG help sync, and where does it hurt fidelity?

The evidence behind the Sync-Window (docs/design.md §4, §8): the teacher samples a clip with its CFG Euler
ODE (shifted times, scale 4.5); at every step the conditional (no-CFG) and the guided x0
predictions of the same ``x_t`` are compared with the clip's ground-truth latents:

* fidelity: MSE to the reference latents outside the mouth (``mse_out_*``) and inside (``mse_in_*``);
* sync proxy: mean |x0_cfg - x0_nocfg| in the mouth region (how much guidance moves the lips), or,
  given SyncNet + TAEHV weights, the sync-C reward of each decoded prediction.

Writes ``trajectory.json``, ``trajectory.csv`` and ``trajectory.png`` (PIL line chart with the
sync band shaded). ``python -m lipforcing_core analyze --teacher T.safetensors --clip C.safetensors``.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Callable

import torch
from PIL import Image, ImageDraw, ImageFont

from ..errors import InputError
from ..sampling.schedule import teacher_timesteps, x0_from_flow
from .config import SYNC_BAND
from .data import Clip, check_clip, conditioning

Scorer = Callable[[torch.Tensor, Clip], torch.Tensor]


def _masked_mse(a: torch.Tensor, b: torch.Tensor, region: torch.Tensor) -> float:
    """MSE over the latent positions where ``region`` ``[B,1,1,H,W]`` is 1."""
    weight = region.expand_as(a)
    return float(((a - b) ** 2 * weight).sum() / weight.sum().clamp_min(1))


@torch.no_grad()
def teacher_trajectory(teacher, clip: Clip, *, steps: int = 50, shift: float = 5.0, guidance: float = 4.5,
                       seed: int = 0, scorer: Scorer | None = None) -> list[dict[str, float]]:
    """Run the teacher's CFG Euler ODE on one clip and measure both x0 predictions at every step."""
    batch = {k: v[None].to(next(teacher.parameters()).device) for k, v in check_clip(clip).items()}
    ref, y = batch["latents"].float(), conditioning(batch)
    mouth = (1 - batch["mask"])[:, None, None].float()  # 1 = generated (mouth) region
    times = teacher_timesteps(steps, shift).tolist()
    x = torch.randn(ref.shape, generator=torch.Generator().manual_seed(seed)).to(ref)
    rows = []
    for j, (t, t_next) in enumerate(zip(times[:-1], times[1:])):
        v_c = teacher(x, t, y, batch["text"], batch["audio"]).float()
        v_n = teacher(x, t, y, batch["neg_text"], torch.zeros_like(batch["audio"])).float()
        v_g = v_c + (guidance - 1) * (v_c - v_n)
        x0_c, x0_g = x0_from_flow(x, v_c, t), x0_from_flow(x, v_g, t)
        row = {"step": j, "t": t, "in_sync_band": float(SYNC_BAND[0] <= t <= SYNC_BAND[1]),
               "mse_out_nocfg": _masked_mse(x0_c, ref, 1 - mouth), "mse_out_cfg": _masked_mse(x0_g, ref, 1 - mouth),
               "mse_in_nocfg": _masked_mse(x0_c, ref, mouth), "mse_in_cfg": _masked_mse(x0_g, ref, mouth),
               "mouth_cfg_shift": float(((x0_g - x0_c).abs() * mouth.expand_as(x0_c)).sum()
                                        / mouth.expand_as(x0_c).sum().clamp_min(1))}
        if scorer is not None:
            row["sync_nocfg"], row["sync_cfg"] = (float(scorer(p, batch)[0]) for p in (x0_c, x0_g))
        rows.append(row)
        x = x + (t_next - t) * v_g  # Euler step of the guided ODE
    return rows


PALETTE = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207)]
INK, BAND = (30, 30, 30), (236, 242, 250)


def _panel(draw: ImageDraw.ImageDraw, rows: list[dict[str, float]], keys: list[str], box: tuple[int, int, int, int],
           title: str, font: ImageFont.ImageFont) -> None:
    """One chart in ``box`` (left, top, right, bottom): ``keys`` by step on a shared y scale."""
    left, top, right, bottom = box
    n = len(rows)
    lo = min(min(r[k] for r in rows) for k in keys)
    hi = max(max(r[k] for r in rows) for k in keys)
    hi = hi if hi > lo else lo + 1e-6
    px = lambda i: left + i / max(n - 1, 1) * (right - left)  # noqa: E731
    py = lambda v: bottom - (v - lo) / (hi - lo) * (bottom - top)  # noqa: E731
    band = [r["step"] for r in rows if r["in_sync_band"]]
    if band:
        draw.rectangle([px(band[0]), top, px(band[-1]), bottom], fill=BAND)
    draw.rectangle([left, top, right, bottom], outline=INK)
    draw.text((left, top - 16), title, fill=INK, font=font)
    for v in (lo, hi):
        draw.text((left - 52, py(v) - 6), f"{v:.3g}", fill=INK, font=font)
    for i in range(0, n, max(1, n // 10)):
        draw.text((px(i) - 6, bottom + 4), str(i), fill=INK, font=font)
    for k, (key, colour) in enumerate(zip(keys, PALETTE)):
        draw.line([(px(i), py(r[key])) for i, r in enumerate(rows)], fill=colour, width=2)
        draw.text((right + 12, top + 16 * k), key, fill=colour, font=font)


def plot_trajectory(rows: list[dict[str, float]]) -> Image.Image:
    """Two panels by teacher step: fidelity (MSE to the reference) and the sync proxy; sync window shaded."""
    width, height = 900, 620
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    draw.text((60, 12), "Teacher ODE: CFG vs no-CFG x0 predictions (shaded: sync window)", fill=INK, font=font)
    fidelity = [k for k in rows[0] if k.startswith("mse_")]
    sync = [k for k in rows[0] if k.startswith(("mouth_", "sync_"))]
    _panel(draw, rows, fidelity, (70, 60, width - 200, 300), "fidelity: MSE to reference latents", font)
    _panel(draw, rows, sync, (70, 360, width - 200, height - 50), "sync proxy (mouth change by CFG / sync-C)", font)
    draw.text((width // 2 - 80, height - 24), "teacher step", fill=INK, font=font)
    return img


def write_report(rows: list[dict[str, float]], out_dir: str | Path) -> tuple[Path, Path, Path]:
    """``trajectory.json``, ``.csv`` and ``.png`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "trajectory.json", out / "trajectory.csv", out / "trajectory.png"
    paths[0].write_text(json.dumps(rows, indent=1))
    with paths[1].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_trajectory(rows).save(paths[2])
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", required=True, help="teacher checkpoint (any layout load_dit reads)")
    parser.add_argument("--clip", required=True, help="prepared clip (.safetensors, see training.data)")
    parser.add_argument("--out", default="runs/analysis", help="output folder for the table and plot")
    parser.add_argument("--preset", help="DiT preset (detected from the checkpoint when omitted)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--shift", type=float, default=5.0)
    parser.add_argument("--guidance", type=float, default=4.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--syncnet", help="SyncNet v2 weights: add the sync-C reward per step (needs --taehv and "
                                          "the clip's 'waveform')")
    parser.add_argument("--taehv", help="TAEHV weights to decode predictions for the SyncNet reward")
    parser.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> int:
    from safetensors.torch import load_file

    from ..checkpoints import load_dit

    teacher = load_dit(args.teacher, preset=args.preset, device=args.device)
    scorer = None
    if args.syncnet:
        if not args.taehv:
            raise InputError("--syncnet needs --taehv to decode the latents into frames")
        from ..syncnet.model import load_syncnet
        from ..vae.taehv import load_taehv
        from .dmd import SyncNetReward

        scorer = SyncNetReward(load_syncnet(args.syncnet, args.device), load_taehv(args.taehv, device=args.device))
    rows = teacher_trajectory(teacher, load_file(args.clip), steps=args.steps, shift=args.shift,
                              guidance=args.guidance, seed=args.seed, scorer=scorer)
    for path in write_report(rows, args.out):
        print(path)
    return 0
