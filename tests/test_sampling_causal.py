"""The causal sampler and the pipeline's latent loop reproduce golden/dit cases C and D end to end."""

from __future__ import annotations

import pytest
import torch

from lipforcing_core.config import STREAM_FULL, STREAM_WINDOW
from lipforcing_core.pipeline import LipSyncPipeline, PrecomputedLatents, build_y
from lipforcing_core.sampling.causal import ReplayNoise, SeededNoise, check_t_list

FP32 = {"atol": 5e-5, "rtol": 1e-4}


def test_build_y_matches_golden(dit_gold):
    i = dit_gold("inputs")
    y = build_y(i["cond.ref_latent"], i["cond.mask"], i["cond.masked_video"], i["cond.ref_sequence"])
    torch.testing.assert_close(y, i["cond.y"], atol=0, rtol=0)


@pytest.mark.parametrize("case,spec", [("C_stream_window", STREAM_WINDOW), ("D_stream_full", STREAM_FULL)])
def test_pipeline_reproduces_streaming_golden(golden_dit, dit_gold, case, spec):
    i, g = dit_gold("inputs"), dit_gold(f"cases_{case}")
    assert g["t_list"].tolist() == [0.999, 0.769, 0.0]
    source = PrecomputedLatents(i["cond.masked_video"], i["cond.ref_sequence"], i["cond.ref_latent"])
    noise = ReplayNoise(g["noise"], [g[f"chunk{k}.eps_renoise"] for k in range(4)])
    pipe = LipSyncPipeline(golden_dit, t_list=g["t_list"].tolist(), spec=spec)
    records = []
    chunks = list(pipe.stream_latents(source, i["cond.audio_emb"], i["cond.mask"], 12, (8, 8),
                                      text=i["text.text_embeds"], noise=noise, records=records))
    assert [c.index for c in chunks] == [0, 1, 2, 3] and all(c.frames is None for c in chunks)
    for k, record in enumerate(records):
        for name in ("flow_step1", "x0_step1", "xt_step2", "flow_step2", "x0_step2", "flow_cachewrite"):
            torch.testing.assert_close(record[name], g[f"fp32attn.chunk{k}.{name}"], **FP32,
                                       msg=lambda m, k=k, name=name: f"chunk{k}.{name}: {m}")
    torch.testing.assert_close(torch.cat([c.latents for c in chunks], 2), g["fp32attn.final_latents"], **FP32)


def test_seeded_noise_follows_official_draw_order():
    a, b = SeededNoise(7), SeededNoise(7)
    init = a.initial((1, 16, 6, 4, 4), torch.float32, torch.device("cpu"))
    eps = a.renoise(init[:, :, :3])
    torch.manual_seed(7)
    torch.testing.assert_close(init, torch.randn(1, 16, 6, 4, 4), atol=0, rtol=0)
    torch.testing.assert_close(eps, torch.randn_like(init[:, :, :3]), atol=0, rtol=0)
    torch.testing.assert_close(b.initial((1, 16, 6, 4, 4), torch.float32, torch.device("cpu")), init, atol=0, rtol=0)


def test_replay_noise_checks_shapes_and_count():
    noise = ReplayNoise(torch.zeros(1, 16, 3, 2, 2), [torch.ones(1, 16, 3, 2, 2)])
    with pytest.raises(ValueError, match="shape"):
        noise.initial((1, 16, 6, 2, 2), torch.float32, torch.device("cpu"))
    assert noise.renoise(torch.zeros(1, 16, 3, 2, 2)).sum() == 16 * 12
    with pytest.raises(ValueError, match="used up"):
        noise.renoise(torch.zeros(1, 16, 3, 2, 2))


@pytest.mark.parametrize("t_list", [[0.999, 0.0], [0.999, 0.9, 0.769, 0.5, 0.0]])
def test_t_list_lengths_accepted(t_list):
    assert check_t_list(t_list) == tuple(t_list)


@pytest.mark.parametrize("t_list", [[0.999], [0.999, 0.769], [0.769, 0.999, 0.0], [1.0, 0.5, 0.0],
                                    [0.9, 0.8, 0.7, 0.6, 0.5, 0.0]])
def test_bad_t_list_rejected(t_list):
    with pytest.raises(ValueError, match="t_list"):
        check_t_list(t_list)
