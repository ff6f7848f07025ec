"""The demo clip node: procedural dubbing pairs as ComfyUI IMAGE/AUDIO values."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_env  # noqa: F401  (first: puts the ComfyUI test double on sys.path)

# isort: split
from comfy_executor import Executor, WorkflowError
from lipforcing_pack.nodes import demo
from lipforcing_pack.nodes._types import LipForcingInputError

from lipforcing_core.demo.dub import dubbing_pair


def test_clip_is_the_core_dubbing_pair():
    source, target_speech, truth, source_speech = demo.DemoClip.execute(1_000_001, 1_000_002, 1_000_003, 1.0).args
    pair = dubbing_pair(1_000_001, 1_000_002, 1_000_003, 1.0, 64)
    assert source.shape == truth.shape == (25, 64, 64, 3) and source.dtype == torch.float32
    torch.testing.assert_close(source, pair.source, rtol=0, atol=0)
    torch.testing.assert_close(truth, pair.target, rtol=0, atol=0)
    assert not torch.equal(source, truth)  # same face and motion, another utterance
    for audio, expected in ((target_speech, pair.target_audio), (source_speech, pair.source_audio)):
        assert audio["sample_rate"] == 16000 and audio["waveform"].shape == (1, 1, 25 * 640)
        torch.testing.assert_close(audio["waveform"][0, 0], expected, rtol=0, atol=0)


def test_schema_documents_every_input():
    schema = demo.DemoClip.define_schema()
    assert schema.category == "LipForcing/demo"
    assert all(spec.tooltip for spec in schema.inputs)
    assert [o.io_type for o in schema.outputs] == ["IMAGE", "AUDIO", "IMAGE", "AUDIO"]
    assert all(spec.default >= 1_000_000 for spec in schema.inputs[:3])  # held-out seeds by default


def test_bad_inputs_are_explained():
    with pytest.raises(LipForcingInputError, match="'target_seed': .*same utterance"):
        demo.DemoClip.execute(1_000_001, 1_000_002, 1_000_002, 1.0)
    workflow = {"1": {"class_type": "LipForcingDemoClip", "inputs": {
        "identity_seed": 1, "source_seed": 2, "target_seed": 3, "duration_s": 0.1}}}
    with pytest.raises(WorkflowError, match=r"'duration_s': 0.1 is outside \[0.4, 60.0\]"):
        Executor(demo.NODES).validate(workflow)
