"""Scale-out on the standard engine: ``torchrun`` + FSDP2 (``fully_shard``), one code path for 1..N processes.

Without ``torchrun`` nothing is sharded and the same trainer code runs in one process (CPU or
GPU). Under ``torchrun`` every DiT block and then the whole model are wrapped with
``fully_shard`` (gloo on CPU, NCCL on GPU); the streaming methods of the DiT are registered as
FSDP forward methods so the KV-cache rollout unshards parameters like ``forward`` does.
Mixed precision keeps fp32 master weights and runs bf16 compute with fp32 gradient reduction.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)
from torch.utils.checkpoint import checkpoint

from ..models.dit import StreamPlan

#: Methods of LipForcingDiT besides ``forward`` that run parameters (streaming and conditioning).
FSDP_METHODS = ("forward_chunk", "new_stream", "text_kv", "encode_audio")
FULL = StateDictOptions(full_state_dict=True, cpu_offload=False)


@dataclass(frozen=True)
class DistEnv:
    """Rank, world size and device of this process."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def sharded(self) -> bool:
        return dist.is_available() and dist.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "cpu") -> DistEnv:
    """Join the ``torchrun`` process group if launched by it (gloo on CPU, NCCL on CUDA), else single process."""
    if "WORLD_SIZE" not in os.environ or dist.is_initialized():
        if dist.is_initialized():
            return DistEnv(dist.get_rank(), dist.get_world_size(), _local_device(device))
        return DistEnv(0, 1, torch.device(device))
    dev = _local_device(device)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistEnv(dist.get_rank(), dist.get_world_size(), dev)


def _local_device(device: str) -> torch.device:
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device(device)


def checkpoint_blocks(model: nn.Module) -> None:
    """Activation checkpointing of every DiT block in full-sequence passes.

    Streaming passes are left alone: their attention reads a KV cache that later chunks
    overwrite, so a recomputation in backward would see different keys.
    """
    for block in model.blocks:
        plain = block.forward

        def forward(x, mod, text_kv, plan, layer, _plain=plain):
            if isinstance(plan, StreamPlan) or not torch.is_grad_enabled():
                return _plain(x, mod, text_kv, plan, layer)
            return checkpoint(_plain, x, mod, text_kv, plan, layer, use_reentrant=False)

        block.forward = functools.update_wrapper(forward, plain)


def shard(model: nn.Module, env: DistEnv, mixed_precision: bool = False) -> nn.Module:
    """``fully_shard`` each block's cross-attention, each block, then the root (no-op in one process)."""
    if not env.sharded:
        if mixed_precision:
            raise ValueError("mixed_precision uses FSDP's bf16 policy: launch with torchrun")
        return model
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    policy = MixedPrecisionPolicy(torch.bfloat16, torch.float32) if mixed_precision else MixedPrecisionPolicy()
    if mixed_precision:  # affine LayerNorms compute in float32 (Wan convention): keep their weights fp32
        keep = MixedPrecisionPolicy(torch.float32, torch.float32, cast_forward_inputs=False)
        for module in model.modules():
            if isinstance(module, nn.LayerNorm) and module.elementwise_affine:
                fully_shard(module, mp_policy=keep)
    for block in model.blocks:
        # text K/V are computed once per clip outside the block's forward: own group + method
        fully_shard(block.cross_attn, mp_policy=policy)
        register_fsdp_forward_method(block.cross_attn, "context_kv")
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    for name in FSDP_METHODS:
        register_fsdp_forward_method(model, name)
    return model


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Unsharded state dict (every rank gets full tensors; collective under FSDP)."""
    return {k: v.detach().cpu() for k, v in get_model_state_dict(model, options=FULL).items()}


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], broadcast: bool = False) -> None:
    """Load full tensors into (possibly sharded) parameters; ``broadcast``: only rank 0 passes them."""
    options = StateDictOptions(full_state_dict=True, strict=True, broadcast_from_rank0=broadcast)
    set_model_state_dict(model, state, options=options)


def full_optimizer_state(model: nn.Module, optim: torch.optim.Optimizer) -> dict:
    """``{"state": {fqn: {...}}, "param_groups": [...]}`` with full tensors."""
    return get_optimizer_state_dict(model, optim, options=FULL)


def load_optimizer_state(model: nn.Module, optim: torch.optim.Optimizer, state: dict) -> None:
    set_optimizer_state_dict(model, optim, state, options=StateDictOptions(full_state_dict=True))


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """Gather a DTensor shard (collective) or pass a plain tensor through."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def like_param(full: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """Shard a full tensor the way ``param`` is sharded (plain copy when not sharded)."""
    if hasattr(param, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(full.to(param.device, param.dtype), param.device_mesh, param.placements)
    return full.to(param.device, param.dtype).clone()


def mean_over_ranks(value: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Average of a per-rank scalar over all ranks (equal local batches -> global batch mean)."""
    value = value.detach().float().reshape(())
    if env.sharded and env.world > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= env.world
    return value
