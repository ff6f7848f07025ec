"""Mouth mask: the PNG path matches the golden hash; the built-in mask reproduces its geometry."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from lipforcing_core.face.mask import load_mouth_mask


def test_png_mask_matches_golden(golden_root, media_root):
    meta = json.loads((golden_root / "face" / "meta.json").read_text())["mask512"]
    mask = load_mouth_mask(media_root / "latentsync_mask.png")
    as_uint8 = np.round(mask * 255).astype(np.uint8)
    assert hashlib.sha256(as_uint8.tobytes()).hexdigest() == meta["sha256_uint8_ch0"]
    assert int((mask < 0.5).sum()) == meta["n_below_half"]


@pytest.mark.parametrize("size", [256, 512])
def test_builtin_mask_geometry(media_root, size):
    png = load_mouth_mask(media_root / "latentsync_mask.png", size) < 0.5
    built = load_mouth_mask(None, size) < 0.5
    iou = (png & built).sum() / (png | built).sum()
    assert iou >= 0.95
    assert built.shape == (size, size) and built[size // 4, size // 2] == 0  # upper face kept


def test_missing_mask_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="mouth mask"):
        load_mouth_mask(tmp_path / "nope.png")
