"""The accelerator paths agree with the CPU reference, which the golden tests pin.

On CUDA the VAE runs the official Conv3d instead of the CPU's stacked-taps 2D convolutions, the
attention may run fused kernels, and ``sync`` puts the DiT in bfloat16. Here every such path runs
on the same weights and the same noise (drawn on the CPU) as the CPU float32 reference: float32
must agree to kernel rounding (TF32 off), bfloat16 within a stated tolerance. Skipped without the
device: ``LIPFORCING_TEST_DEVICE`` names it (default ``cuda``).

The streaming hot path's CUDA-only fast paths are checked against their eager / CPU forms too:
CUDA graphs of the student's passes (captured without falling back, equal to eager passes, and a
whole clip with no host synchronisation once warm), the fused attention kernels, the batch-2
bfloat16 encode and the device composite.
"""

from __future__ import annotations

import copy
import os
import warnings

import numpy as np
import pytest
import torch

from lipforcing_core.demo.dit_recipe import pixel_keep_mask
from lipforcing_core.demo.dub import dubbing_pair
from lipforcing_core.demo.evaluate import load_demo_models
from lipforcing_core.demo.vae_train import psnr
from lipforcing_core.bench import random_dit
from lipforcing_core.models.attention import _kernel, attention, attention_backend
from lipforcing_core.pipeline import (
    LipSyncPipeline,
    PrecomputedLatents,
    SourceFrames,
    StreamingEncoder,
    chunk_frames,
    composite_mouth,
    composite_mouth_device,
    teacher_clip,
)
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


def student_frames(demo, pair, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    pipe = LipSyncPipeline(on(demo.student, device, dtype), on(demo.vae, device))
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



# ------------------------------------------------------------------------------------------ streaming fast paths
LATENT_HW, CHUNKS = (16, 16), 5  # 64 tokens per latent frame; 5 chunks reach the steady window phase


def run_latents(pipe: LipSyncPipeline, device: torch.device, seed: int = 0) -> torch.Tensor:
    """The streaming loop on precomputed latents (everything already on the device, noise drawn there)."""
    g = torch.Generator(device).manual_seed(seed)
    frames = 3 * CHUNKS
    masked, ref = (torch.randn(1, 16, frames, *LATENT_HW, generator=g, device=device) for _ in range(2))
    audio = torch.randn(1, 4 * frames - 3, 10752, generator=g, device=device)
    noise = SeededNoise(torch.Generator(device).manual_seed(seed + 1))
    chunks = pipe.stream_latents(PrecomputedLatents(masked, ref), audio, torch.ones(*LATENT_HW, device=device), frames,
                                 LATENT_HW, noise=noise, decode=False)
    return torch.cat([c.latents for c in chunks], 2)


@pytest.fixture
def cuda(device) -> torch.device:
    if device.type != "cuda":
        pytest.skip("CUDA graphs and the sync debug mode are CUDA features")
    return device


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graphs_equal_eager_passes(cuda, dtype):
    device = cuda
    model = random_dit("tiny", device, dtype)
    eager = run_latents(LipSyncPipeline(model, cuda_graphs=False), device)
    graphed = LipSyncPipeline(model)  # automatic: on for a windowed student on CUDA
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a capture that fell back to eager passes fails here
        captured = run_latents(graphed, device)  # the first clip captures one graph per window phase
        replayed = run_latents(graphed, device)  # the next clip replays them
    graphs = graphed.sampler.graphs
    assert graphs is not None and graphs.capture and len(graphs.keys) == 4
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert rel_err(captured, eager) < tol and rel_err(replayed, eager) < tol


def test_warm_stream_never_waits_for_the_device(cuda):
    """Once the graphs exist, a whole clip's chunk loop runs without one host synchronisation."""
    device = cuda
    pipe = LipSyncPipeline(random_dit("tiny", device, torch.bfloat16))
    run_latents(pipe, device)
    torch.cuda.synchronize(device)
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = run_latents(pipe, device, seed=3)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize("backend", ["auto", "cudnn", "flash_attn_3", "flash_attn"])
def test_fused_attention_matches_math(device, backend):
    if backend.startswith("flash") and _kernel(backend) is None:
        pytest.skip(f"{backend} is not installed")
    g = torch.Generator(device).manual_seed(0)
    # the 1.3B student's shapes: a 3-frame chunk of 1024-token frames against a 7-frame window
    q, k, v = (torch.randn(1, frames * 1024, 12, 128, generator=g, device=device, dtype=torch.bfloat16)
               for frames in (3, 7, 7))
    with attention_backend("math"):
        reference = attention(q, k, v)
    with attention_backend(backend):
        assert rel_err(attention(q, k, v), reference) < 1e-2


def test_batch2_bf16_encode_equals_two_streams(device):
    torch.manual_seed(0)
    vae = WanVAE(WanVAEConfig()).eval().to(device, torch.bfloat16)
    rng = np.random.default_rng(0)
    video = SourceFrames(rng.integers(0, 256, (21, 64, 64, 3), dtype=np.uint8))
    keep = torch.ones(64, 64)
    keep[40:56, 16:48] = 0
    enc = StreamingEncoder(vae, video, keep)
    plain, masked = vae.new_encode_stream(), vae.new_encode_stream()
    for i in range(2):
        a, b = chunk_frames(i)
        pixels = video.pixels(slice(a, b), device, torch.bfloat16)
        _, got_masked, got_plain = enc(i)
        assert rel_err(got_plain, vae.encode_chunk(pixels, plain)) < 1e-2
        assert rel_err(got_masked, vae.encode_chunk(pixels * keep.to(pixels), masked)) < 1e-2


def test_device_composite_is_bit_identical(device):
    rng = np.random.default_rng(0)
    generated = torch.from_numpy(rng.uniform(-1.2, 1.2, (1, 3, 12, 128, 128)).astype(np.float32))
    source = rng.integers(0, 256, (12, 128, 128, 3), dtype=np.uint8)
    keep = torch.ones(128, 128)
    keep[72:112, 32:96] = 0
    out = composite_mouth_device(generated.to(device, torch.bfloat16).float(), torch.from_numpy(source).to(device),
                                 keep.to(device))
    expected = composite_mouth(generated.to(torch.bfloat16).float(), source, keep)
    np.testing.assert_array_equal(out.cpu().numpy(), expected)
