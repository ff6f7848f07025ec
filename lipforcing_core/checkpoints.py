"""Every on-disk weight format the pack accepts, read safely into one flat state dict.

Untrusted pickles (``.pth/.pt/.bin/.model``) are only ever opened with ``weights_only=True``
and memory-mapped, so reading a 28 GB checkpoint costs address space, not RAM.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

StateDict = dict[str, torch.Tensor]

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")


class CheckpointError(ValueError):
    """A weight file is missing, unreadable, or not the kind of model the caller asked for."""


def read_state_dict(path: str | Path, device: str = "cpu") -> StateDict:
    """Read a safetensors or torch-pickle file into a (possibly nested) mapping of tensors.

    Pickles are loaded with ``weights_only=True`` and ``mmap=True`` (zip-format files).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        return load_file(str(path), device=device)
    try:
        return torch.load(path, map_location=device, weights_only=True, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise CheckpointError(f"{path} is not a readable torch checkpoint: {err}") from err
        # Legacy (non-zip) pickles cannot be memory-mapped.
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a weight file"
        raise CheckpointError(f"{path} is not a readable torch checkpoint: {err}") from err
