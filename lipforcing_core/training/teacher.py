"""Trainer 1: the bidirectional teacher by rectified-flow matching, with conditioning dropout for CFG.

Per sample ``t = shift_time(u, shift)``, ``u ~ U(0, 1)``; ``x_t = (1-t) x0 + t eps``; the loss is
``MSE(v, eps - x0)``. Audio is zeroed with probability ``audio_drop`` and the prompt replaced by
the negative text with probability ``text_drop`` (independently), which is what the CFG negative
condition (docs/design.md §4: zero audio + negative text) needs at sampling time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..sampling.schedule import renoise, shift_time
from .config import TeacherConfig
from .data import Clip, conditioning
from .engine import Trainer


def drop_conditions(batch: Clip, keep_audio: torch.Tensor,
                    keep_text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(text, audio) with per-sample dropout: dropped audio is zeros, dropped text is ``neg_text``."""
    audio = batch["audio"] * keep_audio.to(batch["audio"].dtype)[:, None, None]
    text = torch.where(keep_text[:, None, None], batch["text"], batch["neg_text"])
    return text, audio


class TeacherTrainer(Trainer):
    kind = "teacher"
    config_class = TeacherConfig
    cfg: TeacherConfig

    def build(self) -> None:
        cfg = self.cfg
        self.add_trainable("teacher", init=cfg.init, adapter=cfg.init_adapter, lr=cfg.lr, lora_rank=cfg.lora_rank,
                           ema_decay=cfg.ema_decay)

    def loss(self, batch: Clip) -> torch.Tensor:
        """Flow-matching loss of this step's noise, times and dropout (deterministic per step)."""
        x0 = batch["latents"]
        eps = self.randn("eps", *x0.shape[1:]).to(x0.dtype)
        t = shift_time(self.rand("t"), self.cfg.shift).to(self.device)
        text, audio = drop_conditions(batch, self.rand("audio_drop") >= self.cfg.audio_drop,
                                      self.rand("text_drop") >= self.cfg.text_drop)
        v = self.nets["teacher"](renoise(x0, eps, t), t, conditioning(batch), text, audio)
        return F.mse_loss(v.float(), (eps - x0).float())

    def accumulate(self, batch: Clip) -> dict[str, torch.Tensor]:
        loss = self.loss(batch)
        self.backward(loss)
        return {"loss": loss.detach()}
