"""The Lip Forcing DiT: Wan2.1-T2V with OmniAvatar's 65-channel V2V input and AudioPack audio.

One module serves the bidirectional teacher/critic and the causal few-step student; parameter
names equal the official flat checkpoint layout so released weights load with ``strict=True``.

Three ways to run it (all return the predicted flow ``v ~ eps - x0``, ``[B, 16, T, H, W]``):

* ``model(x_t, t, y, context, audio_emb)`` - bidirectional over the whole clip (teacher).
* ``model(x_t, t, y, context, audio_emb, causal=CausalSpec(...))`` - the student in
  full-sequence mode: block-causal mask over chunks, ``t`` may differ per frame ``[B, T]``.
* streaming - one chunk at a time against a per-layer KV cache::

      state = model.new_stream(context, audio_emb, latent_hw=(H, W), spec=STREAM_WINDOW)
      for c0 in range(0, T, 3):
          v = model.forward_chunk(x, t, y[:, :, c0:c0 + 3], state)            # denoise, cache read-only
          ...
          model.forward_chunk(x0, 0.0, y[:, :, c0:c0 + 3], state, write_cache=True)  # commit chunk

Inputs: ``x_t [B,16,T,H,W]``; ``y [B,49,T,H,W]`` (ref latent | 1-mask | masked video | ref
sequence); ``context [B,L,4096]`` text embeddings (padding rows are attended, not masked);
``audio_emb [B,4T-3,10752]`` or None; ``t`` in [0,1] as a float, ``[B]`` or ``[B,T]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import STREAM_WINDOW, CausalSpec, DiTConfig
from .attention import attention, frame_visibility, token_mask
from .audio_pack import AudioPack
from .cuda_graphs import Inputs, StreamGraphs
from .kv_cache import CacheLayout, SelfAttnCache, StreamState
from .rope import (ChunkRope, RopeTables, apply_rope, apply_rope32, dynamic_rope_indices, rope_factors32,
                   rope_frequencies, rope_tables)


def sinusoidal_embedding(dim: int, timestep: torch.Tensor) -> torch.Tensor:
    """``[cos(t w_k), sin(t w_k)]`` with ``w_k = 10000^(-k/(dim/2))``, computed in float64."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=timestep.device) / half)
    angles = torch.outer(timestep.to(torch.float64), freqs)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class RMSNorm(nn.Module):
    """RMS normalisation in float32 over the full channel dim; weight applied after the cast back."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back (Wan convention)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = (None if p is None else p.float() for p in (self.weight, self.bias))
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).type_as(x)


class SelfAttention(nn.Module):
    """q/k/v/o projections with q/k RMSNorm; RoPE, masking and caching are left to the ``plan``."""

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, plan: "AttentionPlan", layer: int) -> torch.Tensor:
        q = self.norm_q(self.q(x)).unflatten(2, (self.num_heads, -1))
        k = self.norm_k(self.k(x)).unflatten(2, (self.num_heads, -1))
        v = self.v(x).unflatten(2, (self.num_heads, -1))
        return self.o(plan.attend(layer, q, k, v).flatten(2))


class CrossAttention(SelfAttention):
    """Text cross-attention: no RoPE, no mask. K/V come from ``context_kv`` (computed once per clip).

    With a one-row text (the pipeline's zero embedding) every query attends to one key with
    weight exactly 1, so the output is ``o(v)`` for every token: :meth:`single_row` computes
    that without the query projection, the norm before it or the attention.
    """

    def context_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.norm_k(self.k(context)).unflatten(2, (self.num_heads, -1))
        return k, self.v(context).unflatten(2, (self.num_heads, -1))

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], bf16_cast: bool = False) -> torch.Tensor:
        q = self.norm_q(self.q(x)).unflatten(2, (self.num_heads, -1))
        return self.o(attention(q, *kv, bf16_cast=bf16_cast).flatten(2))

    def single_row(self, kv: tuple[torch.Tensor, torch.Tensor], bf16_cast: bool = False) -> torch.Tensor:
        """The output ``[B, 1, dim]`` shared by every token when the text has one row."""
        v = kv[1]
        if bf16_cast and v.dtype not in (torch.float16, torch.bfloat16):
            v = v.to(torch.bfloat16).to(kv[1].dtype)  # the attention's bfloat16 round trip
        return self.o(v.flatten(2))


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x * (1 + scale) + shift`` with x ``[B, F*fs, d]`` and per-frame shift/scale ``[B, F, d]``."""
    frames = shift.shape[1]
    xf = x.unflatten(1, (frames, -1))
    return (xf * (1 + scale.unsqueeze(2)) + shift.unsqueeze(2)).flatten(1, 2)


def _gate(y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    return (y.unflatten(1, (gate.shape[1], -1)) * gate.unsqueeze(2)).flatten(1, 2)


class DiTBlock(nn.Module):
    """Self-attention (modulated, gated), text cross-attention (plain), FFN (modulated, gated)."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.norm1 = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(cfg.dim, cfg.num_heads, cfg.eps)
        self.norm3 = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=True)
        self.cross_attn = CrossAttention(cfg.dim, cfg.num_heads, cfg.eps)
        self.norm2 = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(cfg.dim, cfg.ffn_dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(cfg.ffn_dim, cfg.dim))
        self.modulation = nn.Parameter(torch.zeros(1, 6, cfg.dim))

    def forward(self, x: torch.Tensor, mod: torch.Tensor, text_kv: tuple[torch.Tensor, torch.Tensor],
                plan: "AttentionPlan", layer: int) -> torch.Tensor:
        """``mod [B, F, 6, d]``: per-frame time projection (before adding ``self.modulation``)."""
        shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = (self.modulation.unsqueeze(0) + mod).unbind(2)
        x = x + _gate(self.self_attn(_modulate(self.norm1(x), shift_sa, scale_sa), plan, layer), gate_sa)
        if text_kv[0].shape[1] == 1:
            x = x + self.cross_attn.single_row(text_kv, plan.bf16_cross)
        else:
            x = x + self.cross_attn(self.norm3(x), text_kv, plan.bf16_cross)
        return x + _gate(self.ffn(_modulate(self.norm2(x), shift_ff, scale_ff)), gate_ff)


class Head(nn.Module):
    """Final modulated LayerNorm + Linear to ``out_dim * prod(patch)`` channels per token."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.norm = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(cfg.dim, cfg.out_dim * math.prod(cfg.patch_size))
        self.modulation = nn.Parameter(torch.zeros(1, 2, cfg.dim))

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """``e [B, F, d]``: per-frame time embedding."""
        shift, scale = (self.modulation.unsqueeze(0) + e.unsqueeze(2)).unbind(2)
        return self.head(_modulate(self.norm(x), shift, scale))


class AttentionPlan:
    """How self-attention runs in one forward: RoPE positions, mask, cache. Shared by all layers."""

    bf16_cross = False

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class FullSequencePlan(AttentionPlan):
    """Whole clip at once: RoPE at the given frame positions, optional block-causal token mask."""

    def __init__(self, freqs: torch.Tensor, mask: torch.Tensor | None, bf16_cross: bool = False):
        self.freqs, self.mask, self.bf16_cross = freqs, mask, bf16_cross

    def attend(self, layer, q, k, v):
        return attention(apply_rope(q, self.freqs), apply_rope(k, self.freqs), v, self.mask)


class StreamPlan(AttentionPlan):
    """One chunk against the per-layer KV caches of a :class:`StreamState` (layout in models/kv_cache.py).

    Queries and the chunk's keys are rotated at absolute frame positions; the chunk's K/V go to
    their slots ``[past, past + frames)`` and attention runs over the contiguous slots before
    them. Under autograd (training rollouts) the current K/V enter attention directly instead,
    so that the graph does not see the cache's later in-place writes.
    """

    def __init__(self, state: StreamState, rope: ChunkRope, grid: tuple[int, int, int], start: int, past: int,
                 write: bool, bf16: bool):
        self.state, self.rope, self.start, self.past, self.write = state, rope, start, past, write
        self.frames, self.h, self.w = grid
        self.bf16 = self.bf16_cross = bf16

    def attend(self, layer, q, k, v):
        cache: SelfAttnCache = self.state.caches[layer]
        q, k_rot = apply_rope32(q, self.rope.chunk), apply_rope32(k, self.rope.chunk)
        if self.rope.sink is not None:
            n = self.rope.sink.shape[0]  # tokens of the sink frames held
            cache.k[:, :n] = apply_rope32(cache.sink_k[:, :n], self.rope.sink)
        if self.write:
            cache.keep_sink(self.start, k)
        past, end = cache.tokens(0, self.past), cache.tokens(0, self.past + self.frames)
        if torch.is_grad_enabled() and (k.requires_grad or v.requires_grad):
            k_win, v_win = torch.cat([cache.k[:, past], k_rot], 1), torch.cat([cache.v[:, past], v], 1)
            if self.write:
                cache.write(self.past, k_rot, v)
        else:
            cache.write(self.past, k_rot, v)
            k_win, v_win = cache.k[:, end], cache.v[:, end]
        return attention(q, k_win, v_win, bf16_cast=self.bf16)


class LipForcingDiT(nn.Module):
    """Wan2.1 DiT with 65 input channels, per-frame timesteps, AudioPack audio and text cross-attention."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = cfg = config
        self.patch_embedding = nn.Conv3d(cfg.in_dim, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, cfg.dim), nn.GELU(approximate="tanh"),
                                            nn.Linear(cfg.dim, cfg.dim))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(cfg.dim, cfg.dim * 6))
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.num_layers))
        self.head = Head(cfg)
        self.audio_proj = AudioPack(cfg.audio_dim, cfg.audio_frames_per_latent, cfg.audio_hidden)
        self.audio_cond_projs = nn.ModuleList(nn.Linear(cfg.audio_hidden, cfg.dim) for _ in range(cfg.num_audio_projs))
        self._rope_tables: dict[torch.device, RopeTables] = {}

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator, affine_std: float = 0.0) -> LipForcingDiT:
        """Seeded random weights, in place, for benchmarks and tests whose results do not depend on
        trained values; also materialises a model made on the meta device and moved with ``to_empty``.

        Matrices are N(0, 1/fan_in), so activations keep their scale through the layers; the other
        parameters N(0, 0.02), and the norm scales 1. With ``affine_std > 0`` the norm scales and the
        modulation tables are N(0, ``affine_std``) instead, so a skipped affine or modulation term
        shows in the outputs. Returns the model.
        """
        for name, p in self.named_parameters():
            is_norm = name.endswith(("norm3.weight", "norm_q.weight", "norm_k.weight", "norm_out.weight"))
            if affine_std and (is_norm or "modulation" in name):
                p.normal_(0.0, affine_std, generator=generator)
            elif is_norm:
                p.fill_(1.0)
            elif p.ndim >= 2 and "modulation" not in name:
                p.normal_(0.0, p[0].numel() ** -0.5, generator=generator)
            else:
                p.normal_(0.0, 0.02, generator=generator)
        return self

    # ----------------------------------------------------------------------------- conditioning
    def rope(self, device: torch.device) -> RopeTables:
        """complex128 RoPE tables on ``device`` (built once per device)."""
        if device not in self._rope_tables:
            cfg = self.config
            self._rope_tables[device] = rope_tables(cfg.head_dim, cfg.rope_max_positions, cfg.rope_theta, device)
        return self._rope_tables[device]

    def embed_time(self, t: torch.Tensor | float, batch: int, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame time embedding ``e [B,F,d]`` and projection ``m [B,F,6,d]`` for t in [0, 1].

        ``t`` is a float, ``[B]`` (one per sample) or ``[B, F]`` (one per latent frame);
        the model timestep is ``1000 t`` in float64.
        """
        device, dtype = self.patch_embedding.weight.device, self.patch_embedding.weight.dtype
        if isinstance(t, float):  # filled on the device: no host-to-device copy
            t = torch.full((batch,), t, dtype=torch.float64, device=device)
        t = torch.as_tensor(t, dtype=torch.float64, device=device)
        if t.ndim == 0:
            t = t.expand(batch)
        if t.ndim == 1:
            t = t[:, None].expand(-1, frames) if t.shape[0] == batch else t
        if t.shape != (batch, frames):
            raise ValueError(f"t must be a float, [B]={batch} or [B, T]=({batch}, {frames}); got {tuple(t.shape)}")
        e = self.time_embedding(sinusoidal_embedding(self.config.freq_dim, 1000.0 * t.reshape(-1)).to(dtype))
        m = self.time_projection(e).unflatten(1, (6, -1))
        return e.unflatten(0, (batch, frames)), m.unflatten(0, (batch, frames))

    def encode_audio(self, audio_emb: torch.Tensor | None) -> torch.Tensor | None:
        """``[B, 4T-3, 10752]`` wav2vec2 features -> per-block additive terms ``[P, B, T, dim]``."""
        if audio_emb is None:
            return None
        packed = self.audio_proj(audio_emb.to(self.patch_embedding.weight.dtype))
        return torch.stack([proj(packed) for proj in self.audio_cond_projs])

    def text_kv(self, context: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Embed the text ``[B, L, 4096]`` and compute every block's cross-attention K/V."""
        ctx = self.text_embedding(context.to(self.patch_embedding.weight.dtype))
        return [block.cross_attn.context_kv(ctx) for block in self.blocks]

    # ----------------------------------------------------------------------------- forward passes
    def forward(self, x_t: torch.Tensor, t: torch.Tensor | float, y: torch.Tensor, context: torch.Tensor,
                audio_emb: torch.Tensor | None = None, *, causal: CausalSpec | None = None,
                bf16_attn: bool = False) -> torch.Tensor:
        """Flow prediction over a whole clip: bidirectional (``causal=None``) or block-causal.

        ``bf16_attn`` emulates the official student's bfloat16 cross-attention cast
        (docs/design.md §2, attention precision); the full-sequence self-attention stays in the model dtype.
        """
        frames, height, width = x_t.shape[2:]
        h, w = height // self.config.patch_size[1], width // self.config.patch_size[2]
        tables = self.rope(x_t.device)
        if causal is None:
            positions, mask = torch.arange(frames), None
        else:
            vis = frame_visibility(frames, causal.chunk_size, causal.local_attn_size, causal.sink_size)
            mask = token_mask(vis, h * w).to(x_t.device)
            positions = (dynamic_rope_indices(frames, causal.chunk_size, causal.local_attn_size, causal.sink_size)
                         if causal.dynamic_rope else torch.arange(frames))
        plan = FullSequencePlan(rope_frequencies(tables, positions, h, w), mask, bf16_cross=bf16_attn and causal is not None)
        audio = self.encode_audio(audio_emb)
        time = self.embed_time(t, x_t.shape[0], frames // self.config.patch_size[0])
        return self._run(x_t, time, y, self.text_kv(context), audio, plan)

    def new_stream(self, context: torch.Tensor, audio_emb: torch.Tensor | None, *, latent_hw: tuple[int, int],
                   spec: CausalSpec = STREAM_WINDOW, max_frames: int | None = None,
                   graphs: StreamGraphs | None = None) -> StreamState:
        """Start streaming one clip: text K/V and the clip's audio terms once, KV caches allocated once.

        ``latent_hw`` is the latent (H, W). With a window the cache holds ``spec.local_attn_size``
        frames; full attention (``local_attn_size=-1``) needs ``max_frames`` (the clip length).
        ``graphs`` (windowed streams): run the no-grad passes through these CUDA graphs; the KV
        cache and text K/V buffers are then the graphs' own, reused by the next clip.
        """
        if spec.local_attn_size > 0:
            capacity = spec.local_attn_size
        elif max_frames is None:
            raise ValueError("full causal streaming (local_attn_size=-1) needs max_frames, the clip's latent frames")
        else:
            capacity = max_frames
        cfg, param = self.config, self.patch_embedding.weight
        height, width = latent_hw
        tokens = (height // cfg.patch_size[1]) * (width // cfg.patch_size[2])
        layout, batch, cross_kv = CacheLayout(spec, capacity), context.shape[0], self.text_kv(context)

        def make_caches() -> list[SelfAttnCache]:
            return [SelfAttnCache(batch, layout, tokens, cfg.num_heads, cfg.head_dim, param.dtype, param.device)
                    for _ in self.blocks]

        if graphs is None or not layout.windowed:
            return StreamState(spec, make_caches(), cross_kv, self.encode_audio(audio_emb), height, width)
        graphs.bind(tuple(p.data_ptr() for p in self.parameters()))  # weights moved: recapture
        caches = graphs.buffers(("cache", batch, capacity, tokens, spec, param.dtype), make_caches)
        for cache in caches:
            cache.layout = layout
        text = graphs.buffers(("text", tuple(cross_kv[0][0].shape), param.dtype),
                              lambda: [(k.clone(), v.clone()) for k, v in cross_kv])
        for (k_buf, v_buf), (k, v) in zip(text, cross_kv):
            k_buf.copy_(k)
            v_buf.copy_(v)
        return StreamState(spec, caches, text, self.encode_audio(audio_emb), height, width, graphs=graphs)

    def forward_chunk(self, x_t: torch.Tensor, t: torch.Tensor | float, y: torch.Tensor, state: StreamState, *,
                      start_frame: int | None = None, write_cache: bool = False,
                      bf16_attn: bool = False) -> torch.Tensor:
        """Flow for one chunk ``x_t [B,16,n,H,W]`` (latent frames ``start_frame .. +n``).

        ``y`` holds the chunk's own 49 conditioning frames; the chunk's audio is sliced from
        the clip's audio given to ``new_stream``. ``start_frame`` defaults to
        ``state.next_frame``. Denoising passes read the cache; the final pass on the clean chunk
        (``t=0``) passes ``write_cache=True`` to commit the chunk (writes are detached).
        """
        start = state.next_frame if start_frame is None else start_frame
        frames = x_t.shape[2]
        past = state.layout.past(start, frames)
        audio = None
        if state.audio is not None:
            if start + frames > state.audio.shape[2]:
                raise ValueError(f"chunk frames {start}..{start + frames} exceed the clip's "
                                 f"{state.audio.shape[2]} latent frames of audio")
            audio = state.audio[:, :, start:start + frames]
        _, ph, pw = self.config.patch_size
        grid = (frames, x_t.shape[3] // ph, x_t.shape[4] // pw)
        rope = self.chunk_rope(state, start, grid, past)
        e, m = self.stream_time(state, t, x_t.shape[0], frames)
        inputs = {"x": x_t, "y": y, "audio": audio, "e": e, "m": m, "rope": rope.chunk, "sink_rope": rope.sink}

        def run(i: Inputs) -> torch.Tensor:
            chunk_rope = ChunkRope(rope.key, i["rope"], i["sink_rope"])
            plan = StreamPlan(state, chunk_rope, grid, start, past, write_cache, bf16_attn)
            return self._run(i["x"], (i["e"], i["m"]), i["y"], state.cross_kv, i["audio"], plan)

        if state.graphs is None or torch.is_grad_enabled():
            out = run(inputs)
        else:  # the pass's shape and what it writes; the buffers it reads are the graphs' own
            keeps_sink = start if write_cache and start < state.layout.sink else None
            out = state.graphs.run((past, grid, keeps_sink, bf16_attn, id(state.caches[0].k), id(state.cross_kv[0][0])),
                                   inputs, run)
        if write_cache:
            moves = state.layout.commit(frames)
            for cache in state.caches:
                cache.move(moves)
        return out

    def chunk_rope(self, state: StreamState, start: int, grid: tuple[int, int, int], past: int) -> ChunkRope:
        """The chunk's float32 RoPE factors, built on the device once per chunk (kept in ``state``)."""
        frames, h, w = grid
        key = (start, frames, past)
        if state.rope is not None and state.rope.key == key:
            return state.rope
        dev, hd, theta = self.patch_embedding.weight.device, self.config.head_dim, self.config.rope_theta
        chunk = rope_factors32(hd, torch.arange(start, start + frames, device=dev), h, w, theta)
        sink_held = state.layout.sink_held() if state.spec.dynamic_rope else 0
        sink = None
        if sink_held and past:
            sink = rope_factors32(hd, torch.arange(start - past, start - past + sink_held, device=dev), h, w, theta)
        state.rope = ChunkRope(key, chunk, sink)
        return state.rope

    def stream_time(self, state: StreamState, t: torch.Tensor | float, batch: int,
                    frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`embed_time` for a streaming pass; a float ``t`` is embedded once per clip (no-grad passes)."""
        if not isinstance(t, float) or torch.is_grad_enabled():
            return self.embed_time(t, batch, frames)
        if t not in state.times:
            state.times[t] = self.embed_time(t, 1, 1)
        e, m = state.times[t]
        return e.expand(batch, frames, -1), m.expand(batch, frames, -1, -1)

    def _run(self, x_t: torch.Tensor, time: tuple[torch.Tensor, torch.Tensor], y: torch.Tensor,
             text_kv: list[tuple[torch.Tensor, torch.Tensor]], audio: torch.Tensor | None,
             plan: AttentionPlan) -> torch.Tensor:
        """Patch-embed ``cat(x_t, y)``, run the blocks (audio added before blocks 2..L/2), unpatchify.

        ``time`` is the per-frame ``(e, m)`` of :meth:`embed_time`.
        """
        dtype = self.patch_embedding.weight.dtype
        inp = torch.cat([x_t, y], dim=1).to(dtype)
        if inp.shape[1] != self.config.in_dim:
            raise ValueError(f"x_t and y must have {self.config.in_dim} channels together, got {inp.shape[1]}")
        x = self.patch_embedding(inp)
        b, _, frames, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        e, mod = time
        if audio is not None and audio.shape[2] != frames:
            raise ValueError(f"audio covers {audio.shape[2]} latent frames, the latents {frames}")
        for i, block in enumerate(self.blocks):
            if audio is not None and 2 <= i <= len(self.blocks) // 2:
                x = (x.unflatten(1, (frames, h * w)) + audio[i - 2].unsqueeze(2)).flatten(1, 2)
            x = block(x, mod, text_kv[i], plan, i)
        return self.unpatchify(self.head(x, e), frames, h, w)

    def unpatchify(self, tokens: torch.Tensor, frames: int, h: int, w: int) -> torch.Tensor:
        """``[B, F*h*w, pt*ph*pw*C]`` (channel fastest) -> ``[B, C, F*pt, h*ph, w*pw]``."""
        pt, ph, pw = self.config.patch_size
        b = tokens.shape[0]
        u = tokens.reshape(b, frames, h, w, pt, ph, pw, self.config.out_dim)
        return u.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(b, self.config.out_dim, frames * pt, h * ph, w * pw)
