"""fp8 linears and block swap on the accelerator (skipped without it; ``LIPFORCING_TEST_DEVICE``, default cuda).

What the CPU tests cannot show: ``torch._scaled_mm`` is picked on fp8-capable GPUs and stays close
to the dequantising reference, the demo student in fp8 + bfloat16 on the GPU keeps 30 dB of the
float32 CPU clip, and block swap with pinned memory and a copy stream gives bit-identical clips.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch

from lipforcing_core.demo.dit_recipe import pixel_keep_mask
from lipforcing_core.demo.dub import dubbing_pair
from lipforcing_core.demo.evaluate import load_demo_models
from lipforcing_core.demo.vae_train import psnr
from lipforcing_core.models.block_swap import BlockSwap
from lipforcing_core.models.fp8 import Fp8Linear, scaled_mm_available, use_fp8_linears
from lipforcing_core.pipeline import LipSyncPipeline
from lipforcing_core.sampling.causal import SeededNoise


@pytest.fixture(scope="module")
def device() -> torch.device:
    dev = torch.device(os.environ.get("LIPFORCING_TEST_DEVICE", "cuda"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (LIPFORCING_TEST_DEVICE names another device to test)")
    return dev


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def demo():
    return load_demo_models()


@pytest.fixture(scope="module")
def pair():
    return dubbing_pair(3, 11, 12, duration_s=4.0)  # 25 latent frames: past the 7-frame window


def clip(demo, pair, student, device) -> torch.Tensor:
    pipe = LipSyncPipeline(student, copy.deepcopy(demo.vae).to(device))
    noise = SeededNoise(torch.Generator().manual_seed(0))  # CPU draws: the same noise on every device
    return pipe.run(pair.source, demo.features(pair.target_audio)[0], pixel_keep_mask(pair.source.shape[1]),
                    noise=noise).cpu()


def test_scaled_mm_is_chosen_where_the_gpu_has_fp8_matmul(device):
    capable = device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)
    assert scaled_mm_available(device) == capable
    torch.manual_seed(0)
    lin = Fp8Linear.from_linear(torch.nn.Linear(1536, 8960)).to(device, torch.bfloat16)
    x = torch.randn(2, 3072, 1536, device=device, dtype=torch.bfloat16)
    fast = lin(x).float()
    lin.matmul = "dequant"
    ref = lin(x).float()
    assert float((fast - ref).norm() / ref.norm()) < 0.05  # activations quantised per token to e4m3


def test_demo_student_fp8_bf16_on_device_keeps_30db(device, demo, pair):
    ref = clip(demo, pair, demo.student, torch.device("cpu"))
    fp8 = use_fp8_linears(copy.deepcopy(demo.student)).to(device, torch.bfloat16)
    out = clip(demo, pair, fp8, device)
    assert psnr(out, ref) >= 30


@pytest.mark.parametrize("fp8", [False, True])
def test_block_swap_on_device_is_bit_identical(device, demo, pair, fp8):
    student = copy.deepcopy(demo.student)
    if fp8:
        use_fp8_linears(student)
    student = student.to(device, torch.bfloat16)
    expected = clip(demo, pair, student, device)
    swap = BlockSwap(student.blocks, 4)
    hidden = swap.hidden[len(student.blocks) - 1]
    assert all(h.host.device.type == "cpu" and (device.type != "cuda" or h.host.is_pinned()) for h in hidden)
    got = clip(demo, pair, student, device)
    assert torch.equal(got, expected)
