"""Golden face geometry (shared/golden/face): points, matrices, crops, alpha and paste-back results."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from lipforcing_core.face.align import BiasSmoother, align_points, invert_affine, similarity
from lipforcing_core.face.detect import points3_from_106
from lipforcing_core.face.mask import load_mouth_mask
from lipforcing_core.face.paste import mouth_composite, paste_face


@pytest.fixture(scope="module")
def golden(golden_root, media_root):
    root = golden_root / "face"
    data = {name: load_file(root / f"{name}.safetensors") for name in ("inputs", "align", "paste")}
    data["mask"] = load_mouth_mask(media_root / "latentsync_mask.png")
    return data


def test_points_and_matrices(golden):
    inp, al = golden["inputs"], golden["align"]
    points = np.stack([points3_from_106(lmk) for lmk in inp["landmarks106"]])
    np.testing.assert_array_equal(points, inp["points3"])  # includes the half-to-even tie in frame 2
    smoother = BiasSmoother()
    for k, p in enumerate(points):
        m, raw = similarity(p)
        np.testing.assert_allclose(m[:, :2], al["M_unsmoothed"][k, :, :2], atol=1e-5)
        np.testing.assert_allclose(m[:, 2], al["M_unsmoothed"][k, :, 2], atol=2e-3)
        np.testing.assert_allclose(raw, al["bias_raw"][k], atol=1e-5)
        np.testing.assert_allclose(smoother(raw), al["bias"][k], atol=1e-5)


def test_aligned_crops(golden):
    inp, al = golden["inputs"], golden["align"]
    result = align_points(inp["frames"], list(inp["points3"]))
    assert result.has_face.all()
    np.testing.assert_array_equal(result.transforms, al["M_used"])  # exact float16 matrices
    m_inv = np.stack([invert_affine(m).astype(np.float32) for m in result.transforms])
    np.testing.assert_allclose(m_inv, al["M_inv"], atol=1e-4)
    diff = np.abs(result.crops.astype(np.int16) - al["aligned512"])
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.005


@pytest.mark.parametrize("case", ["identity", "gen"])
def test_paste_back(golden, case):
    inp, al, pa, mask = golden["inputs"], golden["align"], golden["paste"], golden["mask"]
    y0, y1, x0, x1 = pa["roi"]
    m = torch.as_tensor(mask, dtype=torch.float32)
    for k in range(len(inp["frames"])):
        crop = al["aligned512"][k]
        a = torch.from_numpy(crop).permute(2, 0, 1).float() / 255
        if case == "identity":
            face = mouth_composite(crop, crop, mask)
        else:  # the README's test "generated" face: mouth inverted, the rest slightly dimmed
            face = torch.where(m < 0.5, 1 - a, 0.9 * a + 0.05) * (1 - m) + a * m
        frame = inp["frames"][k]
        result, alpha = paste_face(frame, face, al["M_used"][k])
        np.testing.assert_allclose(alpha[y0:y1, x0:x1], pa["alpha_roi"][k], atol=1e-4)
        diff = np.abs(result[y0:y1, x0:x1].astype(np.int16) - pa[f"result_{case}_roi"][k])
        assert diff.max() <= 2 and (diff > 0).mean() <= 0.005
        outside = result.copy()
        outside[y0:y1, x0:x1] = frame[y0:y1, x0:x1]
        np.testing.assert_array_equal(outside, frame)


def test_full_face_channel_sums(golden_root, golden):
    """Full-face mode (no mask) is stored only as ROI channel sums: allow the README's tolerance of
    at most 2 levels on 0.5 % of the ROI values."""
    per_frame = json.loads((golden_root / "face" / "meta.json").read_text())["per_frame"]
    inp, al, pa = golden["inputs"], golden["align"], golden["paste"]
    y0, y1, x0, x1 = pa["roi"]
    m = torch.as_tensor(golden["mask"], dtype=torch.float32)
    budget = 2 * 0.005 * (y1 - y0) * (x1 - x0) * 3
    for k in range(len(inp["frames"])):
        a = torch.from_numpy(al["aligned512"][k]).permute(2, 0, 1).float() / 255
        result, _ = paste_face(inp["frames"][k], torch.where(m < 0.5, 1 - a, 0.9 * a + 0.05), al["M_used"][k])
        sums = result[y0:y1, x0:x1].reshape(-1, 3).sum(0)
        assert np.abs(sums - per_frame[k]["result_roi_channel_sums"]["gen_fullface"]).sum() <= budget
