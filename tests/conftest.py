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
