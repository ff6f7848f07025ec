"""``python -m lipforcing_core train-demo``: every bundled demo model from scratch on CPU, in order.

Stages (``--only`` picks some; each later stage reads the earlier stages' files from ``--weights-dir``):

1. ``vae``: the demo Wan VAE, through the phases of :data:`VAE_PHASES` (short windows and crops
   first, then whole frames with the mouth weighted, then clip-length windows so the causal
   caches are trained past their transient);
2. ``syncnet``: the demo SyncNet (InfoNCE over lip/audio windows, of renderings and of their
   reconstructions by the demo VAE);
3. ``prepare``: render and VAE-encode the dubbing clips the DiT trains on;
4. ``teacher``, ``df``, ``dmd``: the bidirectional teacher, stage 1 (diffusion forcing) and stage 2
   (Sync-Window DMD with the SyncNet reward) with the project's trainers;
5. ``eval``: the acceptance measurements on held-out pairs (``eval.json`` in ``--run-dir``).

Every training phase has a wall-clock budget as well as a step count, so the whole recipe stays
within about three hours on the 2-core development CPU. ``--quick`` shrinks every stage to a few
steps (the test suite runs it); its weights are not fit for use.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from ..training.data import ClipFolder, InMemoryClips
from .dit_recipe import PrepareConfig, prepare, ship, stage_configs, train_stage
from .constants import STUDENT_FILE, SYNCNET_FILE, TEACHER_FILE, VAE_FILE, WEIGHTS_DIR
from .recipe import (
    add_metadata,
    load_demo_syncnet,
    load_demo_vae,
    train_demo_syncnet,
    train_demo_vae,
)
from .syncnet_train import SyncTrainConfig
from .vae_train import VAETrainConfig

STAGES = ("vae", "syncnet", "prepare", "teacher", "df", "dmd", "eval")

# The demo VAE's schedule: each phase continues the previous one. A plain (deterministic) autoencoder:
# many cheap steps on 32x32 crops of short windows first, then whole frames on windows as long as the
# clips the pipeline streams, so the causal caches are trained past their transient.
VAE_PHASES: tuple[VAETrainConfig, ...] = (
    VAETrainConfig(steps=20000, batch=8, frames=5, crop=32, full_frame_from=0.85, lr=2e-3, sample_posterior=False,
                   max_minutes=38, clips=192),
    VAETrainConfig(steps=5000, batch=3, frames=17, crop=64, mouth_weight=3, lr=1e-3, sample_posterior=False,
                   max_minutes=10, clips=128),
    VAETrainConfig(steps=5000, batch=2, frames=33, crop=64, mouth_weight=3, lr=5e-4, sample_posterior=False,
                   max_minutes=13, clips=96),
    VAETrainConfig(steps=5000, batch=1, frames=97, crop=64, mouth_weight=3, lr=3e-4, sample_posterior=False,
                   max_minutes=16, clips=48, duration_s=4.0),
)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Settings of every stage; :func:`quick_recipe` is the shrunken one the tests run."""

    vae: tuple[VAETrainConfig, ...] = VAE_PHASES
    syncnet: SyncTrainConfig = SyncTrainConfig()
    prepare: PrepareConfig = PrepareConfig()
    steps: dict | None = None  # {"teacher": n, "df": n, "dmd": n} overrides of the DiT stage configs
    eval_clips: int = 16
    eval_seconds: float = 3.0
    speed_clip_s: float = 4.0
    vae_eval_clips: int = 12
    syncnet_eval_clips: int = 24


def quick_recipe() -> Recipe:
    """A few steps of everything, on a handful of clips (minutes become seconds)."""
    return Recipe(
        vae=(VAETrainConfig(steps=2, frames=5, crop=32, batch=1, clips=2, max_minutes=None),
             VAETrainConfig(steps=1, frames=9, crop=64, batch=1, mouth_weight=10, clips=2, max_minutes=None)),
        syncnet=SyncTrainConfig(steps=2, batch=2, clips=2, max_minutes=None),
        prepare=PrepareConfig(clips=2, latent_frames=6),
        steps={"teacher": 1, "df": 1, "dmd": 1},
        eval_clips=1, eval_seconds=1.4, vae_eval_clips=1, syncnet_eval_clips=1, speed_clip_s=1.4,
    )


def _target(weights_dir: Path, shipped: Path) -> Path:
    return weights_dir / shipped.relative_to(WEIGHTS_DIR)


def run_recipe(recipe: Recipe, stages: tuple[str, ...], run_dir: Path, weights_dir: Path, log=print) -> dict:
    """Run ``stages`` of ``recipe`` in order; returns {stage: minutes or metrics} (also in run_dir/recipe.json)."""
    files = {name: _target(weights_dir, path) for name, path in
             {"vae": VAE_FILE, "syncnet": SYNCNET_FILE, "teacher": TEACHER_FILE, "student": STUDENT_FILE}.items()}
    run_dir.mkdir(parents=True, exist_ok=True)
    done: dict = {}
    data = run_dir / "data"
    for stage in (s for s in STAGES if s in stages):
        began = time.monotonic()
        if stage == "vae":
            init = None
            for i, phase in enumerate(recipe.vae):
                log(f"vae phase {i + 1}/{len(recipe.vae)}: {phase}")
                done[f"vae_{i + 1}"] = train_demo_vae(phase, files["vae"], init=init, eval_clips=recipe.vae_eval_clips)
                init = files["vae"]
        elif stage == "syncnet":
            done["syncnet"] = train_demo_syncnet(recipe.syncnet, files["syncnet"], eval_clips=recipe.syncnet_eval_clips,
                                                 vae=files["vae"])
        elif stage == "prepare":
            prepare(load_demo_vae(files["vae"]), data, recipe.prepare, log=log)
        elif stage == "eval":
            from .evaluate import evaluate_demo, load_demo_models

            models = load_demo_models(files["student"], files["teacher"], files["vae"], files["syncnet"])
            done["eval"] = evaluate_demo(models, recipe.eval_clips, seconds=recipe.eval_seconds,
                                         speed_clip_s=recipe.speed_clip_s, log=log)
            (run_dir / "eval.json").write_text(json.dumps(done["eval"], indent=1))
            metrics = done["eval"]["summary"] | {"speed": done["eval"]["speed"]}
            for name in ("teacher", "student"):  # the model card's numbers travel with the weights
                add_metadata(files[name], metrics=metrics)
        else:
            done[stage] = _train_dit_stage(stage, recipe, data, run_dir, files)
        done[f"{stage}_minutes"] = round((time.monotonic() - began) / 60, 1)
        log(f"{stage}: {done[f'{stage}_minutes']} min")
        (run_dir / "recipe.json").write_text(json.dumps(done, indent=1, default=str))
    return done


def _train_dit_stage(stage: str, recipe: Recipe, data: Path, run_dir: Path, files: dict) -> dict:
    cfg = stage_configs(str(data), run_dir)[stage]
    if recipe.steps and stage in recipe.steps:
        cfg = dataclasses.replace(cfg, steps=recipe.steps[stage])
    vae = syncnet = None
    if stage == "dmd":
        vae, syncnet = load_demo_vae(files["vae"]), load_demo_syncnet(files["syncnet"])
    report = train_stage(stage, cfg, InMemoryClips(list(ClipFolder(data))), run_dir, vae=vae, syncnet=syncnet)
    card = {"steps": report["steps"], "final": report["history"][-1], "seconds": report["seconds"]}
    if stage in ("teacher", "dmd"):
        ship(report["export"], files["teacher" if stage == "teacher" else "student"], train=card)
    return card


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``train-demo``."""
    parser.add_argument("--only", action="append", choices=STAGES, help="run only these stages (repeatable)")
    parser.add_argument("--run-dir", type=Path, default=Path("runs/demo"), help="clips, checkpoints and reports")
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR,
                        help="where the weight files go (default: the bundled ones are replaced)")
    parser.add_argument("--quick", action="store_true", help="a few steps of every stage (a smoke test)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    recipe = quick_recipe() if args.quick else Recipe()
    done = run_recipe(recipe, tuple(args.only or STAGES), args.run_dir, args.weights_dir,
                      log=lambda s: print(s, flush=True))
    print(json.dumps({k: v for k, v in done.items() if k.endswith("_minutes")}, indent=1))
    return 0
