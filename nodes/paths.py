"""Model folders and file choices: nodes can only name files ComfyUI already knows about.

Every file-valued input is a combo of ``folder_paths.get_filename_list(folder)`` and is resolved with
``folder_paths.get_full_path`` (which refuses ``..`` escapes), so a workflow cannot point a loader at
an arbitrary path on the server.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._comfy import folder_paths
from ._types import LipForcingInputError

SYNCNET_FOLDER = "syncnet"


def register_folder(name: str, default_path: str | Path | None = None, extra_extensions: set[str] = frozenset()) -> None:
    """Make ``name`` a model folder without clobbering paths from ``extra_model_paths.yaml``.

    Paths already configured stay first; ``default_path`` (``models/<name>`` if omitted) is appended
    only if missing, and the folder lists the usual weight-file extensions plus ``extra_extensions``.
    """
    default_path = str(default_path or os.path.join(folder_paths.models_dir, name))
    folder_paths.add_model_folder_path(name, default_path, is_default=False)
    folder, extensions = folder_paths.folder_names_and_paths[name]
    wanted = set(extensions) | folder_paths.supported_pt_extensions | set(extra_extensions)
    folder_paths.folder_names_and_paths[name] = (folder, wanted)


def register_model_folders() -> None:
    """Folders this pack adds to ComfyUI's (``diffusion_models``, ``vae``... already exist)."""
    register_folder(SYNCNET_FOLDER, extra_extensions={".model"})  # syncnet_python ships syncnet_v2.model


def choices(folder: str) -> list[str]:
    """File names offered by a loader's combo for ``folder``."""
    return folder_paths.get_filename_list(folder)


def model_path(folder: str, filename: str, input_name: str) -> str:
    """Full path of ``filename`` inside the ComfyUI model folder ``folder``."""
    path = folder_paths.get_full_path(folder, filename)
    if path is None:
        raise LipForcingInputError(input_name, f"'{filename}' is not a file in ComfyUI's models/{folder} folder.",
                                   f"Put the file in models/{folder} (or a path listed for '{folder}' in "
                                   "extra_model_paths.yaml) and refresh.")
    return path
