"""Lip Forcing core library: models, sampling, audio, faces, metrics and training.

Never imports ComfyUI. The public names below are resolved on first use, so that
``import lipforcing_core`` stays cheap for the ComfyUI front end and the CLI.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS = {
    "CheckpointError": "checkpoints", "load_dit": "checkpoints", "read_state_dict": "checkpoints",
    "DiTConfig": "config", "CausalSpec": "config", "get_preset": "config",
    "LipForcingDiT": "models.dit",
    "LipSyncPipeline": "pipeline", "generation_length": "pipeline",
    "CausalSampler": "sampling.causal", "sample_teacher": "sampling.teacher", "cfg_scale_at": "sampling.teacher",
    "load_wan_vae": "vae", "load_taehv": "vae",
    "load_wav2vec2": "audio", "encode_audio": "audio",
    "FaceAligner": "face", "paste_back": "face", "load_mouth_mask": "face",
    "read_video": "video", "write_video": "video", "convert_fps": "video",
    "load_syncnet": "syncnet", "evaluate_sync": "syncnet", "sync_c_reward": "syncnet",
}

__all__ = sorted(_EXPORTS)


def lazy_getattr(package: str, exports: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package`` that imports ``exports[name]`` (a submodule) on first use."""

    def __getattr__(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f".{exports[name]}", package), name)

    return __getattr__


__getattr__ = lazy_getattr(__name__, _EXPORTS)
