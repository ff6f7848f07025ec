"""The demo DiT recipe: prepared dubbing clips, then teacher -> stage 1 (DF) -> stage 2 (DMD) with our trainers.

Run by ``python -m lipforcing_core train-demo`` (stages ``prepare``, ``teacher``, ``df``, ``dmd``) from the
demo VAE and SyncNet; writes ``demo_teacher.safetensors`` and ``demo_student.safetensors`` (official flat
DiT layout, float16, preset ``demo``); intermediate runs, exports and per-stage throughput go to the run dir.

Training clips are *dubbing* pairs, the situation the model meets at inference: one identity with its
head motion says a source utterance (the unmasked ``ref_sequence`` and the mouth-masked video) and a
target utterance (the audio, and the ground-truth ``latents``). The renderer changes only the mouth
region between the two, so the target's mouth must come from the audio: copying the reference's mouth
is wrong. Masking follows the real pipeline: the binary pixel keep-mask greys the mouth (0 in [-1, 1])
before the VAE; the latent keep-mask is the bilinear resize of the mask to the latent grid, ``> 0.5``.
The text condition is a single zero row (the demo has no prompts; CFG's negative is zero audio).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from ..checkpoints import read_state_dict
from ..config import FPS, TEXT_DIM, get_preset
from ..face.mask import load_mouth_mask
from ..training.config import DFConfig, DMDConfig, TeacherConfig, TrainConfig
from ..training.data import Clip, save_clip
from .audio_features import LogMelFeatures
from .constants import DEMO_SIZE
from .dataset import clip_seeds
from .synthetic import make_clip, num_frames

PRESET = "demo"
STAGES = ("prepare", "teacher", "df", "dmd")
Log = Callable[[str], None]


# ------------------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class PrepareConfig:
    """How many dubbing clips to render, and their size: ``latent_frames`` latents = ``1 + 4(n-1)`` frames."""

    clips: int = 384
    latent_frames: int = 9  # 33 frames: 3 student chunks, enough for the 7-frame attention window to slide
    size: int = DEMO_SIZE
    render_s: float = 2.0  # utterances are this long; each clip is a window of them (short ones are mostly silence)
    split: str = "train"
    seed: int = 0

    @property
    def frames(self) -> int:
        return 1 + 4 * (self.latent_frames - 1)

    def __post_init__(self) -> None:
        if self.frames > num_frames(self.render_s):
            raise ValueError(f"{self.latent_frames} latent frames need {self.frames} video frames; "
                             f"render_s = {self.render_s} s gives only {num_frames(self.render_s)}")


def dubbing_seeds(cfg: PrepareConfig) -> list[tuple[int, int, int, int]]:
    """``(identity, source utterance, target utterance, first frame)`` of every clip, reproducible from ``cfg.seed``."""
    pairs = clip_seeds(cfg.clips, cfg.split, cfg.seed)
    sources = clip_seeds(cfg.clips, cfg.split, cfg.seed + 1)
    starts = torch.randint(num_frames(cfg.render_s) - cfg.frames + 1, (cfg.clips,),
                           generator=torch.Generator().manual_seed(cfg.seed + 2)).tolist()
    return [(ident, src, tgt, start)
            for (ident, tgt), (_, src), start in zip(pairs, sources, starts, strict=True)]


def pixel_keep_mask(size: int) -> Tensor:
    """Binary ``[size, size]`` keep-mask (1 = keep) of the built-in LatentSync mouth mask, ``> 0.5``."""
    return torch.from_numpy(load_mouth_mask(size=size) > 0.5).float()


def latent_keep_mask(mask: Tensor, latent_hw: tuple[int, int]) -> Tensor:
    """The keep-mask on the latent grid: bilinear resize, then ``> 0.5`` (as the streaming pipeline)."""
    small = F.interpolate(mask.float()[None, None], size=latent_hw, mode="bilinear", align_corners=False)[0, 0]
    return (small > 0.5).float()


def to_video(frames: Tensor) -> Tensor:
    """Frames ``[T, H, W, 3]`` in 0..1 -> VAE input ``[1, 3, T, H, W]`` in [-1, 1], via uint8 like a video file."""
    return (frames * 255).round().div(127.5).sub(1).permute(3, 0, 1, 2)[None]


def render_pair(seeds: tuple[int, int, int, int], cfg: PrepareConfig) -> tuple[Tensor, Tensor, Tensor]:
    """``(target video, source video, target waveform)`` of one dubbing clip; videos ``[1, 3, T, H, W]`` in [-1, 1]."""
    identity, source_utt, target_utt, start = seeds
    frames = slice(start, start + cfg.frames)
    target = make_clip(identity, target_utt, cfg.render_s, cfg.size)
    source = make_clip(identity, source_utt, cfg.render_s, cfg.size)
    spf = target.sample_rate // FPS
    waveform = target.audio[start * spf:(start + cfg.frames) * spf]
    return to_video(target.frames[frames]), to_video(source.frames[frames]), waveform


@torch.no_grad()
def encode_pair(vae, features: LogMelFeatures, target: Tensor, source: Tensor, waveform: Tensor) -> Clip:
    """The training clip (see :mod:`lipforcing_core.training.data`) of a rendered pair, plus its ``waveform``."""
    keep = pixel_keep_mask(target.shape[-1])
    # one batched encode (twice as fast on CPU as three)
    latents, masked, ref = vae.encode(torch.cat([target, source * keep, source]))
    return {
        "latents": latents,
        "masked_video": masked,
        "ref_sequence": ref,
        "mask": latent_keep_mask(keep, tuple(latents.shape[-2:])),
        "audio": features(waveform, num_frames=target.shape[2])[0],
        "text": torch.zeros(1, TEXT_DIM),
        "waveform": waveform,
    }


def prepare_clip(vae, features: LogMelFeatures, seeds: tuple[int, int, int, int], cfg: PrepareConfig) -> Clip:
    """Render and encode the dubbing clip of ``seeds``."""
    return encode_pair(vae, features, *render_pair(seeds, cfg))


def prepare(vae, out_dir: str | Path, cfg: PrepareConfig = PrepareConfig(), log: Log = print) -> list[Path]:
    """Render, encode and save ``cfg.clips`` clips as ``clip_00000.safetensors`` ...; seeds go to ``prepare.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    features, seeds, paths = LogMelFeatures(), dubbing_seeds(cfg), []
    start = time.monotonic()
    for i, triple in enumerate(seeds):
        paths.append(out / f"clip_{i:05d}.safetensors")
        save_clip(paths[-1], prepare_clip(vae, features, triple, cfg))
        if (i + 1) % 50 == 0 or i + 1 == len(seeds):
            log(f"prepare: {i + 1}/{len(seeds)} clips, {time.monotonic() - start:.0f} s")
    manifest = {"config": dataclasses.asdict(cfg), "seeds": seeds, "vae": dataclasses.asdict(vae.config)}
    (out / "prepare.json").write_text(json.dumps(manifest))
    return paths


# ------------------------------------------------------------------------------------------ stages


def stage_configs(data: str, run_dir: str | Path) -> dict[str, TrainConfig]:
    """The demo recipe's trainer configs (small batches and larger learning rates than the paper's; each stage
    stops at its step count or its wall-clock budget, whichever comes first)."""
    run = Path(run_dir)
    common = {"preset": PRESET, "data": data, "save_every": 500, "log_every": 25, "grad_clip": 1.0}
    return {
        "teacher": TeacherConfig(**common, out_dir=str(run / "teacher"), steps=5000, max_minutes=28, batch_size=8, lr=3e-4,
                                 ema_decay=0.999, text_drop=0.0),
        "df": DFConfig(**common, out_dir=str(run / "df"), init=str(run / "teacher.safetensors"), steps=1000, max_minutes=10,
                       batch_size=8, lr=1e-4, ema_decay=0.99),
        "dmd": DMDConfig(**common, out_dir=str(run / "dmd"), init=str(run / "df.safetensors"),
                         teacher=str(run / "teacher.safetensors"), steps=500, max_minutes=10, batch_size=4, grad_accum=1,
                         lr=2e-5, critic_lr=2e-5, ema_decay=0.99),
    }


class VAEFrames(nn.Module):
    """A Wan VAE behind TAEHV's ``decode_video`` interface, so :class:`SyncNetReward` can score its frames."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def decode_video(self, latents: Tensor) -> Tensor:
        """Normalised latents ``[B, T, 16, h, w]`` -> RGB frames ``[B, 1 + 4(T-1), 3, H, W]`` in 0..1."""
        return self.vae.decode(latents.transpose(1, 2)).transpose(1, 2).add(1).div(2)


def build_trainer(stage: str, cfg: TrainConfig, dataset, *, vae=None, syncnet=None):
    """The trainer of ``stage``; for ``dmd`` with a SyncNet, the Re-DMD reward on ``vae``-decoded frames."""
    from ..training.diffusion_forcing import DiffusionForcingTrainer
    from ..training.dmd import DMDTrainer, SyncNetReward
    from ..training.teacher import TeacherTrainer

    trainer = {"teacher": TeacherTrainer, "df": DiffusionForcingTrainer, "dmd": DMDTrainer}[stage](cfg, dataset)
    if stage == "dmd" and syncnet is not None:
        if vae is None:
            raise ValueError("the SyncNet reward needs the VAE that decodes the student's latents")
        trainer.reward = SyncNetReward(syncnet, VAEFrames(vae))
    return trainer


def ship(exported: str | Path, dest: str | Path, **metadata: object) -> Path:
    """Copy an exported float32 DiT to ``dest`` as float16 safetensors (official flat layout).

    The metadata holds JSON ``preset``, ``config`` and the given entries (read with ``recipe.read_metadata``).
    """
    state = read_state_dict(exported)
    half = {k: v.half().contiguous() if v.is_floating_point() else v.contiguous() for k, v in state.items()}
    bad = [k for k, v in half.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{exported}: weights overflow float16 in {bad[:3]}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    card = {"preset": PRESET, "config": dataclasses.asdict(get_preset(PRESET))} | metadata
    meta = {k: json.dumps(v) for k, v in card.items()}
    save_file(half, str(dest), metadata=meta)
    return dest


def train_stage(stage: str, cfg: TrainConfig, dataset, run_dir: str | Path, *, vae=None, syncnet=None,
                log: Log = print) -> dict:
    """Train one stage, export its network to ``run_dir/<stage>.safetensors``; returns losses and throughput."""
    trainer = build_trainer(stage, cfg, dataset, vae=vae, syncnet=syncnet)
    start = time.monotonic()
    history = trainer.fit(log=log)
    seconds = time.monotonic() - start
    path = trainer.export(Path(run_dir) / f"{stage}.safetensors", "teacher" if stage == "teacher" else "student")
    report = {"stage": stage, "steps": len(history), "seconds": round(seconds, 1),
              "steps_per_s": len(history) / max(seconds, 1e-9), "threads": torch.get_num_threads(),
              "config": cfg.to_dict(), "history": history, "export": str(path)}
    (Path(run_dir) / f"{stage}_report.json").write_text(json.dumps(report))
    log(f"{stage}: {len(history)} steps in {seconds:.0f} s ({report['steps_per_s']:.3f} steps/s) -> {path}")
    return report
