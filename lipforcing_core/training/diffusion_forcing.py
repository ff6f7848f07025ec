"""Trainer 2 (stage 1): Diffusion-Forcing initialisation of the causal student (docs/design.md §8).

Each chunk of 3 latent frames gets its own time from the student schedule ``t_list``
(0.999, 0.769, 0); the student runs block-causally over the whole clip with per-frame times and an
attention window drawn per step from ``windows`` ((7,1),(10,1),(13,1),(9,3),(12,3)), so it learns
to denoise a chunk given clean or partly noisy context under every window it may meet. Loss
``0.5 * MSE(x0_pred, x0)`` with ``x0_pred = x_t - t v``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import CausalSpec
from ..models.rope import chunk_frame_counts
from .config import DFConfig
from .data import Clip, conditioning
from .engine import Trainer


def per_frame(t_chunks: torch.Tensor, frames: int, chunk_size: int) -> torch.Tensor:
    """Repeat per-chunk times ``[B, chunks]`` to per-frame times ``[B, frames]``."""
    counts = torch.tensor(chunk_frame_counts(frames, chunk_size), device=t_chunks.device)
    return t_chunks.repeat_interleave(counts, dim=1)


def frame_view(t: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` -> ``[B, 1, T, 1, 1]`` to broadcast over latents ``[B, C, T, H, W]``."""
    return t[:, None, :, None, None]


class DiffusionForcingTrainer(Trainer):
    kind = "df"
    config_class = DFConfig
    cfg: DFConfig

    def build(self) -> None:
        cfg = self.cfg
        self.add_trainable("student", init=cfg.init, adapter=cfg.init_adapter, lr=cfg.lr, lora_rank=cfg.lora_rank,
                           ema_decay=cfg.ema_decay)

    def spec(self) -> CausalSpec:
        """This step's stochastic attention window (shared by all samples and ranks)."""
        window, sink = self.cfg.windows[self.choice("window", len(self.cfg.windows))]
        return CausalSpec(self.cfg.chunk_size, window, sink, self.cfg.dynamic_rope)

    def loss(self, batch: Clip) -> torch.Tensor:
        x0 = batch["latents"]
        frames = x0.shape[2]
        chunks = len(chunk_frame_counts(frames, self.cfg.chunk_size))
        t_list = torch.tensor(self.cfg.t_list, dtype=torch.float64, device=self.device)
        pick = (self.rand("t", chunks) * len(t_list)).long().clamp_max(len(t_list) - 1)
        t = per_frame(t_list[pick], frames, self.cfg.chunk_size)
        eps = self.randn("eps", *x0.shape[1:]).to(x0.dtype)
        tt = frame_view(t).to(x0.dtype)
        x_t = (1 - tt) * x0 + tt * eps
        v = self.nets["student"](x_t, t, conditioning(batch), batch["text"], batch["audio"], causal=self.spec())
        return 0.5 * F.mse_loss((x_t - tt * v).float(), x0.float())

    def accumulate(self, batch: Clip) -> dict[str, torch.Tensor]:
        loss = self.loss(batch)
        self.backward(loss)
        return {"loss": loss.detach()}
