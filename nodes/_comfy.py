"""The one place the pack imports ComfyUI.

Every node module takes ComfyUI's API from here, so the surface we depend on is a short,
reviewable list (mirrored by the test double in ``tests/comfy_double``).
"""

import folder_paths
from comfy import model_management
from comfy.model_patcher import ModelPatcher
from comfy.utils import ProgressBar
from comfy_api.latest import ComfyExtension, InputImpl, io

__all__ = ["ComfyExtension", "InputImpl", "ModelPatcher", "ProgressBar", "folder_paths", "io",
           "model_management"]
