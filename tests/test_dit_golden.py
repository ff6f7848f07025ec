"""The DiT reproduces the official golden vectors (golden/dit): teacher, full-sequence student, streaming."""

from __future__ import annotations

import pytest
import torch

from lipforcing_core.config import STREAM_FULL, STREAM_WINDOW, CausalSpec
from lipforcing_core.sampling.causal import CausalSampler, ReplayNoise
from lipforcing_core.sampling.schedule import STUDENT_T_LIST, x0_from_flow

FP32 = dict(atol=5e-5, rtol=1e-4)
BF16 = dict(atol=2e-3, rtol=1e-3)


pytestmark = pytest.mark.usefixtures("two_threads_no_grad")


@pytest.fixture(scope="module")
def inputs(dit_gold):
    return dit_gold("inputs")


def clip(inputs, frames):
    return inputs["cond.y"][:, :, :frames], inputs["cond.audio_emb"][:, :4 * frames - 3]


def test_teacher_case_a(golden_dit, dit_gold, inputs):
    a = dit_gold("cases_A_teacher")
    y, audio = clip(inputs, 9)
    text, neg = inputs["text.text_embeds"], inputs["text.neg_text_embeds"]
    debug = {}

    def record(n):
        def hook(module, args, out):
            debug[n] = out
        return hook

    hooks = [b.register_forward_hook(record(n)) for n, b in enumerate(golden_dit.blocks)]
    try:
        flows = {"cond": golden_dit(a["x_t"], a["t"], y, text, audio)}
    finally:
        for h in hooks:
            h.remove()
    flows["neg"] = golden_dit(a["x_t"], a["t"], y, neg, torch.zeros_like(audio))
    flows["null"] = golden_dit(a["x_t"], a["t"], y, torch.zeros_like(text), torch.zeros_like(audio))
    for n in range(len(golden_dit.blocks)):
        torch.testing.assert_close(debug[n], a[f"dbg.block{n}_out"], **FP32)
    x0 = {}
    for name, flow in flows.items():
        torch.testing.assert_close(flow, a[f"flow.{name}"], **FP32, msg=lambda m: f"{name}: {m}")
        x0[name] = x0_from_flow(a["x_t"], flow, a["t"])
        torch.testing.assert_close(x0[name], a[f"x0.{name}"], **FP32)
    cfg = x0["cond"] + (4.5 - 1) * (x0["cond"] - x0["neg"])
    torch.testing.assert_close(cfg, a["x0.cfg4.5"], **FP32)


@pytest.mark.parametrize("case,spec", [("B1", CausalSpec(3, -1, 0, False)), ("B2", CausalSpec(3, 7, 1, True))])
def test_student_full_sequence_case_b(golden_dit, dit_gold, inputs, case, spec):
    b = dit_gold("cases_B_fullseq")
    x_t, t = b[f"{case}.x_t"], b[f"{case}.t"]
    y, audio = clip(inputs, x_t.shape[2])
    flow = golden_dit(x_t, t, y, inputs["text.text_embeds"], audio, causal=spec)
    torch.testing.assert_close(flow, b[f"{case}.fp32attn.flow"], **FP32)
    flow = golden_dit(x_t, t, y, inputs["text.text_embeds"], audio, causal=spec, bf16_attn=True)
    torch.testing.assert_close(flow, b[f"{case}.bf16attn.flow"], **BF16)


def stream_clip(golden_dit, inputs, noise, eps, spec, bf16=False):
    """The official two-step streaming loop (the product's sampler); yields every stored quantity per chunk."""
    frames = noise.shape[2]
    y, audio = clip(inputs, frames)
    sampler = CausalSampler(golden_dit, STUDENT_T_LIST, spec, bf16_attn=bf16)
    state = sampler.start(inputs["text.text_embeds"], audio, noise.shape[3:], frames)
    replay = ReplayNoise(noise, eps)
    for k, c0 in enumerate(range(0, frames, 3)):
        y_k, record = y[:, :, c0:c0 + 3], {}
        x0 = sampler.denoise(state, noise[:, :, c0:c0 + 3], y_k, replay, c0, record)
        sampler.commit(state, x0, y_k, c0, record)
        yield k, state, record


@pytest.mark.parametrize("case,spec", [("C_stream_window", STREAM_WINDOW), ("D_stream_full", STREAM_FULL)])
@pytest.mark.parametrize("variant", ["fp32attn", "bf16attn"])
def test_streaming_cases_c_d(golden_dit, dit_gold, inputs, case, spec, variant):
    g = dit_gold(f"cases_{case}")
    eps = [g[f"chunk{k}.eps_renoise"] for k in range(4)]
    tol = FP32 if variant == "fp32attn" else BF16
    finals = []
    for k, state, got in stream_clip(golden_dit, inputs, g["noise"], eps, spec, bf16=variant == "bf16attn"):
        prefix = f"{variant}.chunk{k}."
        for name in ("flow_step1", "x0_step1", "xt_step2", "flow_step2", "x0_step2", "flow_cachewrite"):
            torch.testing.assert_close(got[name], g[prefix + name], **tol, msg=lambda m, p=prefix, n=name: f"{p}{n}: {m}")
        fs = state.caches[0].fs
        assert state.caches[0].frames * fs == g[prefix + "cache_local_end_index"].item()
        assert state.caches[0].end_frame * fs == g[prefix + "cache_global_end_index"].item()
        finals.append(got["x0_step2"])
    torch.testing.assert_close(torch.cat(finals, 2), g[f"{variant}.final_latents"], **tol)
