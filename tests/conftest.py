"""Shared test fixtures: the golden vectors and real media live in ``../shared`` beside the repo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIPFORCING_SHARED", REPO.parent / "shared"))


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (set LIPFORCING_SHARED to the folder holding golden/ and media/)")
    return path


@pytest.fixture(scope="session")
def golden_root() -> Path:
    return _require(SHARED / "golden", "golden vectors")


@pytest.fixture(scope="session")
def media_root() -> Path:
    return _require(SHARED / "media", "test media")


@pytest.fixture(scope="module")
def single_thread():
    """Small tensor ops: intra-op threads only add overhead on a shared 2-core runner."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def two_threads_no_grad():
    """Inference-only modules at 2 threads, the setting the DiT goldens were checked with."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    with torch.no_grad():
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dit_gold(golden_root):
    """``dit_gold(name)`` loads ``golden/dit/<name>.safetensors``."""
    from safetensors.torch import load_file

    return lambda name: load_file(golden_root / "dit" / f"{name}.safetensors")


@pytest.fixture(scope="module")
def golden_dit(dit_gold):
    """The tiny DiT with the golden weights (teacher and student share them)."""
    from lipforcing_core.config import get_preset
    from lipforcing_core.models.dit import LipForcingDiT

    net = LipForcingDiT(get_preset("tiny")).eval()
    net.load_state_dict(dit_gold("weights"), strict=True)
    return net


@pytest.fixture(scope="module")
def random_tiny_dit():
    """A seeded random tiny DiT whose norm and modulation weights are randomised too, so a skipped
    affine or modulation term changes its outputs."""
    from lipforcing_core.config import get_preset
    from lipforcing_core.models.dit import LipForcingDiT

    return LipForcingDiT(get_preset("tiny")).init_weights(torch.Generator().manual_seed(0), affine_std=0.3).eval()


@pytest.fixture(scope="module")
def golden_window_stream(dit_gold):
    """``golden_window_stream(model)``: final x0 latents of the golden windowed streaming case
    (``cases_C_stream_window``, the official two-step loop with the recorded noise) run on ``model``."""
    from lipforcing_core.config import STREAM_WINDOW
    from lipforcing_core.sampling.causal import CausalSampler, ReplayNoise
    from lipforcing_core.sampling.schedule import STUDENT_T_LIST

    inputs, case = dit_gold("inputs"), dit_gold("cases_C_stream_window")
    noise = case["noise"]
    frames = noise.shape[2]
    y, audio = inputs["cond.y"][:, :, :frames], inputs["cond.audio_emb"][:, :4 * frames - 3]

    def run(model):
        sampler = CausalSampler(model, STUDENT_T_LIST, STREAM_WINDOW)
        state = sampler.start(inputs["text.text_embeds"], audio, noise.shape[3:], frames)
        replay = ReplayNoise(noise, [case[f"chunk{k}.eps_renoise"] for k in range(frames // 3)])
        out = []
        for c0 in range(0, frames, 3):
            x0 = sampler.denoise(state, noise[:, :, c0:c0 + 3], y[:, :, c0:c0 + 3], replay, c0, {})
            sampler.commit(state, x0, y[:, :, c0:c0 + 3], c0, {})
            out.append(x0)
        return torch.cat(out, 2)

    return run
