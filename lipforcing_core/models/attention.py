"""The one attention function of the DiT, plus the block-causal frame mask of the student.

``attention`` takes ``[B, S, heads, head_dim]`` tensors. It uses flash-attn or xformers when one
is importable and the inputs are 16-bit CUDA tensors without a mask, and PyTorch SDPA otherwise
(which also covers CPU and float32, the exact reference path).
"""

from __future__ import annotations

import importlib
from functools import cache

import torch
import torch.nn.functional as F

from .rope import chunk_frame_counts

_HALF = (torch.float16, torch.bfloat16)


@cache
def _fused_kernel():
    """``fn(q, k, v) -> out`` on ``[B, S, n, d]`` from flash-attn or xformers, or None."""
    try:
        return importlib.import_module("flash_attn").flash_attn_func
    except ImportError:
        pass
    try:
        return importlib.import_module("xformers.ops").memory_efficient_attention
    except ImportError:
        return None


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
              *, bf16_cast: bool = False) -> torch.Tensor:
    """Softmax attention with scale ``1/sqrt(head_dim)``; ``mask`` is a boolean ``[Sq, Sk]`` (True = visible).

    ``bf16_cast`` reproduces the official student's CPU fallback, which runs q, k, v in bfloat16
    (the golden ``bf16attn`` variant); the result is cast back to the input dtype.
    """
    out_dtype = q.dtype
    if bf16_cast and q.dtype not in _HALF:
        q, k, v = (t.to(torch.bfloat16) for t in (q, k, v))
    if mask is None and q.is_cuda and q.dtype in _HALF and _fused_kernel() is not None:
        return _fused_kernel()(q, k, v).to(out_dtype)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2).to(out_dtype)


def frame_visibility(num_frames: int, chunk_size: int, local_attn_size: int = -1, sink_size: int = 0) -> torch.Tensor:
    """Boolean ``[F, F]``: may a query in frame i see keys in frame j (block-causal chunks).

    A query whose chunk ends at frame E sees frames ``< E`` (``local_attn_size=-1``) or
    ``[max(0, E-(W-S)), E)`` plus the first S sink frames (window W, sink S).
    """
    vis = torch.zeros(num_frames, num_frames, dtype=torch.bool)
    start = 0
    for count in chunk_frame_counts(num_frames, chunk_size):
        end = start + count
        lo = max(0, end - (local_attn_size - sink_size)) if local_attn_size > 0 else 0
        vis[start:end, lo:end] = True
        vis[start:end, :min(sink_size, end)] = True
        start = end
    return vis


def token_mask(visibility: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
    """Expand a frame visibility matrix to tokens ordered frame-major."""
    return visibility.repeat_interleave(tokens_per_frame, 0).repeat_interleave(tokens_per_frame, 1)
