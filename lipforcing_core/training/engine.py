"""The machinery shared by the three trainers: networks, Adam, EMA, clipping, randomness, checkpoints.

Every random draw of a step comes from a generator seeded by ``(seed, step, stream)`` and is
made for the *global* batch before each rank takes its slice, so a run is reproducible, resumes
bit-identically and gives the same numbers on any number of ``torchrun`` processes.

Training checkpoint (one safetensors file): ``model.<net>.<key>`` (full weights),
``ema.<net>.<key>``, ``optim.<net>.<param>.<exp_avg|exp_avg_sq|step>``; metadata ``step``,
``config`` and each optimiser's ``param_groups`` as JSON.
"""

from __future__ import annotations

import json
import time
import zlib
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..atomic import atomic_output
from ..checkpoints import CheckpointError, load_dit
from ..config import get_preset
from ..models.dit import LipForcingDiT
from .config import TrainConfig
from .data import Clip, load_batch, rank_slice
from .distributed import (DistEnv, checkpoint_blocks, full_model_state, full_optimizer_state, full_tensor,
                          init_distributed, like_param, load_model_state, load_optimizer_state,
                          mean_over_ranks, shard)
from .lora import add_lora, lora_state, merge_lora


class EMA:
    """Exponential moving average of a network's trainable parameters (shards under FSDP)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.shadow = {n: p.detach().clone() for n, p in self.params.items()}

    @torch.no_grad()
    def update(self) -> None:
        for name, p in self.params.items():
            self.shadow[name].lerp_(p.detach(), 1 - self.decay)

    def full_state(self) -> dict[str, torch.Tensor]:
        return {n: full_tensor(t).detach().cpu() for n, t in self.shadow.items()}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        self.shadow = {n: like_param(state[n], p) for n, p in self.params.items()}


class Trainer:
    """Base trainer: subclasses build their networks in :meth:`build` and define :meth:`accumulate`."""

    kind = "base"
    config_class = TrainConfig

    def __init__(self, cfg: TrainConfig, dataset: torch.utils.data.Dataset, env: DistEnv | None = None):
        self.cfg, self.dataset = cfg, dataset
        self.env = env or init_distributed(cfg.device)
        self.device = self.env.device
        self.step = 0
        self._micro = (0, 1)  # (index, count) of the micro-batch being accumulated
        local = cfg.batch_size // self.env.world
        if cfg.batch_size % self.env.world or local % cfg.grad_accum:
            raise ValueError(f"batch_size {cfg.batch_size} must split evenly over {self.env.world} processes "
                             f"and then into grad_accum={cfg.grad_accum} micro-batches")
        self.nets: dict[str, nn.Module] = {}
        self.optims: dict[str, torch.optim.Optimizer] = {}
        self.emas: dict[str, EMA] = {}
        self.lora_alpha: dict[str, float] = {}
        self.build()
        if cfg.resume:
            self.load(cfg.resume)

    # ----------------------------------------------------------------------------- networks
    def initial_state(self, init: str, seed_stream: str, adapter: str = "") -> dict[str, torch.Tensor]:
        """Full weights for a new network: ``init`` (any layout ``load_dit`` reads; with ``adapter``
        the Wan2.1 base shards plus the OmniAvatar LoRA adapter) or a seeded random init.

        Under ``torchrun`` only rank 0 reads them; the others get ``{}`` and receive their shards
        by broadcast, so no rank ever holds a full copy on its accelerator.
        """
        if self.env.sharded and not self.env.is_main:
            return {}
        if init:
            return load_dit(init, preset=self.cfg.preset, dtype=torch.float32, lora=adapter or None).state_dict()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._seed(-1, seed_stream))
            return LipForcingDiT(get_preset(self.cfg.preset)).state_dict()

    def _network(self, name: str, init: str, adapter: str, seed_stream: str, lora_rank: int,
                 trainable: bool) -> LipForcingDiT:
        """Build on the meta device, add LoRA, checkpoint/shard, then materialise and load the weights."""
        cfg = self.cfg
        state = self.initial_state(init, seed_stream, adapter)
        with torch.device("meta"):
            model = LipForcingDiT(get_preset(cfg.preset))
        model.train(trainable).requires_grad_(trainable)
        if trainable and lora_rank:
            add_lora(model, lora_rank, cfg.lora_alpha, cfg.lora_full_modules)
            if state:
                state.update(lora_state(model, self.generator(name + ".lora")))
            self.lora_alpha[name] = cfg.lora_alpha
        if trainable and cfg.activation_checkpointing:
            checkpoint_blocks(model)
        shard(model, self.env, cfg.mixed_precision)
        model.to_empty(device=self.device)
        load_model_state(model, state, broadcast=self.env.sharded)
        self.nets[name] = model
        return model

    def add_trainable(self, name: str, *, init: str = "", adapter: str = "", seed_stream: str = "", lr: float,
                      lora_rank: int = 0, ema_decay: float = 0.0) -> LipForcingDiT:
        """A trained network: LoRA or full fine-tuning, activation checkpointing, FSDP, Adam, EMA."""
        model = self._network(name, init, adapter, seed_stream or name, lora_rank, trainable=True)
        params = [p for p in model.parameters() if p.requires_grad]
        self.optims[name] = torch.optim.Adam(params, lr=lr, betas=tuple(self.cfg.betas),
                                             weight_decay=self.cfg.weight_decay)
        if ema_decay:
            self.emas[name] = EMA(model, ema_decay)
        return model

    def add_frozen(self, name: str, *, init: str = "", adapter: str = "", seed_stream: str = "") -> LipForcingDiT:
        """A frozen network (the teacher): eval mode, no gradients, sharded like the others."""
        return self._network(name, init, adapter, seed_stream or name, 0, trainable=False)

    def build(self) -> None:
        raise NotImplementedError

    # ----------------------------------------------------------------------------- randomness
    def _seed(self, step: int, stream: str) -> int:
        return (self.cfg.seed * 1_000_003 + step + 1) * 2_654_435_761 % 2**61 ^ zlib.crc32(stream.encode())

    def generator(self, stream: str) -> torch.Generator:
        """A CPU generator for ``stream`` at the current step (identical on every rank)."""
        return torch.Generator().manual_seed(self._seed(self.step, stream))

    def _mine(self, full: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global-batch draw, then the current micro-batch's rows of those."""
        part = full[rank_slice(self.cfg.batch_size, self.env.rank, self.env.world)]
        return part[rank_slice(len(part), *self._micro)].to(self.device)

    def randn(self, stream: str, *shape: int) -> torch.Tensor:
        """Normal noise ``[B_micro, *shape]``: drawn for the global batch, this rank's micro-batch slice."""
        return self._mine(torch.randn(self.cfg.batch_size, *shape, generator=self.generator(stream)))

    def rand(self, stream: str, *shape: int) -> torch.Tensor:
        """Uniform ``[0, 1)`` float64 samples ``[B_micro, *shape]`` (global draw, local slice)."""
        return self._mine(torch.rand(self.cfg.batch_size, *shape, generator=self.generator(stream),
                                     dtype=torch.float64))

    def choice(self, stream: str, n: int) -> int:
        """One index in ``range(n)`` shared by all samples and ranks."""
        return int(torch.randint(n, (1,), generator=self.generator(stream)))

    # ----------------------------------------------------------------------------- loop
    def batch(self) -> Clip:
        return load_batch(self.dataset, self.step, self.cfg.batch_size, self.cfg.seed,
                          self.env.rank, self.env.world, self.device)

    def accumulate(self, batch: Clip) -> dict[str, torch.Tensor]:
        """Forward and :meth:`backward` of one micro-batch; returns its (unscaled) scalar losses."""
        raise NotImplementedError

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of a micro-batch mean, scaled so the accumulated gradient is the batch mean's."""
        (loss / self.cfg.grad_accum).backward()

    def updated(self) -> tuple[str, ...]:
        """Networks whose optimiser steps this iteration (default: every trained network)."""
        return tuple(self.optims)

    def update(self, name: str) -> None:
        """After ``loss.backward()``: clip ``name``'s gradients, Adam step, zero the gradients."""
        model, optim = self.nets[name], self.optims[name]
        params = [p for p in model.parameters() if p.requires_grad and p.grad is not None]
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        optim.step()
        optim.zero_grad(set_to_none=True)

    def run_step(self) -> dict[str, float]:
        """One global step: this rank's batch in ``grad_accum`` micro-batches, optimiser steps, EMA.

        Losses come back averaged over micro-batches and ranks, i.e. global-batch means.
        """
        local, count = self.batch(), self.cfg.grad_accum
        losses: dict[str, torch.Tensor] = {}
        for micro in range(count):
            self._micro = (micro, count)
            part = {k: v[rank_slice(len(v), micro, count)] for k, v in local.items()}
            for key, value in self.accumulate(part).items():
                losses[key] = losses.get(key, 0) + value.detach() / count
        self._micro = (0, 1)
        for name in self.updated():
            self.update(name)
        for ema in self.emas.values():  # every iteration, also when only the critic moved (official callback)
            ema.update()
        self.step += 1
        return {k: float(mean_over_ranks(v, self.env)) for k, v in losses.items()}

    def fit(self, steps: int | None = None, out_dir: str | Path | None = None, log=print) -> list[dict[str, float]]:
        """Train until ``steps`` (default ``cfg.steps``) or ``cfg.max_minutes`` of wall-clock time (all ranks
        stop together); save every ``save_every`` and at the end."""
        steps = self.cfg.steps if steps is None else steps
        out = Path(out_dir or self.cfg.out_dir)
        history, began = [], time.monotonic()
        while self.step < steps:
            logs = self.run_step()
            history.append(logs)
            last = self.step == steps or self._out_of_time(began)
            if self.env.is_main and log and (self.step % self.cfg.log_every == 0 or last):
                log(f"[{self.kind}] step {self.step}: " + " ".join(f"{k}={v:.5g}" for k, v in logs.items()))
            if self.step % self.cfg.save_every == 0 or last:
                self.save(out / f"checkpoint_{self.step:06d}.safetensors")
            if last:
                break
        return history

    def _out_of_time(self, began: float) -> bool:
        if self.cfg.max_minutes is None:
            return False
        late = torch.tensor(float(time.monotonic() - began >= 60 * self.cfg.max_minutes))
        return float(mean_over_ranks(late, self.env)) > 0

    # ----------------------------------------------------------------------------- checkpoints
    def save(self, path: str | Path) -> Path:
        """Write the training checkpoint (collective under FSDP; rank 0 writes)."""
        tensors: dict[str, torch.Tensor] = {}
        meta: dict[str, str] = {"step": str(self.step), "kind": self.kind, "config": json.dumps(self.cfg.to_dict())}
        for name, model in self.nets.items():
            if name not in self.optims:
                continue
            tensors.update({f"model.{name}.{k}": v for k, v in full_model_state(model).items()})
            if name in self.emas:
                tensors.update({f"ema.{name}.{k}": v for k, v in self.emas[name].full_state().items()})
            ostate = full_optimizer_state(model, self.optims[name])
            for pname, slots in ostate["state"].items():
                for slot, value in slots.items():
                    tensors[f"optim.{name}.{pname}.{slot}"] = torch.as_tensor(full_tensor(value)).detach().cpu()
            meta[f"param_groups.{name}"] = json.dumps(ostate["param_groups"])
        tensors["rng.torch"] = torch.get_rng_state()
        path = Path(path)
        if self.env.is_main:
            with atomic_output(path, overwrite=True) as tmp:
                save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
        if self.env.sharded:
            torch.distributed.barrier()
        return path

    def load(self, path: str | Path) -> None:
        """Resume from :meth:`save`'s file: weights, optimiser state, EMA, RNG and step."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"training checkpoint not found: {path}")
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("kind") != self.kind:
                raise CheckpointError(f"{path} is a {meta.get('kind')!r} checkpoint, this trainer is {self.kind!r}")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        for name, model in self.nets.items():
            if name not in self.optims:
                continue
            load_model_state(model, _section(tensors, f"model.{name}."))
            if name in self.emas:
                self.emas[name].load(_section(tensors, f"ema.{name}."))
            groups = json.loads(meta[f"param_groups.{name}"])
            state: dict[str, dict[str, Any]] = {}
            for key, value in _section(tensors, f"optim.{name}.").items():
                pname, _, slot = key.rpartition(".")
                state.setdefault(pname, {})[slot] = value
            load_optimizer_state(model, self.optims[name], {"state": state, "param_groups": groups})
        torch.set_rng_state(tensors["rng.torch"])
        self.step = int(meta["step"])

    def export(self, path: str | Path, name: str, use_ema: bool = True) -> Path:
        """Merged network ``name`` (EMA weights if kept, LoRA folded) in the official flat layout."""
        state = full_model_state(self.nets[name])
        if use_ema and name in self.emas:
            state.update(self.emas[name].full_state())
        if name in self.lora_alpha:
            state = merge_lora(state, self.lora_alpha[name])
        path = Path(path)
        if self.env.is_main:
            with atomic_output(path, overwrite=True) as tmp:
                save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"format": "pt"})
        if self.env.sharded:
            torch.distributed.barrier()
        return path


def _section(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
