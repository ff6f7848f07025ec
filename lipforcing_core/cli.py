"""Command line front end: ``python -m lipforcing_core <command> ...``.

Each command lives in the module that owns its logic; that module exposes
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported lazily so that
``--help`` and quick commands do not pay for importing every subsystem.
"""

from __future__ import annotations

import argparse
import importlib

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "inspect": ("lipforcing_core.inspect", "describe a DiT checkpoint file or preset (kind, preset, params, keys)"),
    "convert": ("lipforcing_core.tools.convert", "rewrite a DiT checkpoint as safetensors, bf16 or fp8 e4m3 with per-channel scales (streamed, atomic)"),
    "bench": ("lipforcing_core.bench", "time the streaming student against the 50-step CFG teacher (JSON: fps, TTFF, memory, FLOPs)"),
    "demo": ("lipforcing_core.demo.command", "dub a rendered face to new speech with the bundled demo model (no download)"),
    "sync": ("lipforcing_core.sync", "lip-sync a video to an audio track with the streaming student (writes an mp4)"),
    "train": ("lipforcing_core.training.command", "train the teacher, the stage-1 DF or stage-2 DMD student, or (train demo) every bundled demo model"),
    "analyze": ("lipforcing_core.training.analysis", "teacher ODE analysis: CFG vs no-CFG x0 per step (table + plot)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lipforcing_core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(cmd)
        cmd.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .checkpoints import CheckpointError

    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except (CheckpointError, FileNotFoundError, FileExistsError) as err:  # user-facing: no traceback
        parser.exit(2, f"error: {err}\n")
