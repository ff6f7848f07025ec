"""Per-layer self-attention KV cache of the streaming student, in a static slot layout.

Each layer owns one K and one V buffer, allocated once at the start of a clip and never
re-allocated: ``local_attn_size`` frames when a window is used (memory constant in clip
length), or ``max_frames`` frames for full causal attention. Writes are detached.

Slots (frames of ``tokens_per_frame`` tokens) are laid out ``sink | recent | current``: the
``sink_size`` first frames of the clip, a ring of the most recent frames, then the chunk being
run. Keys are stored rotated by RoPE at their absolute frame position (rotated once, when
written), so attention depends only on which frames are present, not on their slot order, and
a chunk always attends to one contiguous slice ``[0, past + frames)`` of the buffers: no
concatenation and, for a given window phase, fixed shapes. Committing a chunk moves at most
``chunk_size`` frames into the ring. The slot bookkeeping is plain integers
(:class:`CacheLayout`) shared by all layers.

With dynamic RoPE (the released student) the official code rotates the window with positions
``0 .. past + frames - 1``. Only differences of positions matter to attention, and for the
recent and current frames they equal the absolute differences; the sink frames are the one
exception (window position ``s`` whatever the chunk), so they are also kept un-rotated and
re-rotated for every pass at absolute position ``s + start - past``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config import CausalSpec
from .cuda_graphs import StreamGraphs
from .rope import ChunkRope


class CacheLayout:
    """Which slot holds which frame: ``end_frame`` frames committed, a ring of ``ring`` recent slots."""

    def __init__(self, spec: CausalSpec, capacity: int):
        self.spec, self.capacity = spec, capacity
        self.windowed = spec.local_attn_size > 0
        self.sink = min(spec.sink_size, capacity) if self.windowed else 0
        self.ring = (max(0, spec.local_attn_size - self.sink - spec.chunk_size) if self.windowed
                     else capacity - self.sink)
        self.end_frame = 0

    @property
    def frames(self) -> int:
        """Frames the official cache reports as held (its ``local_end_index`` in frames)."""
        return min(self.end_frame, self.capacity)

    def sink_held(self) -> int:
        return min(self.sink, self.end_frame)

    def past(self, start_frame: int, new_frames: int) -> int:
        """Slots ``[0, past)`` that a chunk of ``new_frames`` at ``start_frame`` attends to; the chunk
        itself runs in slots ``[past, past + new_frames)``.

        With a window W and sink S the chunk sees the S sink frames plus the newest
        ``W - S - new_frames`` earlier frames; without a window it sees every earlier frame.
        """
        if start_frame > self.end_frame:
            raise ValueError(f"chunk starts at latent frame {start_frame} but only frames "
                             f"< {self.end_frame} are cached; write every chunk before the next one")
        if start_frame < self.end_frame:
            raise ValueError(f"frame {start_frame} was already committed to the KV cache (next frame "
                             f"{self.end_frame}); chunks run in order")
        sink = self.sink_held()
        recent = min(self.end_frame - sink, self.ring)
        if self.windowed and recent > max(0, self.spec.local_attn_size - self.sink - new_frames):
            raise ValueError(f"a chunk of {new_frames} frames after the first one must have chunk_size "
                             f"{self.spec.chunk_size} frames or fewer with a window")
        past = sink + recent
        if past + new_frames > self.capacity:
            if not self.windowed:
                raise ValueError(f"KV cache holds {self.capacity} frames; raise max_frames for full attention")
            raise ValueError(f"a chunk of {new_frames} frames does not fit the {self.capacity}-frame window")
        return past

    def commit(self, new_frames: int) -> list[tuple[int, int, int]]:
        """Record a chunk written at ``[past, past + new_frames)``; return the slot moves ``(src, dst, count)``
        that put its non-sink frames into the ring (the oldest recent frames are overwritten)."""
        past = self.past(self.end_frame, new_frames)
        moves: list[tuple[int, int, int]] = []
        first_kept = self.end_frame + new_frames - self.ring  # older non-sink frames are dropped
        for j in range(new_frames):
            g = self.end_frame + j
            if g < self.sink or g < first_kept or self.ring == 0:
                continue
            src, dst = past + j, self.sink + (g - self.sink) % self.ring
            if src == dst:
                continue
            if moves and moves[-1][0] + moves[-1][2] == src and moves[-1][1] + moves[-1][2] == dst:
                moves[-1] = (moves[-1][0], moves[-1][1], moves[-1][2] + 1)
            else:
                moves.append((src, dst, 1))
        self.end_frame += new_frames
        return moves


class SelfAttnCache:
    """K/V of one block, ``[B, capacity*tokens_per_frame, heads, head_dim]``, in the slots of ``layout``.

    ``sink_k`` holds the sink frames' keys un-rotated (dynamic RoPE only).
    """

    def __init__(self, batch: int, layout: CacheLayout, tokens_per_frame: int, heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str):
        shape = (batch, layout.capacity * tokens_per_frame, heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.layout, self.fs, self.capacity = layout, tokens_per_frame, layout.capacity
        sink = layout.sink if layout.spec.dynamic_rope else 0
        self.sink_k = torch.zeros((batch, sink * tokens_per_frame, heads, head_dim), dtype=dtype, device=device)

    @property
    def frames(self) -> int:
        return self.layout.frames

    @property
    def end_frame(self) -> int:
        return self.layout.end_frame

    def tokens(self, first_frame: int, frames: int) -> slice:
        return slice(first_frame * self.fs, (first_frame + frames) * self.fs)

    def write(self, past: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Put a chunk's (rotated) K/V into its slots ``[past, past + frames)`` (detached)."""
        sl = self.tokens(past, k.shape[1] // self.fs)
        self.k[:, sl] = k.detach()
        self.v[:, sl] = v.detach()

    def keep_sink(self, start_frame: int, raw_k: torch.Tensor) -> None:
        """Store the un-rotated keys of the chunk's frames that are sink frames (dynamic RoPE)."""
        sink = self.sink_k.shape[1] // self.fs - start_frame
        if sink > 0:
            n = min(sink, raw_k.shape[1] // self.fs)
            self.sink_k[:, self.tokens(start_frame, n)] = raw_k[:, :n * self.fs].detach()

    def move(self, moves: list[tuple[int, int, int]]) -> None:
        for src, dst, count in moves:
            for buf in (self.k, self.v):
                buf[:, self.tokens(dst, count)] = buf[:, self.tokens(src, count)]


@dataclass
class StreamState:
    """Everything one clip's streaming loop carries between chunks (see ``LipForcingDiT.new_stream``)."""

    spec: CausalSpec
    caches: list[SelfAttnCache]
    cross_kv: list[tuple[torch.Tensor, torch.Tensor]]
    audio: torch.Tensor | None  # [projections, B, T, dim] for the whole clip
    height: int  # latent rows
    width: int  # latent columns
    #: time embeddings ``(e, m)`` of the schedule's times, computed once per clip (no-grad passes)
    times: dict[float, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    #: RoPE factors of the chunk being run (built once for its passes)
    rope: ChunkRope | None = None
    #: CUDA graphs the no-grad passes run through (see models/cuda_graphs.py), or None
    graphs: StreamGraphs | None = None

    @property
    def layout(self) -> CacheLayout:
        return self.caches[0].layout

    @property
    def next_frame(self) -> int:
        """Latent frame index where the next chunk starts (frames written so far)."""
        return self.layout.end_frame

    def cache_bytes(self) -> int:
        return sum(c.k.numel() * c.k.element_size() * 2 for c in self.caches)
