"""Loaders picked by a weight file's metadata, so that a library loader can open files of architectures
defined in a higher layer (the demo's models) without importing that layer.

Files this project writes carry their architecture as a ``config`` dict in their safetensors metadata
(:func:`~lipforcing_core.checkpoints.read_metadata`). A higher layer states "a ``kind`` file whose
config describes a ``config_cls`` loads with ``load``" through :func:`register_loader`; a library
loader (e.g. :func:`~lipforcing_core.syncnet.load_syncnet`) asks :func:`find_loader` before reading
the file as its own format. A front end that must not import such a layer up front (ComfyUI start-up,
the CLI) names its module with :func:`add_plugin`; the module is imported at the first lookup.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from pathlib import Path

from torch import nn

from .checkpoints import CheckpointError, read_metadata

Loader = Callable[[str | Path], nn.Module]

_LOADERS: dict[str, list[tuple[type, Loader]]] = {}  # kind -> (config dataclass, loader), first match wins
_PLUGINS: list[str] = []  # modules that register loaders when imported


def register_loader(kind: str, config_cls: type, load: Loader) -> None:
    """``kind`` files whose metadata ``config`` holds only fields of the dataclass ``config_cls`` load with ``load``."""
    entries = _LOADERS.setdefault(kind, [])
    if all(cls is not config_cls for cls, _ in entries):
        entries.append((config_cls, load))


def add_plugin(module: str) -> None:
    """Import ``module`` (which calls :func:`register_loader` when imported) before the next lookup."""
    if module not in _PLUGINS:
        _PLUGINS.append(module)


def find_loader(kind: str, path: str | Path) -> Loader | None:
    """The registered loader for the ``kind`` file ``path``; None if its metadata holds no ``config``.

    Raises :class:`CheckpointError` when the file has a config that no loader of this kind takes
    (e.g. a VAE file given to the SyncNet loader).
    """
    for module in _PLUGINS:
        importlib.import_module(module)
    stored = read_metadata(path).get("config")
    if not isinstance(stored, dict):
        return None
    for config_cls, load in _LOADERS.get(kind, ()):
        if stored.keys() <= {f.name for f in dataclasses.fields(config_cls)}:
            return load
    known = ", ".join(cls.__name__ for cls, _ in _LOADERS.get(kind, ())) or "none registered"
    raise CheckpointError(f"{path}: its metadata config (fields {', '.join(sorted(stored))}) describes no {kind} "
                          f"model this installation loads (known configs: {known})")
