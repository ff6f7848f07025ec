"""Progress reporting: one ComfyUI ``ProgressBar`` step per unit of work, with a preview frame.

Each step first checks ComfyUI's interrupt flag, so pressing Cancel stops a long node between two
chunks instead of after the whole clip.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ._comfy import ProgressBar, model_management

PREVIEW_SIZE = 512  # ComfyUI's default --preview-size


class Progress:
    def __init__(self, total: int):
        self.bar = ProgressBar(total)

    def step(self, done: int, preview: np.ndarray | None = None) -> None:
        """Report ``done`` units finished; ``preview`` is a uint8 RGB frame ``[H,W,3]`` to show."""
        model_management.throw_exception_if_processing_interrupted()
        image = None if preview is None else ("JPEG", Image.fromarray(np.ascontiguousarray(preview)), PREVIEW_SIZE)
        self.bar.update_absolute(done, preview=image)
