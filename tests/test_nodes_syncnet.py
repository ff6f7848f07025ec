"""SyncNet nodes on the golden random-weight SyncNet and its low-resolution clip."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_env  # first: puts the ComfyUI test double on sys.path

# isort: split
from lipforcing_pack.nodes import syncnet
from lipforcing_pack.nodes._types import LipForcingInputError

from lipforcing_core.syncnet.metrics import evaluate_sync


@pytest.fixture()
def model(tmp_path, golden_root):
    base = comfy_env.use_base(tmp_path)
    name = comfy_env.link_model(base, "syncnet", golden_root / "syncnet" / "syncnet_v2_random.safetensors")
    assert syncnet.SyncNetLoader.define_schema().inputs[0].options == sorted([name, *comfy_env.bundled("syncnet")])
    return syncnet.SyncNetLoader.execute(name).args[0]


@pytest.fixture(scope="module")
def clip(golden_root):
    from safetensors.torch import load_file

    data = load_file(str(golden_root / "syncnet" / "eval.safetensors"))
    faces = data["clip_frames_lowres_bgr"].flip(-1).float() / 255  # BGR -> RGB IMAGE
    audio = {"waveform": (data["clip_audio_int16"].float() / 32768)[None, None], "sample_rate": 16000}
    return faces, audio


def test_score_is_the_core_evaluation(model, clip):
    faces, audio = clip
    out = syncnet.SyncNetScore.execute(model, faces, audio, 25.0)
    lse_c, lse_d, offset, plot, summary = out.args
    expected = evaluate_sync(model.module, faces, audio["waveform"][0, 0], sample_rate=16000)
    assert (lse_c, lse_d, offset) == (pytest.approx(expected.lse_c), pytest.approx(expected.lse_d), expected.offset)
    assert isinstance(lse_c, float) and isinstance(offset, int)
    assert plot.ndim == 4 and plot.shape[0] == 1 and plot.shape[-1] == 3 and plot.dtype == torch.float32
    assert summary == out.ui["text"][0] and summary.startswith(f"LSE-C {expected.lse_c:.3f}  LSE-D {expected.lse_d:.3f}")


def test_score_explains_bad_inputs(model, clip):
    faces, audio = clip
    with pytest.raises(LipForcingInputError, match="needs 25 fps|25 fps"):
        syncnet.SyncNetScore.execute(model, faces, audio, 30.0)
    silent = {"waveform": torch.zeros_like(audio["waveform"]), "sample_rate": 16000}
    with pytest.raises(LipForcingInputError, match="silent"):
        syncnet.SyncNetScore.execute(model, faces, silent, 25.0)
    with pytest.raises(LipForcingInputError, match="too short"):
        syncnet.SyncNetScore.execute(model, faces[:4], audio, 25.0)


def test_demo_syncnet_is_bundled_and_scores_a_demo_clip(tmp_path):
    """With no file installed, the loader offers the demo SyncNet; it finds the ground truth in sync,
    and the same face with its own (source) speech much less so."""
    from lipforcing_pack.nodes.demo import DemoClip

    from lipforcing_core.demo.sync_model import SmallSyncNet

    comfy_env.use_base(tmp_path)
    assert syncnet.SyncNetLoader.define_schema().inputs[0].options == ["demo_syncnet.safetensors"]
    model = syncnet.SyncNetLoader.execute("demo_syncnet.safetensors").args[0]
    assert isinstance(model.module, SmallSyncNet)
    _, target_speech, truth, source_speech = DemoClip.execute(1_000_011, 1_000_012, 1_000_013, 2.0).args
    lse_c, lse_d, offset, *_ = syncnet.SyncNetScore.execute(model, truth, target_speech, 25.0).args
    assert offset == 0 and 0 <= lse_d < 2  # unit embeddings: distances lie in [0, 2]
    mismatched_c = syncnet.SyncNetScore.execute(model, truth, source_speech, 25.0).args[0]
    assert lse_c > mismatched_c
