"""fp8 block linears (models/fp8.py): quantisation error bounds, the CPU dequantising path, and the
models in fp8 against their float32 selves (golden tiny DiT, the bundled demo student)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from lipforcing_core.checkpoints import load_dit
from lipforcing_core.demo.dit_recipe import pixel_keep_mask
from lipforcing_core.demo.dub import dubbing_pair
from lipforcing_core.demo.evaluate import load_demo_models
from lipforcing_core.demo.constants import STUDENT_FILE
from lipforcing_core.demo.vae_train import psnr
from lipforcing_core.models.fp8 import FP8, FP8_MAX, Fp8Linear, quantize_rows, use_fp8_linears
from lipforcing_core.pipeline import LipSyncPipeline
from lipforcing_core.sampling.causal import SeededNoise
from lipforcing_core.tools.convert import convert

pytestmark = pytest.mark.usefixtures("two_threads_no_grad")

#: the golden streaming x0 (values up to ~4.2) with fp8 block weights, float32 compute; measured
#: 0.0099 max / 0.26% relative (an all-bfloat16 model: 0.018 / 0.44%)
GOLDEN_FP8 = {"max_abs": 0.03, "rel_l2": 0.01}


def test_quantize_rows_error_is_e4m3_rounding():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 96, generator=g) * torch.logspace(-3, 1, 64)[:, None]  # rows of very different size
    w[5] = 0.0
    q, scale = quantize_rows(w)
    assert q.dtype == FP8 and scale.shape == (64,) and scale.dtype == torch.float32
    back = q.float() * scale[:, None]
    # 3 mantissa bits: half an ulp is 2^-4 relative for normals, 2^-10 absolute (x scale) below 2^-6
    assert ((back - w).abs() <= w.abs() * 2**-4 + scale[:, None] * 2**-10).all()
    assert torch.equal(q[5].float(), torch.zeros(96))
    nonzero = torch.arange(64) != 5
    assert torch.equal(q.float().abs().amax(1)[nonzero], torch.full((63,), FP8_MAX))  # every row uses the full range


def test_fp8_linear_dequant_path_and_dtype_moves():
    torch.manual_seed(0)
    lin = torch.nn.Linear(32, 48)
    fp8 = Fp8Linear.from_linear(lin)
    x = torch.randn(2, 5, 32)
    expected = F.linear(x, fp8.weight.float() * fp8.weight_scale[:, None], lin.bias)
    torch.testing.assert_close(fp8(x), expected, atol=1e-5, rtol=1e-5)
    assert (fp8(x) - lin(x)).abs().max() < 0.05 * lin(x).abs().max()
    fp8.to(torch.bfloat16)  # Module.to(dtype) must not widen the fp8 weight or round the scales
    assert (fp8.weight.dtype, fp8.weight_scale.dtype, fp8.bias.dtype) == (FP8, torch.float32, torch.bfloat16)
    assert fp8(x.bfloat16()).dtype == torch.bfloat16


def test_use_fp8_linears_replaces_only_block_linears(random_tiny_dit):
    model = use_fp8_linears(copy.deepcopy(random_tiny_dit))
    fp8 = {n for n, m in model.named_modules() if isinstance(m, Fp8Linear)}
    assert len(fp8) == 10 * len(model.blocks)  # q, k, v, o twice, FFN in and out
    assert isinstance(model.text_embedding[0], torch.nn.Linear) and isinstance(model.head.head, torch.nn.Linear)
    keys = set(model.state_dict())
    assert keys - set(random_tiny_dit.state_dict()) == {f"{n}.weight_scale" for n in fp8}


def test_golden_tiny_dit_in_fp8_stays_within_tolerance(golden_dit, dit_gold, golden_window_stream, tmp_path):
    from safetensors.torch import save_file

    save_file(golden_dit.state_dict(), tmp_path / "gold.safetensors")
    convert(tmp_path / "gold.safetensors", tmp_path / "gold_fp8.safetensors", "fp8_e4m3fn")
    model = load_dit(tmp_path / "gold_fp8.safetensors", dtype=torch.float32)
    assert isinstance(model.blocks[0].self_attn.q, Fp8Linear)
    ref = dit_gold("cases_C_stream_window")["fp32attn.final_latents"]
    err = golden_window_stream(model) - ref
    assert err.abs().max() < GOLDEN_FP8["max_abs"]
    assert err.norm() / ref.norm() < GOLDEN_FP8["rel_l2"]
    assert err.abs().max() > 0  # the fp8 weights are really used


def test_demo_student_in_fp8_keeps_30db_of_fp32(tmp_path):
    """The shipped demo student converted by the command, run through the real pipeline (fp32 compute)."""
    convert(STUDENT_FILE, tmp_path / "student_fp8.safetensors", "fp8_e4m3fn")
    demo = load_demo_models()
    fp8 = load_dit(tmp_path / "student_fp8.safetensors", dtype=torch.float32)
    pair = dubbing_pair(3, 11, 12, duration_s=2.0)  # 13 latent frames: past the 7-frame window
    feats, keep = demo.features(pair.target_audio)[0], pixel_keep_mask(pair.source.shape[1])

    def frames(student):
        noise = SeededNoise(torch.Generator().manual_seed(0))
        return LipSyncPipeline(student, demo.vae).run(pair.source, feats, keep, noise=noise)

    ref, out = frames(demo.student), frames(fp8)
    assert out.shape == ref.shape
    assert 30 <= psnr(out, ref) < 99  # close, and not the fp32 model by mistake
