"""Command line front end: ``python -m lipforcing_core <command> ...``.

Each command lives in the module that owns its logic; that module exposes
``add_arguments(parser)`` and ``run(args) -> int``. Building the parser imports every command's
module (each adds its own options, so ``--help`` shows them all); ``import lipforcing_core``
alone stays cheap. Benchmarks and checkpoint inspection live in :mod:`lipforcing_core.tools`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import InputError

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "inspect": ("lipforcing_core.tools.inspect_checkpoint", "describe a DiT checkpoint file or preset (kind, preset, params, keys)"),
    "bench": ("lipforcing_core.tools.bench", "time the streaming student against the 50-step CFG teacher (JSON: fps, TTFF, memory, FLOPs)"),
    "demo": ("lipforcing_core.demo.command", "dub a rendered face to new speech with the bundled demo model (no download)"),
    "sync": ("lipforcing_core.sync", "lip-sync a video to an audio track with the streaming student (writes an mp4)"),
    "train": ("lipforcing_core.training.command", "train the teacher, the stage-1 DF or the stage-2 DMD student from a config file"),
    "train-demo": ("lipforcing_core.demo.train", "retrain every bundled demo model from scratch on CPU (VAE, SyncNet, clips, teacher, DF, DMD, eval)"),
    "analyze": ("lipforcing_core.training.analysis", "teacher ODE analysis: CFG vs no-CFG x0 per step (table + plot)"),
}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block): ``error: <prog>: <message>``, exit code 2."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m lipforcing_core", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the full traceback of expected errors too")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(cmd)
        cmd.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. Expected errors (:class:`~lipforcing_core.errors.InputError`, a missing input
    file, an output in the way) print one line ``error: ...`` on stderr and exit with code 2; a
    traceback means a bug (``--debug`` shows it for expected errors too)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with _one_line_warnings(enabled=not args.debug):
            return int(importlib.import_module(args._module).run(args) or 0)
    except (InputError, FileNotFoundError, FileExistsError) as err:
        if args.debug:
            raise
        parser.exit(2, f"error: {_one_line(err)}\n")
    except KeyboardInterrupt:
        parser.exit(130, "interrupted\n")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


@contextmanager
def _one_line_warnings(enabled: bool = True) -> Iterator[None]:
    """Show warnings as ``warning: <message>`` lines on stderr instead of Python's two-line form."""
    if not enabled:
        yield
        return

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {_one_line(message)}", file=file or sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield
