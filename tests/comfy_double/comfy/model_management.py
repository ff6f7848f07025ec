"""Test double of ``comfy.model_management``: a CPU-only machine with an interrupt flag."""

from __future__ import annotations

import torch

interrupt_processing = False


class InterruptProcessingException(Exception):
    pass


def get_torch_device() -> torch.device:
    return torch.device("cpu")


def unet_offload_device() -> torch.device:
    return torch.device("cpu")


def intermediate_device() -> torch.device:
    return torch.device("cpu")


def vae_device() -> torch.device:
    return torch.device("cpu")


def vae_offload_device() -> torch.device:
    return torch.device("cpu")


def text_encoder_device() -> torch.device:
    return torch.device("cpu")


def text_encoder_offload_device() -> torch.device:
    return torch.device("cpu")


def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                    force_full_load=False) -> None:
    for patcher in models:
        patcher.model.to(patcher.load_device)
        patcher.model.device = patcher.load_device  # as ModelPatcher.load does


def soft_empty_cache(force=False) -> None:
    pass


def interrupt_current_processing(value=True) -> None:
    global interrupt_processing
    interrupt_processing = value


def processing_interrupted() -> bool:
    return interrupt_processing


def throw_exception_if_processing_interrupted() -> None:
    global interrupt_processing
    if interrupt_processing:
        interrupt_processing = False
        raise InterruptProcessingException()
