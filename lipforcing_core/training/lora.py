"""LoRA adapters on the DiT's linear layers, kept in the official flat key layout.

A :class:`LoRALinear` *is* the ``nn.Linear`` it replaces (same ``weight``/``bias`` names) plus
``lora_A [r, in]`` and ``lora_B [out, r]``, so a model with adapters has the official keys and
two extra ones per target; :func:`merge_lora` folds ``W += (alpha/r) B @ A`` and drops them, giving
a state dict that :func:`lipforcing_core.checkpoints.load_dit` reads unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

#: Official LoRA targets inside each block (docs/design.md §8).
LORA_TARGETS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
                "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2")


def init_lora_pair(in_features: int, out_features: int, rank: int,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh CPU ``(A, B)``: A ~ U(+-1/sqrt(in)) (PEFT's kaiming-uniform default), B = 0."""
    bound = 1 / math.sqrt(in_features)
    a = torch.empty(rank, in_features).uniform_(-bound, bound, generator=generator)
    return a, torch.zeros(out_features, rank)


class LoRALinear(nn.Linear):
    """``y = x W^T + b + (alpha/r) (x A^T) B^T``; B starts at zero so the output is unchanged at init."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None,
                         device=base.weight.device, dtype=base.weight.dtype)
        self.weight, self.bias = base.weight, base.bias
        self.scale = alpha / rank
        a, b = init_lora_pair(base.in_features, base.out_features, rank)
        self.lora_A = nn.Parameter(a.to(base.weight.device, base.weight.dtype))
        self.lora_B = nn.Parameter(b.to(base.weight.device, base.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + self.scale * F.linear(F.linear(x, self.lora_A), self.lora_B)


def add_lora(model: nn.Module, rank: int, alpha: float, full_modules: Iterable[str] = ()) -> nn.Module:
    """Put adapters on every block's targets and freeze all else except ``full_modules`` (name prefixes)."""
    model.requires_grad_(False)
    for block in model.blocks:
        for target in LORA_TARGETS:
            parent_name, _, child = target.rpartition(".")
            parent = block.get_submodule(parent_name)
            setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha))
    prefixes = tuple(full_modules)
    for name, p in model.named_parameters():
        p.requires_grad_(".lora_" in name or name.startswith(prefixes))
    return model


def lora_state(model: nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Initial ``lora_A``/``lora_B`` of every adapter of ``model`` (e.g. built on the meta device)."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            a, b = init_lora_pair(module.in_features, module.out_features, module.lora_A.shape[0], generator)
            out[f"{name}.lora_A"], out[f"{name}.lora_B"] = a, b
    return out


def merge_lora(state: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """Fold ``<m>.lora_A/.lora_B`` pairs into ``<m>.weight`` (float32 math) and drop them."""
    out = {k: v for k, v in state.items() if ".lora_" not in k}
    for key in state:
        if key.endswith(".lora_A"):
            stem = key[: -len(".lora_A")]
            a, b = state[key].float(), state[stem + ".lora_B"].float()
            w = out[stem + ".weight"]
            out[stem + ".weight"] = (w.float() + (alpha / a.shape[0]) * b @ a).to(w.dtype)
    return out
