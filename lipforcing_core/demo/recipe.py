"""The demo models' files: architectures, shipped weight files, loaders, and the VAE / SyncNet training steps.

``python -m lipforcing_core train-demo`` (:mod:`lipforcing_core.demo.train`) retrains every piece from
scratch on CPU and writes it (by default over the shipped files in ``lipforcing_core/demo/weights/``,
one subfolder per ComfyUI model folder). Weight files
are safetensors; the architecture config and the measured metrics travel in the file's metadata,
so a loader needs nothing but the file.

Demo VAE: the Wan2.1 VAE graph with the same parameter names, ``dim = 12`` and one residual block
per level instead of two, ``z_dim = 16`` (the DiT's latent layout is unchanged), x8 space and x4
time compression: 64x64 frames -> 8x8 latents. Its latent mean/std are its own (measured after
training) and live in its config, so ``encode``/``decode`` normalise like the real one.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..atomic import atomic_output
from ..checkpoints import CheckpointError, materialize, read_state_dict, stored_config
from ..checkpoints import read_metadata as checkpoint_metadata
from ..registry import register_loader
from ..vae.wan_vae import WanVAE, WanVAEConfig, load_wan_vae
from .constants import DEMO_SIZE, SYNCNET_FILE, VAE_FILE
from .sync_model import SmallSyncNet, SmallSyncNetConfig
from .syncnet_train import SyncTrainConfig
from .vae_train import VAETrainConfig

DEMO_VAE = WanVAEConfig(dim=12, num_res_blocks=1)  # latent stats filled in after training


def save_weights(model: nn.Module, path: str | Path, **metadata: object) -> None:
    """Write ``model``'s float32 state dict as safetensors with its ``config`` and ``metadata`` as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"config": json.dumps(dataclasses.asdict(model.config))}
    meta |= {k: json.dumps(v) for k, v in metadata.items()}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=meta)


def add_metadata(path: str | Path, **entries: object) -> None:
    """Rewrite the safetensors file ``path`` with ``entries`` (as JSON) added to its metadata, atomically."""
    path = Path(path)
    with safe_open(str(path), framework="pt") as f:  # raw strings: the other entries are copied byte for byte
        meta = (f.metadata() or {}) | {k: json.dumps(v) for k, v in entries.items()}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    with atomic_output(path, overwrite=True) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


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


register_loader("syncnet", SmallSyncNetConfig, load_demo_syncnet)  # so load_syncnet opens the demo's file


# ------------------------------------------------------------------------------------------ training


def train_demo_vae(cfg: VAETrainConfig, out: str | Path = VAE_FILE, *, init: str | Path | None = None,
                   eval_clips: int = 12) -> dict:
    """Train (fresh, or continuing the demo VAE file ``init``), measure and save the demo VAE; returns its metrics."""
    from .dataset import ClipBank
    from .vae_train import evaluate_vae, latent_statistics, train_vae

    start = time.monotonic()
    model, losses = train_vae(DEMO_VAE, cfg, lambda s: print(s, flush=True),
                              init=load_demo_vae(init) if init else None)
    minutes = (time.monotonic() - start) / 60
    stats_bank = ClipBank.render(min(cfg.clips, 32), "train", cfg.duration_s, cfg.size, cfg.seed)
    mean, std = latent_statistics(model, stats_bank)
    model.config = dataclasses.replace(model.config, latent_mean=mean, latent_std=std)
    metrics = evaluate_vae(model, ClipBank.render(eval_clips, "heldout", cfg.duration_s, cfg.size))
    metrics |= {"steps": len(losses), "final_loss": losses[-1], "train_minutes": round(minutes, 1)}
    history = (read_metadata(init).get("train_history", []) if init else []) + [dataclasses.asdict(cfg) | {
        "steps_done": len(losses), "minutes": round(minutes, 1)}]
    save_weights(model, out, train=dataclasses.asdict(cfg), train_history=history, metrics=metrics)
    return metrics


def train_demo_syncnet(cfg: SyncTrainConfig, out: str | Path = SYNCNET_FILE, *, eval_clips: int = 24,
                       vae: str | Path | None = None) -> dict:
    """Train, measure and save the demo SyncNet (also on the demo VAE file ``vae``'s reconstructions,
    if given); returns its metrics, on held-out renderings and, with ``vae``, on their reconstructions."""
    from .dataset import ClipBank
    from .syncnet_train import evaluate_syncnet, train_syncnet, vae_view

    start = time.monotonic()
    autoencoder = load_demo_vae(vae) if vae else None
    model, losses = train_syncnet(SmallSyncNetConfig(), cfg, lambda s: print(s, flush=True), vae=autoencoder)
    minutes = (time.monotonic() - start) / 60
    heldout = ClipBank.render(eval_clips, "heldout", cfg.eval_duration_s, DEMO_SIZE)
    metrics = evaluate_syncnet(model, heldout)
    if autoencoder is not None:
        metrics["vae_view"] = evaluate_syncnet(model, vae_view(autoencoder, heldout))
    metrics |= {"steps": len(losses), "final_loss": losses[-1], "train_minutes": round(minutes, 1)}
    save_weights(model, out, train=dataclasses.asdict(cfg), metrics=metrics)
    return metrics
