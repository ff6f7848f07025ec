"""Rectified-flow arithmetic shared by the streaming student loop and the teacher sampler.

``t = 0`` is clean data, ``x_t = (1-t) x0 + t eps``, the network predicts the flow
``v ~ eps - x0``. Conversions run in float64 and return the input's dtype, as the official code.
"""

from __future__ import annotations

import torch

#: The released student's two-step schedule: denoise at 0.999 and 0.769, then t=0 commits the chunk.
STUDENT_T_LIST = (0.999, 0.769, 0.0)


def _as_t(t: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor | float:
    """``t`` broadcastable against ``like``; a Python float stays a float (a kernel argument, no host copy)."""
    if isinstance(t, float):
        return t
    t = torch.as_tensor(t, dtype=torch.float64, device=like.device)
    return t.reshape(t.shape + (1,) * (like.ndim - t.ndim))


def x0_from_flow(x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """Clean estimate ``x0 = x_t - t v`` (float64 math). ``t`` is a float or ``[B]``/``[B, ...]``."""
    return (x_t.double() - _as_t(t, x_t) * v.double()).to(x_t.dtype)


def renoise(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """Forward process ``x_t = (1-t) x0 + t eps`` (float64 math)."""
    tt = _as_t(t, x0)
    return ((1 - tt) * x0.double() + tt * eps.double()).to(x0.dtype)


def shift_time(u: torch.Tensor | float, shift: float) -> torch.Tensor:
    """Teacher time shift ``t = s u / ((s-1) u + 1)`` (shift 5 for OmniAvatar sampling)."""
    u = torch.as_tensor(u, dtype=torch.float64)
    return shift * u / ((shift - 1) * u + 1)


def teacher_timesteps(steps: int = 50, shift: float = 5.0) -> torch.Tensor:
    """``steps + 1`` float64 times from 1 to 0: ``u_j = 1 - j/steps`` then shifted."""
    return shift_time(1 - torch.arange(steps + 1, dtype=torch.float64) / steps, shift)
