"""Core ``nn.Module``s handed to ComfyUI's memory manager, tagged with what kind of model they are.

A ``ManagedModel`` is the value that flows along our model sockets: a ``ModelPatcher`` (so ComfyUI
can load it onto the GPU and offload it when another model needs the memory) plus the model kind,
which lets a node reject a wrong model with a readable message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lipforcing_core.checkpoints import CheckpointError

from ._comfy import ModelPatcher, model_management
from ._types import LipForcingInputError
from .paths import model_path

# model kind -> (load device, offload device) as ComfyUI picks them for that role
_DEVICES = {
    "dit": (model_management.get_torch_device, model_management.unet_offload_device),
    "vae": (model_management.vae_device, model_management.vae_offload_device),
    "taew": (model_management.vae_device, model_management.vae_offload_device),
    "audio_encoder": (model_management.text_encoder_device, model_management.text_encoder_offload_device),
    "syncnet": (model_management.get_torch_device, model_management.unet_offload_device),
}

KIND_NAMES = {
    "dit": "a Lip Forcing diffusion model",
    "vae": "a Wan2.1 video VAE",
    "taew": "a tiny video decoder (TAEHV taew2_1)",
    "audio_encoder": "an audio encoder (wav2vec2)",
    "syncnet": "a SyncNet model",
}


class Holder(torch.nn.Module):
    """What the ``ModelPatcher`` manages: the core module as a child, plus a plain ``device``
    attribute that ComfyUI writes on every load/offload (core modules may expose ``device`` as a
    read-only property, which ComfyUI cannot assign)."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self.device = None


@dataclass
class ManagedModel:
    patcher: ModelPatcher
    kind: str
    filename: str
    attention: str = "auto"  # the DiT's attention backend (lipforcing_core.models.attention)

    @property
    def module(self) -> torch.nn.Module:
        return self.patcher.model.inner

    @property
    def load_device(self) -> torch.device:
        return self.patcher.load_device

    def on_device(self) -> torch.nn.Module:
        """Ask ComfyUI to load the weights onto the compute device (offloading others) and return the module."""
        return load_together([self])[0]


def load_together(models: list[ManagedModel]) -> list[torch.nn.Module]:
    """Load several models in one request, so ComfyUI does not offload one to make room for the next."""
    model_management.load_models_gpu([m.patcher for m in models])
    return [m.module for m in models]


def manage(module: torch.nn.Module, kind: str, filename: str) -> ManagedModel:
    """Wrap a loaded (CPU) core module for ComfyUI's memory manager."""
    load_device, offload_device = (pick() for pick in _DEVICES[kind])
    module.eval().requires_grad_(False)
    patcher = ModelPatcher(Holder(module), load_device=load_device, offload_device=offload_device)
    return ManagedModel(patcher, kind, filename)


def reserve_working_memory(managed: ManagedModel, extra_bytes: int) -> None:
    """Count ``extra_bytes`` of device memory the model needs besides its weights (e.g. block-swap
    buffers) into its size, so ComfyUI frees that much more (offloading other models) when loading it."""
    managed.patcher.size = managed.patcher.model_size() + extra_bytes


def load_managed(kind: str, folder: str, filename: str, input_name: str,
                 load: Callable[[str], torch.nn.Module]) -> ManagedModel:
    """Resolve ``filename`` in a ComfyUI model folder, load it with a core loader, wrap it.

    A file that is not this kind of model (the core raises ``CheckpointError``) becomes an error
    that names the input, the file and what was expected.
    """
    path = model_path(folder, filename, input_name)
    try:
        module = load(path)
    except CheckpointError as err:
        raise LipForcingInputError(input_name, f"'{filename}' is not {KIND_NAMES[kind]}: {err}",
                                   "Pick the matching file for this loader.") from err
    return manage(module, kind, filename)


def expect(value: object, kind: str, input_name: str) -> ManagedModel:
    """The ``ManagedModel`` wired into ``input_name``, checked to be of ``kind``."""
    if not isinstance(value, ManagedModel) or value.kind != kind:
        got = KIND_NAMES.get(getattr(value, "kind", None), type(value).__name__)
        raise LipForcingInputError(input_name, f"expected {KIND_NAMES[kind]}, got {got}.",
                                   "Wire the output of the matching Lip Forcing loader node.")
    return value
