"""The bidirectional teacher's sampler: N-step rectified-flow Euler with time shift and CFG (docs/design.md §4).

Times ``t_j = s u_j / ((s-1) u_j + 1)`` with ``u_j = 1 - j/N`` (default N = 50, s = 5) run from 1 to
0. At each step the teacher predicts ``x0`` over the whole clip; with guidance scale ``g`` the
estimate is ``x0_c + (g - 1)(x0_c - x0_neg)``, the negative condition being zero audio plus the
negative text (zeros unless given), with the same video conditioning. The Euler step moves along
the implied flow ``(x_t - x0) / t`` to the next time.

Sync-window CFG (Lip Forcing's SW-DMD rule, also used by training): the scale applies only while
``t`` is inside a closed band, default ``[0.556, 0.882]`` (Euler steps 20-39 of 50), and is 1.0
(no negative pass) elsewhere. :func:`cfg_scale_at` is that rule as a pure function.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import torch
from torch import Tensor

from ..models.dit import LipForcingDiT
from .schedule import teacher_timesteps, x0_from_flow

SYNC_BAND = (0.556, 0.882)


def cfg_scale_at(t: Tensor | float, scale: float, band: tuple[float, float] | None = None) -> Tensor | float:
    """Guidance scale at time ``t``: ``scale`` inside the closed ``band`` (everywhere if None), else 1.0.

    ``t`` may be a float or a tensor of per-sample times (the result is then a float64 tensor).
    """
    if band is None:
        return scale if not isinstance(t, Tensor) else torch.full_like(t, scale, dtype=torch.float64)
    lo, hi = band
    if isinstance(t, Tensor):
        inside = (t >= lo) & (t <= hi)
        return torch.where(inside, torch.tensor(scale, dtype=torch.float64, device=t.device),
                           torch.tensor(1.0, dtype=torch.float64, device=t.device))
    return scale if lo <= t <= hi else 1.0


def cfg_combine(x0_cond: Tensor, x0_neg: Tensor, scale: Tensor | float) -> Tensor:
    """``x0_cond + (scale - 1)(x0_cond - x0_neg)``; a tensor ``scale`` is per sample."""
    if isinstance(scale, Tensor):
        scale = scale.to(x0_cond.dtype).reshape(-1, *([1] * (x0_cond.ndim - 1)))
    return x0_cond + (scale - 1) * (x0_cond - x0_neg)


@torch.no_grad()
def sample_teacher(model: LipForcingDiT, noise: Tensor, y: Tensor, context: Tensor, audio_emb: Tensor | None, *,
                   steps: int = 50, shift: float = 5.0, cfg_scale: float = 4.5, neg_context: Tensor | None = None,
                   sync_band: tuple[float, float] | None = None,
                   callback: Callable[[int, float, Tensor], None] | None = None) -> Tensor:
    """Sample a whole clip ``[B, 16, T, H, W]`` from ``noise`` with the bidirectional teacher.

    ``y [B,49,T,H,W]`` is the video conditioning, ``context`` the text, ``audio_emb [B,4T-3,D]``.
    ``cfg_scale = 1`` disables guidance. ``callback(step, t, x0)`` sees each step's guided ``x0``.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    neg_context = torch.zeros_like(context) if neg_context is None else neg_context
    neg_audio = None if audio_emb is None else torch.zeros_like(audio_emb)
    ts = teacher_timesteps(steps, shift).tolist()
    x = noise
    for i, (t, t_next) in enumerate(pairwise(ts)):
        x0 = x0_from_flow(x, model(x, t, y, context, audio_emb), t)
        scale = cfg_scale_at(t, cfg_scale, sync_band)
        if scale != 1.0:
            x0 = cfg_combine(x0, x0_from_flow(x, model(x, t, y, neg_context, neg_audio), t), scale)
        if callback is not None:
            callback(i, t, x0)
        x = (x0.double() + (t_next / t) * (x.double() - x0.double())).to(x.dtype)  # Euler along (x - x0) / t
    return x


def teacher_passes(steps: int = 50, shift: float = 5.0, cfg_scale: float = 4.5,
                   sync_band: tuple[float, float] | None = None) -> int:
    """Transformer passes (over the whole clip) that :func:`sample_teacher` makes."""
    ts = teacher_timesteps(steps, shift).tolist()[:-1]
    return sum(1 + (cfg_scale_at(t, cfg_scale, sync_band) != 1.0) for t in ts)
