"""The accelerator paths agree with the CPU reference, which the golden tests pin.

Also what the CPU tests of fp8 linears and block swap cannot show: ``torch._scaled_mm`` is picked on
fp8-capable GPUs, and block swap with pinned memory and a copy stream gives bit-identical clips.

On CUDA the VAE runs the official Conv3d instead of the CPU's stacked-taps 2D convolutions, the
attention may run fused kernels, and ``sync`` puts the DiT in bfloat16. Here every such path runs
on the same weights and the same noise (drawn on the CPU) as the CPU float32 reference: float32
must agree to kernel rounding (TF32 off), bfloat16 within a stated tolerance. Skipped without the
device: ``LIPFORCING_TEST_DEVICE`` names it (default ``cuda``).
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
from lipforcing_core.pipeline import LipSyncPipeline, teacher_clip
from lipforcing_core.sampling.causal import SeededNoise
from lipforcing_core.syncnet.model import SyncNetV2
from lipforcing_core.vae.taehv import TAEHV
from lipforcing_core.vae.wan_vae import WanVAE, WanVAEConfig

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def device() -> torch.device:
    dev = torch.device(os.environ.get("LIPFORCING_TEST_DEVICE", "cuda"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (LIPFORCING_TEST_DEVICE names another device to test)")
    return dev


@pytest.fixture(autouse=True)
def exact_fp32():
    """TF32 matmuls/convolutions would make float32 on CUDA differ at the 1e-3 level."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    with torch.no_grad():
        yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(scope="module")
def demo(device):
    return load_demo_models(with_teacher=True)


@pytest.fixture(scope="module")
def pair():
    """4 s: 25 latent frames, more than the 7-frame attention window, so the rolling KV cache is used."""
    return dubbing_pair(3, 11, 12, duration_s=4.0)


def on(module: torch.nn.Module, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A copy of ``module`` on ``device`` (the CPU reference keeps its own)."""
    return copy.deepcopy(module).to(device, dtype)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float().cpu(), b.float().cpu()
    return float((a - b).norm() / b.norm())


def student_frames(demo, pair, device: torch.device, dtype: torch.dtype,
                   student: torch.nn.Module | None = None) -> torch.Tensor:
    """The demo clip streamed on ``device``: by a copy of the demo student in ``dtype``, or by ``student``."""
    pipe = LipSyncPipeline(student if student is not None else on(demo.student, device, dtype), on(demo.vae, device))
    feats = demo.features(pair.target_audio)[0]
    noise = SeededNoise(torch.Generator().manual_seed(0))  # CPU draws: the same noise on every device
    return pipe.run(pair.source, feats, pixel_keep_mask(pair.source.shape[1]), noise=noise).cpu()


@pytest.fixture(scope="module")
def cpu_student(demo, pair):
    with torch.no_grad():
        return student_frames(demo, pair, CPU, torch.float32)


def test_streaming_student_fp32_matches_cpu(device, demo, pair, cpu_student):
    out = student_frames(demo, pair, device, torch.float32)
    assert out.shape == cpu_student.shape
    torch.testing.assert_close(out, cpu_student, atol=2e-3, rtol=0)


def test_streaming_student_bf16_stays_close(device, demo, pair, cpu_student):
    out = student_frames(demo, pair, device, torch.bfloat16)
    assert psnr(out, cpu_student) > 30, "the bf16 DiT drifted from the fp32 reference"


def test_teacher_clip_matches_cpu(device, demo, pair):
    frames, n = pair.source[:33], 33
    feats, keep = demo.features(pair.target_audio)[0][:n], pixel_keep_mask(pair.source.shape[1])
    ref = teacher_clip(demo.teacher, demo.vae, frames, feats, keep, steps=4, seed=torch.Generator().manual_seed(0))
    out = teacher_clip(on(demo.teacher, device), on(demo.vae, device), frames, feats, keep, steps=4,
                       seed=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.cpu(), ref, atol=2e-3, rtol=0)


def test_wan2_1_vae_conv3d_matches_cpu_frames_conv(device):
    torch.manual_seed(0)
    vae = WanVAE(WanVAEConfig()).eval()  # the full Wan2.1 width, random weights
    video = torch.rand(1, 3, 9, 64, 64) * 2 - 1
    latent = vae.encode(video)
    out = on(vae, device)
    assert rel_err(out.encode(video.to(device)), latent) < 1e-4
    assert rel_err(out.decode(latent.to(device)), vae.decode(latent)) < 1e-4
    half = on(vae, device, torch.bfloat16)
    assert rel_err(half.encode(video.to(device, torch.bfloat16)), latent) < 5e-2


def test_taehv_matches_cpu(device):
    torch.manual_seed(0)
    tae = TAEHV().eval()
    latent = torch.randn(1, 3, 16, 8, 8)  # [N, T, C, h, w]
    ref = tae.decode_video(latent)
    assert rel_err(on(tae, device).decode_video(latent.to(device)), ref) < 1e-4


def test_syncnet_v2_matches_cpu(device):
    torch.manual_seed(0)
    net = SyncNetV2().eval()
    lips, mfcc = torch.rand(2, 3, 5, 224, 224) * 255, torch.randn(2, 1, 13, 20)
    ref = net.forward_lip(lips), net.forward_aud(mfcc)
    gpu = on(net, device)
    assert rel_err(gpu.forward_lip(lips.to(device)), ref[0]) < 1e-4
    assert rel_err(gpu.forward_aud(mfcc.to(device)), ref[1]) < 1e-4



def test_fp8_linear_uses_scaled_mm_where_the_gpu_has_fp8_matmul(device):
    capable = device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)
    assert scaled_mm_available(device) == capable
    torch.manual_seed(0)
    lin = Fp8Linear.from_linear(torch.nn.Linear(1536, 8960)).to(device, torch.bfloat16)
    x = torch.randn(2, 3072, 1536, device=device, dtype=torch.bfloat16)
    fast = lin(x).float()
    lin.matmul = "dequant"
    ref = lin(x).float()
    assert rel_err(fast, ref) < 0.05  # activations quantised per token to e4m3


def test_streaming_student_fp8_bf16_keeps_30db(device, demo, pair, cpu_student):
    student = use_fp8_linears(copy.deepcopy(demo.student)).to(device, torch.bfloat16)
    out = student_frames(demo, pair, device, torch.bfloat16, student)
    assert psnr(out, cpu_student) >= 30, "the fp8 DiT drifted from the fp32 reference"


@pytest.mark.parametrize("fp8", [False, True])
def test_block_swap_is_bit_identical(device, demo, pair, fp8):
    student = on(demo.student, device, torch.bfloat16)
    if fp8:
        use_fp8_linears(student)
    expected = student_frames(demo, pair, device, torch.bfloat16, student)
    swap = BlockSwap(student.blocks, 4)
    hidden = swap.hidden[len(student.blocks) - 1]
    assert all(h.host.device.type == "cpu" and (device.type != "cuda" or h.host.is_pinned()) for h in hidden)
    assert torch.equal(student_frames(demo, pair, device, torch.bfloat16, student), expected)
