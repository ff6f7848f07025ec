"""DiT structure and streaming invariants that need no golden files (tiny random model, CPU)."""

from __future__ import annotations

import json

import pytest
import torch

from lipforcing_core.config import STREAM_FULL, STREAM_WINDOW, CausalSpec, get_preset
from lipforcing_core.models.dit import LipForcingDiT

H = W = 8


pytestmark = pytest.mark.usefixtures("two_threads_no_grad")


@pytest.fixture(scope="module")
def model(random_tiny_dit):
    return random_tiny_dit


def clip(frames, seed=1):
    g = torch.Generator().manual_seed(seed)
    return dict(
        x=torch.randn(1, 16, frames, H, W, generator=g),
        y=torch.randn(1, 49, frames, H, W, generator=g),
        text=torch.randn(1, 16, 4096, generator=g),
        audio=torch.randn(1, 4 * frames - 3, 10752, generator=g),
    )


@pytest.mark.parametrize("name,manifest", [("14b", "keys_14b.json"), ("1.3b", "keys_1_3b.json")])
def test_meta_presets_match_official_manifests(golden_root, name, manifest):
    official = json.loads((golden_root / "dit" / manifest).read_text())
    with torch.device("meta"):
        net = LipForcingDiT(get_preset(name))
    ours = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert ours == {e["key"]: e["shape"] for e in official["keys"]}
    assert sum(v.numel() for v in net.state_dict().values()) == official["total_params"]


def test_get_preset_lists_valid_names():
    assert get_preset("14B").dim == 5120
    with pytest.raises(KeyError, match="tiny, 1.3b, 14b"):
        get_preset("7b")


@pytest.mark.parametrize("spec", [STREAM_FULL, CausalSpec(3, 5, 1, dynamic_rope=False), CausalSpec(3, 4, 0, False)])
def test_streaming_equals_block_causal_full_sequence(model, spec):
    """Chunk k streamed after committing clean chunks 0..k-1 == full-sequence causal pass, restricted to chunk k.

    The windowed specs (absolute RoPE) also exercise eviction, with and without a sink frame.
    """
    frames = 9
    c = clip(frames)
    clean = torch.randn(1, 16, frames, H, W, generator=torch.Generator().manual_seed(5))
    state = model.new_stream(c["text"], c["audio"], latent_hw=(H, W), spec=spec, max_frames=frames)
    for c0 in range(0, frames, 3):
        y = c["y"][:, :, c0:c0 + 3]
        streamed = model.forward_chunk(c["x"][:, :, c0:c0 + 3], 0.7, y, state)
        t = torch.zeros(1, c0 + 3, dtype=torch.float64)
        t[:, c0:] = 0.7
        x_full = torch.cat([clean[:, :, :c0], c["x"][:, :, c0:c0 + 3]], 2)
        full = model(x_full, t, c["y"][:, :, :c0 + 3], c["text"], c["audio"][:, :4 * (c0 + 3) - 3], causal=spec)
        torch.testing.assert_close(streamed, full[:, :, c0:], atol=2e-5, rtol=1e-4)
        model.forward_chunk(clean[:, :, c0:c0 + 3], 0.0, y, state, write_cache=True)


def test_window_cache_is_allocated_once_and_constant(model):
    sizes = []
    for chunks in (4, 12):
        c = clip(3 * chunks)
        state = model.new_stream(c["text"], c["audio"], latent_hw=(H, W), spec=STREAM_WINDOW)
        before = [(cache.k.data_ptr(), cache.v.data_ptr()) for cache in state.caches]
        for c0 in range(0, 3 * chunks, 3):
            model.forward_chunk(c["x"][:, :, c0:c0 + 3], 0.0, c["y"][:, :, c0:c0 + 3], state, write_cache=True)
        assert [(cache.k.data_ptr(), cache.v.data_ptr()) for cache in state.caches] == before
        assert state.next_frame == 3 * chunks and state.caches[0].frames == STREAM_WINDOW.local_attn_size
        sizes.append(state.cache_bytes())
    assert sizes[0] == sizes[1] == 2 * 6 * (7 * 16) * 128 * 4


def test_cache_writes_are_detached(model):
    c = clip(3)
    state = model.new_stream(c["text"], c["audio"], latent_hw=(H, W), spec=STREAM_WINDOW)
    with torch.enable_grad():
        x = c["x"].clone().requires_grad_(True)
        out = model.forward_chunk(x, 0.0, c["y"], state, write_cache=True)
        assert out.requires_grad
    assert not state.caches[0].k.requires_grad and state.next_frame == 3


def test_stream_errors_are_clear(model):
    c = clip(6)
    state = model.new_stream(c["text"], c["audio"], latent_hw=(H, W), spec=STREAM_WINDOW)
    with pytest.raises(ValueError, match="only frames < 0 are cached"):
        model.forward_chunk(c["x"][:, :, 3:], 0.5, c["y"][:, :, 3:], state, start_frame=3)
    with pytest.raises(ValueError, match="needs max_frames"):
        model.new_stream(c["text"], None, latent_hw=(H, W), spec=STREAM_FULL)
    with pytest.raises(ValueError, match="4\\*T-3"):
        model(c["x"], 0.5, c["y"], c["text"], c["audio"][:, :-1])


def test_bfloat16_weights_stay_close_to_float32(model):
    c = clip(3)
    reference = model(c["x"], 0.5, c["y"], c["text"], c["audio"])
    fast = LipForcingDiT(model.config).eval()
    fast.load_state_dict(model.state_dict())
    fast.to(torch.bfloat16)
    out = fast(c["x"], 0.5, c["y"], c["text"], c["audio"])
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, atol=0.1, rtol=0.05)


def test_attention_backends_agree_and_are_context_local():
    from lipforcing_core.models.attention import attention, attention_backend, check_backend

    q, k, v = (torch.randn(2, 10, 3, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    mask = torch.rand(10, 10, generator=torch.Generator().manual_seed(3)) > 0.3
    mask[:, 0] = True
    reference = attention(q, k, v, mask)
    for name in ("sdpa", "math"):
        with attention_backend(name):
            torch.testing.assert_close(attention(q, k, v, mask), reference, rtol=0, atol=1e-6)
            torch.testing.assert_close(attention(q, k, v), attention(q, k, v), rtol=0, atol=0)
    with pytest.raises(ValueError, match="not one of"):
        check_backend("fastest")
    with pytest.raises(ValueError, match="not one of"), attention_backend("fastest"):
        pass
    from lipforcing_core.models import attention as module

    assert module._backend.get() == "auto"  # the block restored the default


def test_init_weights_is_seeded_and_materialises_a_meta_model():
    """The one random initialisation (benchmarks, tests): seeded, finite, norm scales 1, and it fills a
    model built on the meta device and moved with ``to_empty`` (how the benchmark makes 14B models)."""
    with torch.device("meta"):
        empty = LipForcingDiT(get_preset("tiny"))
    a = empty.to_empty(device="cpu").init_weights(torch.Generator().manual_seed(1))
    b = LipForcingDiT(get_preset("tiny")).init_weights(torch.Generator().manual_seed(1))
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.isfinite(p).all() and torch.equal(p, q), name
    assert a.blocks[0].norm3.weight.eq(1).all()
    c = LipForcingDiT(get_preset("tiny")).init_weights(torch.Generator().manual_seed(1), affine_std=0.3)
    assert not c.blocks[0].norm3.weight.eq(1).all() and c.blocks[0].modulation.std() > 0.1


# ------------------------------------------------------------------------------------ streaming fast paths
def test_float32_rope_matches_the_float64_reference():
    from lipforcing_core.models.rope import apply_rope, apply_rope32, rope_factors32, rope_frequencies, rope_tables

    tables = rope_tables(32)
    x = torch.randn(2, 3 * 4 * 5, 2, 32, generator=torch.Generator().manual_seed(0))
    for first in (0, 7, 1000):
        pos = torch.arange(first, first + 3)
        reference = apply_rope(x, rope_frequencies(tables, pos, 4, 5))
        torch.testing.assert_close(apply_rope32(x, rope_factors32(32, pos, 4, 5)), reference, atol=2e-6, rtol=0)


@pytest.mark.parametrize("spec,first", [(STREAM_WINDOW, 3), (STREAM_WINDOW, 5), (CausalSpec(3, 5, 1, False), 3),
                                        (CausalSpec(3, 4, 0, False), 4), (CausalSpec(3, 11, 2, True), 4)])
def test_cache_layout_holds_exactly_the_window(spec, first):
    """Slots [0, past) hold the sink frames and the newest W - S - n earlier frames, each once."""
    from lipforcing_core.models.kv_cache import CacheLayout

    w, s = spec.local_attn_size, spec.sink_size
    layout, slots, pasts = CacheLayout(spec, w), [None] * w, []
    for n in [first] + [3] * 6:
        start = layout.end_frame
        past = layout.past(start, n)
        recent = min(start - min(s, start), w - s - n)
        assert sorted(slots[:past]) == list(range(min(s, start))) + list(range(start - recent, start))
        slots[past:past + n] = range(start, start + n)
        for src, dst, count in layout.commit(n):
            slots[dst:dst + count] = slots[src:src + count]
        pasts.append(past)
    assert len(set(pasts[-3:])) == 1  # steady state: one window phase
    assert layout.frames == w and layout.end_frame == first + 18


def test_folded_one_row_cross_attention_equals_attention(model):
    block = model.blocks[0]
    x = torch.randn(2, 48, 128, generator=torch.Generator().manual_seed(0))
    for text in (torch.zeros(2, 1, 128), torch.randn(2, 1, 128, generator=torch.Generator().manual_seed(1))):
        kv = block.cross_attn.context_kv(text)
        for bf16 in (False, True):
            full = block.cross_attn(block.norm3(x), kv, bf16)
            torch.testing.assert_close(block.cross_attn.single_row(kv, bf16).expand_as(full), full, atol=1e-6, rtol=1e-6)  # fp32 rounding at |x| ~ 3


def stream_with(model, graphs, spec=STREAM_WINDOW, chunks=4):
    c = clip(3 * chunks)
    from lipforcing_core.pipeline import LipSyncPipeline, PrecomputedLatents
    from lipforcing_core.sampling.causal import ReplayNoise

    pipe = LipSyncPipeline(model, spec=spec, cuda_graphs=graphs is not None)
    pipe.sampler.graphs = graphs
    g = torch.Generator().manual_seed(2)
    source = PrecomputedLatents(c["y"][:, 33:], c["y"][:, 1:17])
    noise = ReplayNoise(c["x"], [torch.randn(1, 16, 3, H, W, generator=g) for _ in range(chunks)])
    return torch.cat([o.latents for o in pipe.stream_latents(source, c["audio"], torch.ones(H, W), 3 * chunks, (H, W),
                                                             noise=noise)], 2), pipe


def test_graph_path_bookkeeping_on_cpu(model):
    """The CUDA-graph path run eagerly (capture=False): same output, one entry per window phase, buffers reused."""
    from lipforcing_core.models.cuda_graphs import StreamGraphs

    reference, _ = stream_with(model, None)
    graphs = StreamGraphs(capture=False)
    out, pipe = stream_with(model, graphs)
    torch.testing.assert_close(out, reference, atol=1e-6, rtol=0)
    # chunk 0 (read, write + sink keys), chunk 1 (past 3), later chunks (past 4); denoise and commit share a shape
    assert {k[0][:3] for k in graphs.keys} == {(0, (3, 4, 4), None), (0, (3, 4, 4), 0), (3, (3, 4, 4), None),
                                               (4, (3, 4, 4), None)}
    buffers = [cache.k.data_ptr() for cache in pipe.sampler.start(clip(3)["text"], None, (H, W), 3).caches]
    again, pipe = stream_with(model, graphs)
    torch.testing.assert_close(again, reference, atol=1e-6, rtol=0)
    assert len(graphs.keys) == 4
    assert [c.k.data_ptr() for c in pipe.sampler.start(clip(3)["text"], None, (H, W), 3).caches] == buffers


def test_graphs_are_dropped_when_the_weights_move():
    from lipforcing_core.models.cuda_graphs import StreamGraphs

    graphs = StreamGraphs(capture=False)
    graphs.bind((1, 2))
    graphs.run("pass", {"x": torch.ones(2)}, lambda i: i["x"] * 2)
    graphs.bind((1, 2))
    assert len(graphs.keys) == 1
    graphs.bind((3, 2))
    assert graphs.keys == []
