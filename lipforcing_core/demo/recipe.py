"""The demo model's recipe: architectures, shipped weight files, loaders, and the training command.

``python -m lipforcing_core train-demo --stage vae|syncnet`` retrains one piece from scratch on CPU
and writes it (by default over the shipped file in ``lipforcing_core/demo/weights/``). Weight files
are safetensors; the architecture config and the measured metrics travel in the file's metadata,
so a loader needs nothing but the file.

Demo VAE: the Wan2.1 VAE graph with the same parameter names, ``dim = 12`` and one residual block
per level instead of two, ``z_dim = 16`` (the DiT's latent layout is unchanged), x8 space and x4
time compression: 64x64 frames -> 8x8 latents. Its latent mean/std are its own (measured after
training) and live in its config, so ``encode``/``decode`` normalise like the real one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ..checkpoints import CheckpointError, materialize, read_state_dict, stored_config
from ..checkpoints import read_metadata as checkpoint_metadata
from ..vae.wan_vae import WanVAE, WanVAEConfig, load_wan_vae
from .sync_model import SmallSyncNet, SmallSyncNetConfig

WEIGHTS_DIR = Path(__file__).parent / "weights"  # one subfolder per ComfyUI model folder
VAE_FILE = WEIGHTS_DIR / "vae" / "demo_vae.safetensors"
SYNCNET_FILE = WEIGHTS_DIR / "syncnet" / "demo_syncnet.safetensors"
TEACHER_FILE = WEIGHTS_DIR / "diffusion_models" / "demo_teacher.safetensors"
STUDENT_FILE = WEIGHTS_DIR / "diffusion_models" / "demo_student.safetensors"
DEMO_SIZE = 64  # side of the demo's aligned face frames
DEMO_VAE = WanVAEConfig(dim=12, num_res_blocks=1)  # latent stats filled in after training


def save_weights(model: nn.Module, path: str | Path, **metadata: object) -> None:
    """Write ``model``'s float32 state dict as safetensors with its ``config`` and ``metadata`` as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"config": json.dumps(dataclasses.asdict(model.config))}
    meta |= {k: json.dumps(v) for k, v in metadata.items()}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=meta)


def read_metadata(path: str | Path) -> dict[str, object]:
    """The JSON metadata entries of a demo weight file (``config``, ``metrics``, ...)."""
    meta = checkpoint_metadata(path)
    if "config" not in meta:
        raise CheckpointError(f"{path}: no 'config' in the safetensors metadata; not a demo weight file "
                              "written by lipforcing_core.demo.recipe.save_weights")
    return meta


def load_demo_vae(path: str | Path = VAE_FILE) -> WanVAE:
    """The demo-domain Wan VAE (float32, eval, no grad) with its own latent normalisation."""
    read_metadata(path)  # refuses files that are not demo weights
    return load_wan_vae(path)


def load_demo_syncnet(path: str | Path = SYNCNET_FILE) -> SmallSyncNet:
    """The demo-domain SyncNet (float32, eval, no grad); score it with ``lipforcing_core.syncnet``."""
    config = stored_config(path, SmallSyncNetConfig)
    if config is None:
        read_metadata(path)  # raises the "not a demo weight file" error
    return materialize(lambda: SmallSyncNet(config), read_state_dict(path), what=f"SmallSyncNet({config})",
                       dtype=torch.float32)


# ------------------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stage", choices=("vae", "syncnet"), required=True, help="which demo model to train")
    parser.add_argument("--out", type=Path, default=None, help="weight file to write (default: the shipped one)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the shipped recipe's)")
    parser.add_argument("--clips", type=int, default=None, help="training clips to render")
    parser.add_argument("--eval-clips", type=int, default=16, help="held-out clips to measure")
    parser.add_argument("--init", type=Path, default=None, help="continue training from this demo VAE file")
    parser.add_argument("--frames", type=int, default=None, help="VAE training window, 1 + 4k frames")
    parser.add_argument("--crop", type=int, default=None, help="VAE crop side of the first phase (64: none)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy 2-core machine)")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop training after this long")


def _overrides(args: argparse.Namespace) -> dict:
    out = {"steps": args.steps, "clips": args.clips, "max_minutes": args.max_minutes, "lr": args.lr}
    return {k: v for k, v in out.items() if v is not None}


def train_demo_vae(args: argparse.Namespace) -> dict:
    """Train, measure and save the demo VAE; returns the metrics written to the file."""
    from .dataset import ClipBank
    from .vae_train import VAETrainConfig, evaluate_vae, latent_statistics, train_vae

    extra = {k: v for k, v in {"frames": args.frames, "crop": args.crop}.items() if v is not None}
    cfg = dataclasses.replace(VAETrainConfig(), **_overrides(args), **extra)
    init = load_demo_vae(args.init) if args.init else None
    start = time.monotonic()
    model, losses = train_vae(DEMO_VAE, cfg, lambda s: print(s, flush=True), init=init)
    minutes = (time.monotonic() - start) / 60
    stats_bank = ClipBank.render(min(cfg.clips, 32), "train", cfg.duration_s, cfg.size, cfg.seed)
    mean, std = latent_statistics(model, stats_bank)
    model.config = dataclasses.replace(model.config, latent_mean=mean, latent_std=std)
    metrics = evaluate_vae(model, ClipBank.render(args.eval_clips, "heldout", cfg.duration_s, cfg.size))
    metrics |= {"steps": len(losses), "final_loss": losses[-1], "train_minutes": round(minutes, 1)}
    train = dataclasses.asdict(cfg) | {"init": str(args.init) if args.init else None}
    save_weights(model, args.out or VAE_FILE, train=train, metrics=metrics)
    return metrics


def train_demo_syncnet(args: argparse.Namespace) -> dict:
    """Train, measure and save the demo SyncNet; returns the metrics written to the file."""
    from .dataset import ClipBank
    from .syncnet_train import SyncTrainConfig, evaluate_syncnet, train_syncnet

    cfg = dataclasses.replace(SyncTrainConfig(), **_overrides(args))
    start = time.monotonic()
    model, losses = train_syncnet(SmallSyncNetConfig(), cfg, lambda s: print(s, flush=True))
    minutes = (time.monotonic() - start) / 60
    metrics = evaluate_syncnet(model, ClipBank.render(args.eval_clips, "heldout", cfg.eval_duration_s, DEMO_SIZE))
    metrics |= {"steps": len(losses), "final_loss": losses[-1], "train_minutes": round(minutes, 1)}
    save_weights(model, args.out or SYNCNET_FILE, train=dataclasses.asdict(cfg), metrics=metrics)
    return metrics


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    metrics = (train_demo_vae if args.stage == "vae" else train_demo_syncnet)(args)
    print(json.dumps(metrics, indent=2))
    return 0
