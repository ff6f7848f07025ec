"""``python -m lipforcing_core train <teacher|df|dmd>``: run a trainer from a config file (also under
torchrun). The bundled demo models have their own command, ``train-demo``.

Examples::

    python -m lipforcing_core train df --config df.json --set steps=100 --export student_df.safetensors
    torchrun --nproc_per_node=4 -m lipforcing_core train dmd --config dmd.yaml --set mixed_precision=true
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import InputError
from .config import CONFIGS

TRAINERS = {"teacher": ("teacher", "TeacherTrainer", "teacher"),
            "df": ("diffusion_forcing", "DiffusionForcingTrainer", "student"),
            "dmd": ("dmd", "DMDTrainer", "student")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stage", choices=sorted(TRAINERS), help="teacher, df (stage 1) or dmd (stage 2)")
    parser.add_argument("--config", help="JSON or YAML file with config fields (defaults: the paper's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config field (value parsed as JSON when possible); repeatable")
    parser.add_argument("--history", help="write the per-step losses (global-batch means) to this JSON file")
    parser.add_argument("--export", help="after training, write the merged network in the official flat layout")


def run(args: argparse.Namespace) -> int:
    import importlib

    from .data import ClipFolder

    cfg = CONFIGS[args.stage].load(args.config, args.overrides)
    if not cfg.data:
        raise InputError("no training data: set data=<folder of prepared *.safetensors clips> in the config or --set")
    module, cls_name, net = TRAINERS[args.stage]
    trainer = getattr(importlib.import_module(f"{__package__}.{module}"), cls_name)(cfg, ClipFolder(cfg.data))
    history = trainer.fit()
    if args.history and trainer.env.is_main:
        Path(args.history).write_text(json.dumps(history))
    if args.export:
        trainer.export(args.export, net)
    if trainer.env.sharded:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0
