"""Model folders and file choices: nodes can only name files ComfyUI already knows about.

Every file-valued input is a combo of ``folder_paths.get_filename_list(folder)`` and is resolved with
``folder_paths.get_full_path`` (which refuses ``..`` escapes), so a workflow cannot point a loader at
an arbitrary path on the server.
"""

from __future__ import annotations

import os
from pathlib import Path

from lipforcing_core.demo.constants import LOADERS_MODULE, WEIGHTS_DIR
from lipforcing_core.registry import add_plugin

from ._comfy import folder_paths
from ._types import LipForcingInputError

SYNCNET_FOLDER = "syncnet"
TEXT_FOLDER = "text_embeddings"  # precomputed UMT5 prompt embeddings
INSIGHTFACE_FOLDER = "insightface"  # the InsightFace root other ComfyUI packs use (holds models/buffalo_l)
DEMO_FOLDERS = ("diffusion_models", "vae", SYNCNET_FOLDER)  # bundled demo weights, one subfolder of WEIGHTS_DIR each


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
    register_folder(INSIGHTFACE_FOLDER)
    register_folder(TEXT_FOLDER)
    register_demo_folders()


def register_demo_folders() -> None:
    """List the bundled demo weights in the normal loaders: ``WEIGHTS_DIR/<folder>`` becomes the last
    path of ``<folder>``, after ``models/<folder>`` and any ``extra_model_paths.yaml`` paths, so a
    user's file of the same name wins. The demo's loaders are imported when a file is first loaded,
    not at start-up."""
    for folder in DEMO_FOLDERS:
        folder_paths.add_model_folder_path(folder, str(WEIGHTS_DIR / folder), is_default=False)
    add_plugin(LOADERS_MODULE)


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


def input_files(content_type: str) -> list[str]:
    """Files of one content type ("image", "video", "audio") in ComfyUI's input folder, like LoadImage lists them."""
    folder = folder_paths.get_input_directory()
    if not os.path.isdir(folder):
        return []
    files = [f for f in os.listdir(folder) if os.path.isfile(os.path.join(folder, f))]
    return sorted(folder_paths.filter_files_content_types(files, [content_type]))


def input_path(name: str, input_name: str) -> str:
    """Full path of an input-folder file (``name [output]``/``[temp]`` annotations allowed), never outside them."""
    path = os.path.realpath(folder_paths.get_annotated_filepath(name))
    roots = [folder_paths.get_input_directory(), folder_paths.get_output_directory(), folder_paths.get_temp_directory()]
    inside = any(os.path.commonpath([path, os.path.realpath(root)]) == os.path.realpath(root) for root in roots)
    if not inside or not os.path.isfile(path):
        raise LipForcingInputError(input_name, f"'{name}' is not a file in ComfyUI's input folder.",
                                   "Upload it (or copy it into ComfyUI/input) and pick it from the list.")
    return path
