"""Training configurations of the three trainers, as dataclasses with the paper's defaults (docs/design.md §8).

A config is read from a JSON or YAML file (keys = field names, unknown keys are an error) and
can be overridden on the command line with ``--set field=value`` (value parsed as JSON when
possible). ``batch_size`` is always the *global* batch: with ``torchrun`` every rank takes an
equal slice, so a run gives the same numbers on any number of processes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..sampling.schedule import STUDENT_T_LIST
from ..sampling.teacher import SYNC_BAND

#: Stage-1 stochastic attention windows (local_attn_size, sink_size) in latent frames.
DF_WINDOWS = ((7, 1), (10, 1), (13, 1), (9, 3), (12, 3))
#: Modules OmniAvatar trains fully next to the LoRA adapters (they are new relative to Wan2.1).
LORA_FULL_MODULES = ("patch_embedding", "audio_proj", "audio_cond_projs")


def _tuples(value: Any) -> Any:
    """JSON/YAML lists -> (nested) tuples, the type of the sequence fields."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


@dataclass
class TrainConfig:
    """Fields common to every trainer."""

    preset: str = "tiny"
    data: str = ""  # folder of prepared clips (*.safetensors), see training.data
    out_dir: str = "runs/train"
    init: str = ""  # checkpoint of the trained network to start from ("" = random init)
    init_adapter: str = ""  # OmniAvatar LoRA adapter when ``init`` is the Wan2.1 base (shards/index/folder)
    resume: str = ""  # training checkpoint to resume (model, optimiser, EMA, step)
    steps: int = 1000
    max_minutes: float | None = None  # wall-clock budget: training stops early when it is used up
    batch_size: int = 1  # global batch over all ranks
    grad_accum: int = 1  # micro-batches per rank and step (memory only: the math is the same)
    seed: int = 0
    lr: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float = 10.0
    ema_decay: float = 0.0  # 0 disables the EMA copy
    lora_rank: int = 0  # 0 = full fine-tuning
    lora_alpha: float = 64.0
    lora_full_modules: tuple[str, ...] = LORA_FULL_MODULES
    mixed_precision: bool = False  # FSDP bf16 compute with fp32 master weights (GPU runs)
    activation_checkpointing: bool = False
    save_every: int = 500
    log_every: int = 10
    device: str = "cpu"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        names = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise InputError(f"unknown {cls.__name__} keys {unknown}; valid keys: {sorted(names)}")
        return cls(**{k: _tuples(v) for k, v in values.items()})

    @classmethod
    def load(cls, path: str | Path | None, overrides: list[str] = ()) -> "TrainConfig":
        """Read ``path`` (JSON or YAML; None = defaults) and apply ``key=value`` overrides."""
        values: dict[str, Any] = {}
        if path:
            text = Path(path).read_text()
            if str(path).endswith((".yaml", ".yml")):
                try:
                    import yaml
                except ImportError as err:
                    raise InputError(f"{path}: YAML configs need PyYAML (pip install pyyaml); "
                                     "or write the config as JSON") from err
                values = yaml.safe_load(text) or {}
            else:
                try:
                    values = json.loads(text)
                except json.JSONDecodeError as err:
                    raise InputError(f"{path}: not a valid JSON config ({err})") from err
        for item in overrides:
            key, sep, raw = item.partition("=")
            if not sep:
                raise InputError(f"override {item!r} must look like key=value")
            try:
                values[key] = json.loads(raw)
            except json.JSONDecodeError:
                values[key] = raw
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TeacherConfig(TrainConfig):
    """Bidirectional flow matching with conditioning dropout (for CFG at sampling time)."""

    shift: float = 5.0  # training times t = shift_time(u, shift), u ~ U(0, 1)
    audio_drop: float = 0.1  # probability of zero audio for a sample
    text_drop: float = 0.1  # probability of the negative (zero) text for a sample


@dataclass
class DFConfig(TrainConfig):
    """Stage 1: Diffusion-Forcing initialisation of the causal student."""

    steps: int = 5000
    batch_size: int = 16
    t_list: tuple[float, ...] = STUDENT_T_LIST
    windows: tuple[tuple[int, int], ...] = DF_WINDOWS
    chunk_size: int = 3
    dynamic_rope: bool = True


@dataclass
class DMDConfig(TrainConfig):
    """Stage 2: Self-Forcing DMD with Sync-Window CFG and the Re-DMD SyncNet reward."""

    teacher: str = ""  # frozen bidirectional teacher checkpoint (also the critic's init)
    teacher_adapter: str = ""  # OmniAvatar-LS adapter when ``teacher`` is the Wan2.1 base
    critic_init: str = ""  # critic start ("" = copy of the teacher)
    steps: int = 600
    batch_size: int = 16  # paper: 1 per GPU x 4 GPUs x 4 accumulation rounds
    grad_accum: int = 4
    lr: float = 2e-6
    critic_lr: float = 2e-6
    betas: tuple[float, float] = (0.0, 0.999)
    ema_decay: float = 0.9999
    student_update_every: int = 5
    t_list: tuple[float, ...] = STUDENT_T_LIST
    chunk_size: int = 3
    local_attn_size: int = 7
    sink_size: int = 1
    dynamic_rope: bool = True
    shift: float = 5.0  # DMD time t = shift_time(u, shift)
    t_range: tuple[float, float] = (0.001, 0.999)  # u range
    guidance_scale: float = 4.5
    sync_band: tuple[float, float] = SYNC_BAND
    reward_beta: float = 2.0
    syncnet: str = ""  # SyncNet v2 weights for the Re-DMD reward ("" = no reward)
    taehv: str = ""  # TAEHV weights to decode student latents for the reward
    critic_lora_rank: int = 0

    def __post_init__(self) -> None:
        if self.syncnet and not self.taehv:
            raise InputError("the SyncNet reward needs TAEHV weights to decode latents: set taehv=...")


CONFIGS: dict[str, type[TrainConfig]] = {"teacher": TeacherConfig, "df": DFConfig, "dmd": DMDConfig}
