"""Test double of ComfyUI's ``folder_paths``: model folders under one base directory.

Tests point it at a temporary folder with ``set_base_path`` (the real module takes
``--base-directory``); everything else mirrors the real functions the pack calls.
"""

from __future__ import annotations

import os
import tempfile

supported_pt_extensions: set[str] = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {}
models_dir = output_directory = input_directory = temp_directory = ""

MODEL_FOLDERS = ("checkpoints", "vae", "text_encoders", "diffusion_models", "vae_approx", "audio_encoders")


def set_base_path(base: str) -> None:
    """Double-only: lay out ComfyUI's folders under ``base`` (like ``--base-directory``)."""
    global models_dir, output_directory, input_directory, temp_directory
    models_dir = os.path.join(base, "models")
    output_directory = os.path.join(base, "output")
    input_directory = os.path.join(base, "input")
    temp_directory = os.path.join(base, "temp")
    folder_names_and_paths.clear()
    for name in MODEL_FOLDERS:
        folder_names_and_paths[name] = ([os.path.join(models_dir, name)], set(supported_pt_extensions))


set_base_path(os.path.join(tempfile.gettempdir(), "comfy_double"))


def get_output_directory() -> str:
    return output_directory


def get_input_directory() -> str:
    return input_directory


def get_temp_directory() -> str:
    return temp_directory


def annotated_filepath(name: str) -> tuple[str, str | None]:
    for suffix, base in (("[output]", output_directory), ("[input]", input_directory), ("[temp]", temp_directory)):
        if name.endswith(suffix):
            return name[: -len(suffix) - 1], base
    return name, None


def get_annotated_filepath(name: str, default_dir: str | None = None) -> str:
    name, base_dir = annotated_filepath(name)
    return os.path.join(base_dir or default_dir or input_directory, name)


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    if folder_name not in folder_names_and_paths:
        folder_names_and_paths[folder_name] = ([full_folder_path], set())
        return
    paths = folder_names_and_paths[folder_name][0]
    if full_folder_path in paths:
        if is_default and paths[0] != full_folder_path:
            paths.remove(full_folder_path)
            paths.insert(0, full_folder_path)
    elif is_default:
        paths.insert(0, full_folder_path)
    else:
        paths.append(full_folder_path)


def get_folder_paths(folder_name: str) -> list[str]:
    return folder_names_and_paths[folder_name][0][:]


def get_filename_list(folder_name: str) -> list[str]:
    paths, extensions = folder_names_and_paths[folder_name]
    found: set[str] = set()
    for root in paths:
        for dirpath, _dirs, files in os.walk(root, followlinks=True):
            for name in files:
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                if not extensions or os.path.splitext(rel)[-1].lower() in extensions:
                    found.add(rel)
    return sorted(found)


def get_full_path(folder_name: str, filename: str) -> str | None:
    if folder_name not in folder_names_and_paths:
        return None
    filename = os.path.relpath(os.path.join("/", filename), "/")
    for root in folder_names_and_paths[folder_name][0]:
        full_path = os.path.join(root, filename)
        if os.path.isfile(full_path):
            return full_path
    return None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    full_path = get_full_path(folder_name, filename)
    if full_path is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return full_path


def filter_files_content_types(files: list[str], content_types: list[str]) -> list[str]:
    import mimetypes

    kept = []
    for name in files:
        mime_type, _ = mimetypes.guess_type(name, strict=False)
        if mime_type and mime_type.split("/")[0] in content_types:
            kept.append(name)
    return kept


def get_save_image_path(filename_prefix: str, output_dir: str, image_width=0, image_height=0
                        ) -> tuple[str, str, int, str, str]:
    """(folder, file name, next counter, subfolder, prefix); refuses folders outside ``output_dir``."""
    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    filename = os.path.basename(os.path.normpath(filename_prefix))
    full_output_folder = os.path.join(output_dir, subfolder)
    if os.path.commonpath((output_dir, os.path.abspath(full_output_folder))) != output_dir:
        raise Exception("**** ERROR: Saving image outside the output folder is not allowed.")  # noqa: TRY002 (as ComfyUI)
    os.makedirs(full_output_folder, exist_ok=True)
    counters = [int(f[len(filename) + 1:].split("_")[0]) for f in os.listdir(full_output_folder)
                if f.startswith(filename + "_") and f[len(filename) + 1:].split("_")[0].isdigit()]
    return full_output_folder, filename, max(counters, default=0) + 1, subfolder, filename_prefix
