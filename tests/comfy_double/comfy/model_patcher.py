"""Test double of ``comfy.model_patcher.ModelPatcher``: holds a module and its two devices."""

from __future__ import annotations

import torch


class ModelPatcher:
    def __init__(self, model: torch.nn.Module, load_device, offload_device, size=0, weight_inplace_update=False):
        self.size = size
        self.model = model
        self.load_device = load_device
        self.offload_device = offload_device
        if not hasattr(model, "device") or model.device is None:
            model.device = offload_device  # ComfyUI assigns this attribute again on every load/offload

    def model_size(self) -> int:
        if self.size <= 0:
            self.size = sum(t.numel() * t.element_size() for t in self.model.state_dict().values())
        return self.size
