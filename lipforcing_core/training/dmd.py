"""Trainer 3 (stage 2): Self-Forcing DMD with Sync-Window CFG and the Re-DMD SyncNet reward (docs/design.md §8).

Per iteration the critic ("fake score", bidirectional, x0 prediction) learns to denoise fresh
student samples; every ``student_update_every``-th iteration the student is also updated with
the VSD loss of a self-rollout, where the teacher's x0 uses CFG 4.5 only for DMD times inside the
sync window ``[0.556, 0.882]`` (1.0 outside) and each sample's loss is weighted by
``exp(beta * syncC)`` of its decoded frames (detached). Both networks use Adam (0, 0.999).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..config import CausalSpec
from ..sampling.schedule import renoise, shift_time, x0_from_flow
from ..sampling.teacher import cfg_combine, cfg_scale_at
from .config import DMDConfig
from .data import Clip, conditioning
from .engine import Trainer
from .rollout import self_rollout

#: ``reward(gen_latents [B,16,T,H,W], batch) -> [B]`` sync score (higher = better sync).
RewardFn = Callable[[torch.Tensor, Clip], torch.Tensor]


def vsd_loss(x_gen: torch.Tensor, x0_teacher: torch.Tensor, x0_fake: torch.Tensor) -> torch.Tensor:
    """Per-sample VSD loss ``[B]``: ``w = 1/(mean|x_gen - x0_T| + 1e-6)``, ``g = (x0_fake - x0_T) w``,
    ``0.5 * MSE(x_gen, (x_gen - g).detach())``."""
    dims = tuple(range(1, x_gen.ndim))
    with torch.no_grad():
        w = 1.0 / ((x_gen - x0_teacher).abs().mean(dims, keepdim=True) + 1e-6)
        target = x_gen - (x0_fake - x0_teacher) * w
    return 0.5 * (x_gen - target).pow(2).mean(dims)


def reward_weights(score: torch.Tensor, beta: float) -> torch.Tensor:
    """Re-DMD weights ``exp(beta * score)`` (no gradient)."""
    return torch.exp(beta * score.detach().float())


class SyncNetReward:
    """Sync-C of student latents: TAEHV decode, then the SyncNet v2 reward on the frames and the clip's waveform."""

    def __init__(self, syncnet, taehv):
        self.syncnet, self.taehv = syncnet, taehv

    @torch.no_grad()
    def __call__(self, gen: torch.Tensor, batch: Clip) -> torch.Tensor:
        from ..syncnet.metrics import sync_c_reward

        if "waveform" not in batch:
            raise ValueError("the SyncNet reward needs each clip's 16 kHz 'waveform' in the prepared data")
        param = next(self.taehv.parameters())
        frames = self.taehv.decode_video(gen.transpose(1, 2).to(param.device, param.dtype))  # [B, F, 3, H, W]
        return sync_c_reward(self.syncnet, frames.float(), batch["waveform"].float()).to(gen.device)


class DMDTrainer(Trainer):
    kind = "dmd"
    config_class = DMDConfig
    cfg: DMDConfig

    def build(self) -> None:
        cfg = self.cfg
        self.add_trainable("student", init=cfg.init, adapter=cfg.init_adapter, lr=cfg.lr, lora_rank=cfg.lora_rank,
                           ema_decay=cfg.ema_decay)
        self.add_frozen("teacher", init=cfg.teacher, adapter=cfg.teacher_adapter)
        # the critic starts as a copy of the teacher (same file, or the same seeded random init)
        critic_init, critic_adapter = (cfg.critic_init, "") if cfg.critic_init else (cfg.teacher, cfg.teacher_adapter)
        self.add_trainable("critic", init=critic_init, adapter=critic_adapter, seed_stream="teacher",
                           lr=cfg.critic_lr, lora_rank=cfg.critic_lora_rank)
        self.reward: RewardFn | None = None
        if cfg.syncnet:
            from ..syncnet.model import load_syncnet
            from ..vae.taehv import load_taehv

            self.reward = SyncNetReward(load_syncnet(cfg.syncnet, self.device),
                                        load_taehv(cfg.taehv, device=self.device))

    @property
    def spec(self) -> CausalSpec:
        return CausalSpec(self.cfg.chunk_size, self.cfg.local_attn_size, self.cfg.sink_size, self.cfg.dynamic_rope)

    def dmd_time(self, stream: str) -> torch.Tensor:
        """``t = shift_time(u)``, ``u ~ U(t_range)`` per sample, float64 ``[B]``."""
        lo, hi = self.cfg.t_range
        return shift_time(lo + (hi - lo) * self.rand(stream), self.cfg.shift).to(self.device)

    def generate(self, batch: Clip, y: torch.Tensor, stream: str) -> torch.Tensor:
        """A self-rollout of the student (graph only through the exit step when grad is enabled)."""
        steps = len(self.cfg.t_list) - 1
        noise = self.randn(stream + ".noise", steps, *batch["latents"].shape[1:]).transpose(0, 1)
        return self_rollout(self.nets["student"], noise.to(batch["latents"].dtype), y, batch["text"], batch["audio"],
                            t_list=self.cfg.t_list, exit_step=self.choice(stream + ".exit", steps), spec=self.spec)

    def x0(self, name: str, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor, text: torch.Tensor,
           audio: torch.Tensor) -> torch.Tensor:
        return x0_from_flow(x_t, self.nets[name](x_t, t, y, text, audio), t)

    def critic_loss(self, batch: Clip, y: torch.Tensor) -> torch.Tensor:
        """Denoising loss of the critic (x0 prediction) on a fresh, gradient-free student sample."""
        with torch.no_grad():
            gen = self.generate(batch, y, "critic")
        t = self.dmd_time("critic.t")
        x_t = renoise(gen, self.randn("critic.eps", *gen.shape[1:]).to(gen.dtype), t)
        return F.mse_loss(self.x0("critic", x_t, t, y, batch["text"], batch["audio"]).float(), gen.float())

    def student_loss(self, batch: Clip, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reward-weighted Sync-Window VSD loss of a self-rollout (graph through the exit steps)."""
        gen = self.generate(batch, y, "student")
        t = self.dmd_time("student.t")
        with torch.no_grad():
            x_t = renoise(gen.detach(), self.randn("student.eps", *gen.shape[1:]).to(gen.dtype), t)
            fake = self.x0("critic", x_t, t, y, batch["text"], batch["audio"])
            cond = self.x0("teacher", x_t, t, y, batch["text"], batch["audio"])
            neg = self.x0("teacher", x_t, t, y, batch["neg_text"], torch.zeros_like(batch["audio"]))
            teacher = cfg_combine(cond, neg, cfg_scale_at(t, self.cfg.guidance_scale, self.cfg.sync_band))
        per_sample = vsd_loss(gen.float(), teacher.float(), fake.float())
        out = {"vsd_loss": per_sample.detach().mean()}
        if self.reward is not None:
            score = self.reward(gen.detach(), batch)
            per_sample = per_sample * reward_weights(score, self.cfg.reward_beta).to(per_sample.device)
            out["sync_c"] = score.detach().float().mean()
        out["student_loss"] = per_sample.mean()
        return out

    def student_turn(self) -> bool:
        return self.step % self.cfg.student_update_every == 0

    def updated(self) -> tuple[str, ...]:
        return ("critic", "student") if self.student_turn() else ("critic",)

    def accumulate(self, batch: Clip) -> dict[str, torch.Tensor]:
        """Critic loss backward first (its graph is freed), then on student turns the student's."""
        y = conditioning(batch)
        critic = self.critic_loss(batch, y)
        self.backward(critic)
        losses = {"critic_loss": critic.detach()}
        if self.student_turn():
            student = self.student_loss(batch, y)
            self.backward(student["student_loss"])
            losses.update({k: v.detach() for k, v in student.items()})
        return losses
