"""fp8 (e4m3) weights for the transformer blocks' linear layers, one scale per output channel.

The blocks' q/k/v/o and FFN projections hold all but ~1% of the DiT's weights, so storing them
as ``float8_e4m3fn`` halves the 14B student's weight memory against bfloat16 (see
docs/benchmarks.md). Each output row ``i`` of a weight ``W`` is stored as ``q_i = W_i / s_i``
rounded to e4m3 with ``s_i = max|W_i| / 448``; ``W ~ s[:, None] * q``. The scale is saved beside
the weight as ``<layer>.weight_scale`` (ComfyUI's name for an fp8 weight's dequantisation scale;
ComfyUI's own scales are one number per tensor, ours one per output channel).

How :class:`Fp8Linear` multiplies is chosen per call (``matmul="auto"``):

* ``torch._scaled_mm`` for bfloat16 inputs on GPUs with fp8 tensor cores (compute capability
  >= 8.9: Ada, Hopper, Blackwell) where the row-wise scaled product works (probed once per device):
  activations are quantised per token to e4m3, the product is rescaled by token and channel scales;
* elsewhere (CPU, Ampere, float32 inputs) the weight is widened to the input dtype on the fly and
  the output rescaled per channel (``x @ (s q)^T = (x @ q^T) * s``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448
SCALE_NAME = "weight_scale"
#: the linear layers of the transformer blocks that are stored in fp8 (module names in LipForcingDiT)
BLOCK_LINEAR = re.compile(r"blocks\.\d+\.(?:self_attn\.[qkvo]|cross_attn\.[qkvo]|ffn\.[02])")
_TINY = torch.finfo(torch.float32).tiny
_SCALED_MM_OK: dict[torch.device, bool] = {}


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q, s)``: ``weight [out, in]`` as e4m3 values ``q`` and float32 per-row scales ``s [out]``."""
    w = weight.to(torch.float32, copy=True)  # one float32 temporary, then in place
    scale = (w.abs().amax(dim=1) / FP8_MAX).clamp(min=_TINY)
    return w.div_(scale[:, None]).clamp_(-FP8_MAX, FP8_MAX).to(FP8), scale


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The weight ``s[:, None] * q`` in ``dtype``."""
    return (q.float() * scale.float()[:, None]).to(dtype)


def scaled_mm_available(device: torch.device) -> bool:
    """Whether row-wise scaled fp8 matmul runs on ``device`` (CUDA, compute capability >= 8.9, probed once)."""
    if device.type != "cuda" or not hasattr(torch, "_scaled_mm"):
        return False
    if device not in _SCALED_MM_OK:
        ok = torch.cuda.get_device_capability(device) >= (8, 9)
        if ok:
            try:
                a = torch.zeros(16, 16, device=device, dtype=FP8)
                ones = torch.ones(16, 1, device=device)
                torch._scaled_mm(a, a.t(), scale_a=ones, scale_b=ones.t(), out_dtype=torch.bfloat16)
            except (RuntimeError, NotImplementedError):
                ok = False
        _SCALED_MM_OK[device] = ok
    return _SCALED_MM_OK[device]


class Fp8Linear(nn.Module):
    """``nn.Linear`` with an e4m3 ``weight [out, in]`` and float32 ``weight_scale [out]``.

    The bias stays in the compute dtype. ``matmul``: ``"auto"`` (scaled fp8 matmul where available,
    see the module docstring) or ``"dequant"`` (always widen the weight; the reference path).
    ``Module.to(dtype)`` moves the weight and scale but keeps their dtypes.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.matmul = "auto"
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=FP8),
                                   requires_grad=False)
        self.weight_scale = nn.Parameter(torch.ones(out_features, device=device, dtype=torch.float32),
                                         requires_grad=False)
        self.bias = (nn.Parameter(torch.empty(out_features, device=device, dtype=dtype), requires_grad=False)
                     if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Fp8Linear:
        """An fp8 copy of ``linear`` (quantised per output channel; empty on the meta device)."""
        bias = linear.bias is not None
        weight = linear.weight
        out = cls(linear.in_features, linear.out_features, bias, device=weight.device,
                  dtype=weight.dtype if weight.dtype != FP8 else torch.bfloat16)
        if weight.is_meta:
            return out
        with torch.no_grad():
            q, scale = quantize_rows(weight)
            out.weight.copy_(q)
            out.weight_scale.copy_(scale)
            if bias:
                out.bias.copy_(linear.bias)
        return out

    def _apply(self, fn, recurse=True):
        fixed = (self.weight, self.weight_scale)
        return super()._apply(lambda t: fn(t).to(t.dtype) if any(t is f for f in fixed) else fn(t), recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.matmul == "auto" and x.dtype == torch.bfloat16 and self.in_features % 16 == 0
                and self.out_features % 16 == 0 and scaled_mm_available(x.device)):
            y = self._scaled_mm(x)
        else:
            y = F.linear(x, self.weight.to(x.dtype)) * self.weight_scale.to(x.dtype)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def _scaled_mm(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        scale = (rows.abs().amax(dim=1, keepdim=True).float() / FP8_MAX).clamp(min=_TINY)
        xq = (rows.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
        y = torch._scaled_mm(xq, self.weight.t(), scale_a=scale, scale_b=self.weight_scale[None, :],
                             out_dtype=torch.bfloat16)
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8 e4m3, matmul={self.matmul}"


def fp8_layer_names(keys: Iterable[str]) -> list[str]:
    """The layers that a state dict's keys store in fp8 (those with a ``<layer>.weight_scale``)."""
    suffix = "." + SCALE_NAME
    return [k.removesuffix(suffix) for k in keys if k.endswith(suffix)]


def use_fp8_linears(model: nn.Module, names: Iterable[str] | None = None) -> nn.Module:
    """Replace ``model``'s ``nn.Linear`` layers named ``names`` (default: every block linear) by
    :class:`Fp8Linear` in place, quantising their weights (or leaving them empty on the meta device).

    Parameter names are unchanged apart from the added ``weight_scale``, so a converted state dict
    loads with ``strict=True``. Returns ``model``.
    """
    wanted = None if names is None else set(names)
    for name, module in list(model.named_modules()):
        chosen = BLOCK_LINEAR.fullmatch(name) if wanted is None else name in wanted
        if chosen and isinstance(module, nn.Linear):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, Fp8Linear.from_linear(module))
    return model
