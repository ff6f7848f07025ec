"""The LatentSync mouth mask on the aligned face (1 = keep the original, 0 = mouth region to generate).

Either load a user's ``mask.png`` (LatentSync's 256x256 file) or draw the same geometry procedurally,
so nothing has to be downloaded. Both go through the official preparation: LANCZOS4 resize to the
aligned size as uint8 (clipping the ringing), then /255 in float64.

Procedural geometry, measured on LatentSync's ``mask.png`` (256x256 pixel grid, rows/cols 0-based):
the mouth region is the lower half of an ellipse centred at (x=128, y=131) with semi-axes 119.5 x 111.5
(rows 131..242), joined to a full-width band (cols 9..247) for rows 128..131, plus two cheek blocks
(cols 9..77 and 178..246, rows 95..127) that leave the nose strip between them untouched.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

MASK_GRID = 256  # the LatentSync mask's own resolution: masks at other sizes are resized from it


def _procedural_mask_256() -> np.ndarray:
    """uint8 [256,256] with 0 in the mouth region and 255 elsewhere (see module docstring)."""
    ys, xs = np.mgrid[0:MASK_GRID, 0:MASK_GRID].astype(np.float64)
    cx, cy, ax, by = 128.0, 131.0, 119.5, 111.5
    ellipse = (((xs - cx) / ax) ** 2 + ((ys - cy) / by) ** 2 <= 1.0) & (ys >= cy)
    band = (ys >= 128) & (ys <= cy) & (xs >= 9) & (xs <= 247)
    cheeks = (ys >= 95) & (ys <= 127) & (((xs >= 9) & (xs <= 77)) | ((xs >= 178) & (xs <= 246)))
    return np.where(ellipse | band | cheeks, 0, 255).astype(np.uint8)


def read_mask_png(path: str | Path) -> np.ndarray:
    """uint8 [H,W] channel 0 of a mask image (RGB order, as the official BGR->RGB read)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"mouth mask {path!s}: not found or not a readable image (expected e.g. LatentSync's mask.png)")
    return image[..., 2]  # BGR -> RGB channel 0


def load_mouth_mask(path: str | Path | None = None, size: int = 512) -> np.ndarray:
    """Mouth mask [size,size] float64 in [0,1], 1 = keep original. ``path=None`` -> built-in mask."""
    base = _procedural_mask_256() if path is None else read_mask_png(path)
    resized = cv2.resize(base, (size, size), interpolation=cv2.INTER_LANCZOS4)
    return resized.astype(np.float64) / 255.0
