"""The one attention function of the DiT, plus the block-causal frame mask of the student.

``attention`` takes ``[B, S, heads, head_dim]`` tensors. By default ("auto") the unmasked 16-bit
CUDA calls (the streaming student's) use FlashAttention-3 (``flash_attn_interface``, Hopper) when
it is importable, else flash-attn 2, else xformers, else PyTorch SDPA with its cuDNN kernel first
in priority (then flash, memory-efficient, math: PyTorch falls through to the next kernel that
supports the inputs); everything else (CPU, float32, masks) runs PyTorch SDPA with its own
choice, which covers the exact reference path. ``attention_backend`` picks one for a block of
code (context-local, so two runs in one process do not interfere): "sdpa" (PyTorch's choice of
kernel), "math" (PyTorch's unfused reference kernel), "cudnn" (SDPA's cuDNN kernel first),
"flash_attn_3", "flash_attn" or "xformers" (for the unmasked 16-bit CUDA calls; masked calls
always run SDPA).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from functools import cache

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from .rope import chunk_frame_counts

_HALF = (torch.float16, torch.bfloat16)
BACKENDS = ("auto", "sdpa", "math", "cudnn", "flash_attn_3", "flash_attn", "xformers")
_MODULES = {"flash_attn_3": ("flash_attn_interface", "flash_attn_func"),
            "flash_attn": ("flash_attn", "flash_attn_func"),
            "xformers": ("xformers.ops", "memory_efficient_attention")}
_PACKAGES = {"flash_attn_3": "flash-attn 3 (flash_attn_interface)", "flash_attn": "flash-attn", "xformers": "xformers"}
#: SDPA kernels in order of preference for "auto"/"cudnn" on CUDA (the first that supports the inputs runs)
_CUDNN_FIRST = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
_backend: ContextVar[str] = ContextVar("lipforcing_attention_backend", default="auto")


@cache
def _kernel(name: str):
    """``fn(q, k, v) -> out`` on ``[B, S, n, d]`` from flash-attn 3/2 or xformers, or None if not installed."""
    module, fn_name = _MODULES[name]
    try:
        fn = getattr(importlib.import_module(module), fn_name)
    except ImportError:
        return None

    def call(q, k, v):
        out = fn(q, k, v)
        return out[0] if isinstance(out, tuple) else out  # some flash-attn 3 releases also return the LSE

    return call


def _fused_kernel(backend: str):
    if backend == "auto":
        return _kernel("flash_attn_3") or _kernel("flash_attn") or _kernel("xformers")
    return _kernel(backend) if backend in _MODULES else None


def check_backend(name: str) -> None:
    """Raise ``ValueError`` naming the problem if ``name`` is unknown or its package is not installed."""
    if name not in BACKENDS:
        raise ValueError(f"attention backend {name!r} is not one of {', '.join(BACKENDS)}")
    if name in _MODULES and _kernel(name) is None:
        raise ValueError(f"attention backend {name!r} needs the {_PACKAGES[name]} package (CUDA); "
                         "install it or pick 'auto' / 'sdpa'")


@contextmanager
def attention_backend(name: str) -> Iterator[None]:
    """Run the DiT's attention with backend ``name`` (see the module docstring) inside the block."""
    check_backend(name)
    token = _backend.set(name)
    try:
        yield
    finally:
        _backend.reset(token)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
              *, bf16_cast: bool = False) -> torch.Tensor:
    """Softmax attention with scale ``1/sqrt(head_dim)``; ``mask`` is a boolean ``[Sq, Sk]`` (True = visible).

    ``bf16_cast`` reproduces the official student's CPU fallback, which runs q, k, v in bfloat16
    (docs/design.md §2, attention precision); the result is cast back to the input dtype.
    """
    out_dtype = q.dtype
    if bf16_cast and q.dtype not in _HALF:
        q, k, v = (t.to(torch.bfloat16) for t in (q, k, v))
    backend = _backend.get()
    fast = mask is None and q.is_cuda and q.dtype in _HALF
    fused = _fused_kernel(backend) if fast else None
    if fused is not None:
        return fused(q, k, v).to(out_dtype)
    args = (q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    if backend == "math":
        kernels = sdpa_kernel(SDPBackend.MATH)
    elif (backend == "cudnn" or backend == "auto") and fast:
        kernels = sdpa_kernel(_CUDNN_FIRST, set_priority=True)
    else:
        kernels = nullcontext()
    with kernels:
        out = F.scaled_dot_product_attention(*args, attn_mask=mask)
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
