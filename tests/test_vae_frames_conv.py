"""The Wan VAE's 2D-over-frames conv path (default on CPU) against the official Conv3d path."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from lipforcing_core.vae import load_wan_vae
from lipforcing_core.vae.wan_vae import CausalConv3d, FrameConv3d

TOL = 1e-4  # the golden README's tolerance for latents and decodes


@pytest.fixture(scope="module")
def vae(golden_root):
    return load_wan_vae(golden_root / "vae" / "weights.safetensors")


@pytest.fixture(scope="module")
def cases(golden_root):
    return load_file(str(golden_root / "vae" / "cases.safetensors"))


def test_default_path_follows_the_device():
    conv = FrameConv3d(4, 4, 1)
    assert conv.frames_conv is None  # automatic: stacked 2D taps on CPU, Conv3d elsewhere


@pytest.mark.parametrize("kernel,stride", [(3, 1), ((3, 1, 1), (2, 1, 1)), (1, 1), ((3, 1, 1), 1)])
def test_frames_conv_equals_conv3d(kernel, stride):
    torch.manual_seed(0)
    conv = FrameConv3d(5, 7, kernel, stride=stride)
    x = torch.randn(2, 5, 5, 12, 10)
    with torch.no_grad():
        ref = torch.nn.functional.conv3d(x, conv.weight, conv.bias, conv.stride)
        conv.frames_conv = True
        ours = conv(x)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize("history_frames", [0, 1, 2])
def test_causal_frames_conv_equals_conv3d(history_frames):
    torch.manual_seed(0)
    conv = CausalConv3d(6, 5, 3)
    x, history = torch.randn(1, 6, 4, 9, 8), torch.randn(1, 6, history_frames, 9, 8)
    hist = history if history_frames else None
    with torch.no_grad():
        conv.frames_conv = False
        ref = conv(x, hist)
        conv.frames_conv = True
        ours = conv(x, hist)
    assert (ours - ref).abs().max().item() < 1e-5


def test_frames_path_matches_conv3d_path_and_golden(vae, cases):
    """Whole encode / decode through both paths: each within the golden tolerance of the goldens."""
    results = {}
    with torch.no_grad():
        for flag in (True, False):
            vae.use_frames_conv(flag)
            results[flag] = vae.encode(cases["video"]), vae.decode(cases["latent"], clamp=False)
    vae.use_frames_conv(None)
    for i, name in enumerate(("latent", "decoded")):
        fast, official = results[True][i], results[False][i]
        assert fast.shape == official.shape == cases[name].shape
        assert fast.is_contiguous()  # callers get the usual layout whichever path ran
        assert (fast - official).abs().max().item() <= TOL
        assert (official - cases[name]).abs().max().item() <= TOL
        assert (fast - cases[name]).abs().max().item() <= TOL
