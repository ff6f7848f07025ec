"""The demo DiT recipe: prepared dubbing clips, then teacher -> stage 1 (DF) -> stage 2 (DMD) with our trainers.

``python -m lipforcing_core train-demo-dit --stage prepare|teacher|df|dmd|all`` runs on CPU from the demo
VAE and SyncNet (``train-demo --stage vae|syncnet``) and writes ``demo_teacher.safetensors`` and
``demo_student.safetensors`` (official flat DiT layout, float16, preset ``demo``) into
``lipforcing_core/demo/weights/``; intermediate runs, exports and per-stage throughput go to ``--run-dir``.
``--stage eval`` dubs held-out clips with a student and reports mouth PSNR with and without the audio.

Training clips are *dubbing* pairs, the situation the model meets at inference: one identity with its
head motion says a source utterance (the unmasked ``ref_sequence`` and the mouth-masked video) and a
target utterance (the audio, and the ground-truth ``latents``). The renderer changes only the mouth
region between the two, so the target's mouth must come from the audio: copying the reference's mouth
is wrong. Masking follows the real pipeline: the binary pixel keep-mask greys the mouth (0 in [-1, 1])
before the VAE; the latent keep-mask is the bilinear resize of the mask to the latent grid, ``> 0.5``.
The text condition is a single zero row (the demo has no prompts; CFG's negative is zero audio).
"""

from __future__ import annotations

import argparse
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

from ..checkpoints import load_dit, read_state_dict
from ..config import STREAM_WINDOW, get_preset
from ..face.mask import load_mouth_mask
from ..sampling.schedule import STUDENT_T_LIST
from ..training.config import DFConfig, DMDConfig, TeacherConfig, TrainConfig
from ..training.data import Clip, ClipFolder, InMemoryClips, conditioning, save_clip
from ..training.rollout import self_rollout
from .audio_features import LogMelFeatures
from .dataset import clip_seeds
from .synthetic import make_clip, num_frames
from .recipe import STUDENT_FILE, TEACHER_FILE, WEIGHTS_DIR
from .vae_train import psnr

PRESET = "demo"
STAGES = ("prepare", "teacher", "df", "dmd")
TEXT_DIM = 4096
Log = Callable[[str], None]


# ------------------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class PrepareConfig:
    """How many dubbing clips to render, and their size: ``latent_frames`` latents = ``1 + 4(n-1)`` frames."""

    clips: int = 384
    latent_frames: int = 9  # 33 frames: 3 student chunks, enough for the 7-frame attention window to slide
    size: int = 64
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
    spf = target.sample_rate // 25
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
    """The demo recipe's trainer configs (small batches and larger learning rates than the paper's)."""
    run = Path(run_dir)
    common = {"preset": PRESET, "data": data, "save_every": 500, "log_every": 25, "grad_clip": 1.0}
    return {
        "teacher": TeacherConfig(**common, out_dir=str(run / "teacher"), steps=3000, batch_size=8, lr=3e-4,
                                 ema_decay=0.999, text_drop=0.0),
        "df": DFConfig(**common, out_dir=str(run / "df"), init=str(run / "teacher.safetensors"), steps=1000,
                       batch_size=8, lr=1e-4, ema_decay=0.99),
        "dmd": DMDConfig(**common, out_dir=str(run / "dmd"), init=str(run / "df.safetensors"),
                         teacher=str(run / "teacher.safetensors"), steps=300, batch_size=4, grad_accum=1,
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


# ------------------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def sample_student(student: nn.Module, batch: Clip, audio: Tensor | None, seed: int) -> Tensor:
    """The inference sampler on a batch: two steps per chunk, released window, seeded noise -> latents."""
    steps = len(STUDENT_T_LIST) - 1
    noise = torch.randn(steps, *batch["latents"].shape, generator=torch.Generator().manual_seed(seed))
    return self_rollout(student, noise.to(batch["latents"]), conditioning(batch), batch["text"], audio,
                        t_list=STUDENT_T_LIST, exit_step=steps - 1, spec=STREAM_WINDOW)


@torch.no_grad()
def evaluate_student(student: nn.Module, vae, cfg: PrepareConfig, seed: int = 0) -> dict[str, float]:
    """Dubbing on ``cfg``'s clips (use ``split="heldout"``), means over clips of PSNR in dB of decoded frames:

    ``psnr_mouth_db`` / ``psnr_mouth_silent_db``: the student's mouth region (the mask's generate area)
    against the ground-truth rendering, with the target audio / zero audio (the lip-sync gain is the
    difference); ``psnr_mouth_vae_db``: the VAE's own reconstruction there (the ceiling);
    ``psnr_mouth_source_db``: the un-dubbed source there (what copying the reference scores);
    ``psnr_outside_db``: the student's frames outside the mouth against the source (no compositing).
    """
    features, rows = LogMelFeatures(), []
    mouth = 1 - pixel_keep_mask(cfg.size)
    for i, seeds in enumerate(dubbing_seeds(cfg)):
        target, source, waveform = render_pair(seeds, cfg)
        batch = {k: v[None] for k, v in encode_pair(vae, features, target, source, waveform).items()}
        gen = sample_student(student, batch, batch["audio"], seed + i)
        silent = sample_student(student, batch, torch.zeros_like(batch["audio"]), seed + i)
        dubbed, muted, recon = vae.decode(torch.cat([gen, silent, batch["latents"]])).split(1)
        rows.append({"psnr_mouth_db": psnr(dubbed, target, mouth),
                     "psnr_mouth_silent_db": psnr(muted, target, mouth),
                     "psnr_mouth_vae_db": psnr(recon, target, mouth),
                     "psnr_mouth_source_db": psnr(source, target, mouth),
                     "psnr_outside_db": psnr(dubbed, source, 1 - mouth)})
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]} | {"clips": len(rows)}


# ------------------------------------------------------------------------------------------ CLI


def _parse_steps(items: list[str]) -> dict[str, int]:
    """``--steps N`` (every trained stage) and/or ``--steps stage=N`` -> {stage: N}."""
    out: dict[str, int] = {}
    for item in items:
        stage, sep, value = item.rpartition("=")
        if sep and stage not in STAGES[1:]:
            raise SystemExit(f"--steps {item!r}: stage must be one of {', '.join(STAGES[1:])}")
        for name in [stage] if sep else STAGES[1:]:
            out[name] = int(value)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stage", choices=(*STAGES, "all", "eval"), required=True,
                        help="prepare the clips, train one stage (from the previous stages' exports), all of them, "
                             "or eval: dub held-out clips with --student and write run-dir/eval.json")
    parser.add_argument("--steps", action="append", default=[], metavar="[STAGE=]N",
                        help="training steps of every stage, or of one stage (teacher=3000); repeatable")
    parser.add_argument("--clips", type=int, default=PrepareConfig.clips, help="training clips to prepare")
    parser.add_argument("--latent-frames", type=int, default=PrepareConfig.latent_frames)
    parser.add_argument("--seed", type=int, default=0, help="seed of the clip seeds (the trainers use their own)")
    parser.add_argument("--run-dir", type=Path, default=Path("runs/demo_dit"),
                        help="clips, checkpoints, float32 exports and per-stage reports")
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR,
                        help="where the float16 teacher and student are written")
    parser.add_argument("--vae", help="demo VAE weights (default: the shipped demo_vae.safetensors)")
    parser.add_argument("--syncnet", help="demo SyncNet weights for the stage-2 reward (default: the shipped one)")
    parser.add_argument("--no-reward", action="store_true", help="stage 2 without the SyncNet reward")
    parser.add_argument("--student", type=Path, default=STUDENT_FILE, help="student weights to evaluate")
    parser.add_argument("--eval-clips", type=int, default=16, help="held-out clips to dub in --stage eval")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")


def run(args: argparse.Namespace) -> int:
    from .recipe import SYNCNET_FILE, VAE_FILE, load_demo_syncnet, load_demo_vae

    torch.set_num_threads(args.threads)
    if args.stage == "eval":
        cfg = PrepareConfig(clips=args.eval_clips, latent_frames=args.latent_frames, split="heldout", seed=args.seed)
        student = load_dit(args.student, dtype=torch.float32)
        metrics = evaluate_student(student, load_demo_vae(args.vae or VAE_FILE), cfg)
        args.run_dir.mkdir(parents=True, exist_ok=True)
        (args.run_dir / "eval.json").write_text(json.dumps(metrics, indent=1))
        print(json.dumps(metrics, indent=1))
        return 0
    steps = _parse_steps(args.steps)
    stages = STAGES if args.stage == "all" else (args.stage,)
    data = args.run_dir / "data"
    if "prepare" in stages:
        prepare(load_demo_vae(args.vae or VAE_FILE), data,
                PrepareConfig(clips=args.clips, latent_frames=args.latent_frames, seed=args.seed))
    configs = stage_configs(str(data), args.run_dir)
    trained = [s for s in stages if s != "prepare"]
    dataset = InMemoryClips(list(ClipFolder(data))) if trained else None
    for stage in trained:
        cfg = dataclasses.replace(configs[stage], **({"steps": steps[stage]} if stage in steps else {}))
        vae = syncnet = None
        if stage == "dmd" and not args.no_reward:
            vae, syncnet = load_demo_vae(args.vae or VAE_FILE), load_demo_syncnet(args.syncnet or SYNCNET_FILE)
        report = train_stage(stage, cfg, dataset, args.run_dir, vae=vae, syncnet=syncnet)
        card = {"steps": report["steps"], "final": report["history"][-1], "seconds": report["seconds"]}
        if stage == "teacher":
            ship(report["export"], args.weights_dir / TEACHER_FILE.relative_to(WEIGHTS_DIR), train=card)
        elif stage == "dmd":
            ship(report["export"], args.weights_dir / STUDENT_FILE.relative_to(WEIGHTS_DIR), train=card)
    return 0
