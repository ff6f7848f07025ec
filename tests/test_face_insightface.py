"""The InsightFace backend's wrapper, with a stub ``insightface`` module replaying the golden
landmarks (as the golden generator did): official filters, RGB input, and the full aligner chain."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from safetensors.numpy import load_file

from lipforcing_core.face import FaceAligner, InsightFaceDetector


@pytest.fixture()
def golden_inputs(golden_root):
    root = golden_root / "face"
    return load_file(root / "inputs.safetensors"), load_file(root / "align.safetensors")


@pytest.fixture()
def stub_insightface(monkeypatch, tmp_path, golden_inputs):
    inp, _ = golden_inputs
    seen = []

    class FaceAnalysis:
        def __init__(self, name, root, providers, allowed_modules):
            assert allowed_modules == ["detection", "landmark_2d_106"]

        def prepare(self, ctx_id, det_size):
            assert det_size == (512, 512)

        def get(self, frame):
            seen.append(frame)
            k = next(i for i, f in enumerate(inp["frames"]) if np.array_equal(f, frame))
            real = types.SimpleNamespace(bbox=inp["det_bbox"][k], det_score=float(inp["det_score"][k]),
                                         landmark_2d_106=inp["landmarks106"][k])
            tiny = types.SimpleNamespace(bbox=np.array([0, 0, 40, 60], np.float32), det_score=0.99,
                                         landmark_2d_106=np.zeros((106, 2), np.float32))
            return [tiny, real]  # the 40x60 face fails the official size filter

    app = types.ModuleType("insightface.app")
    app.FaceAnalysis = FaceAnalysis
    monkeypatch.setitem(sys.modules, "insightface", types.ModuleType("insightface"))
    monkeypatch.setitem(sys.modules, "insightface.app", app)
    (tmp_path / "models" / "buffalo_l").mkdir(parents=True)
    (tmp_path / "models" / "buffalo_l" / "det_10g.onnx").write_bytes(b"stub")
    return tmp_path, seen


def test_insightface_chain_reproduces_golden(stub_insightface, golden_inputs):
    root, seen = stub_insightface
    inp, al = golden_inputs
    detector = InsightFaceDetector(root)
    faces = detector.detect(inp["frames"][0])
    assert len(faces) == 1 and seen[0] is not None and np.array_equal(seen[0], inp["frames"][0])  # RGB as given
    np.testing.assert_array_equal(faces[0].points3, inp["points3"][0])
    result = FaceAligner(detector).align(inp["frames"], name="golden")
    np.testing.assert_array_equal(result.transforms, al["M_used"])
    diff = np.abs(result.crops.astype(np.int16) - al["aligned512"])
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.005
