"""Per-layer self-attention KV cache of the streaming student (sink frames + rolling window).

Each layer owns one K and one V buffer, allocated once at the start of a clip and never
re-allocated: ``local_attn_size`` frames when a window is used (memory constant in clip
length), or ``max_frames`` frames for full causal attention. Writes are detached.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import CausalSpec


class SelfAttnCache:
    """K/V of past latent frames for one block, ``[B, capacity*tokens_per_frame, heads, head_dim]``.

    Slots hold the sink frames first, then the most recent frames in order. ``frames`` is the
    number of frames held, ``end_frame`` the global index one past the newest cached frame.
    """

    def __init__(self, batch: int, capacity: int, tokens_per_frame: int, heads: int, head_dim: int,
                 spec: CausalSpec, dtype: torch.dtype, device: torch.device | str):
        shape = (batch, capacity * tokens_per_frame, heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.capacity, self.fs, self.spec = capacity, tokens_per_frame, spec
        self.frames = 0
        self.end_frame = 0

    def _held_before(self, start_frame: int) -> int:
        """Frames held that precede ``start_frame`` (a chunk may be re-run after it was written)."""
        if start_frame > self.end_frame:
            raise ValueError(f"chunk starts at latent frame {start_frame} but only frames "
                             f"< {self.end_frame} are cached; write every chunk before the next one")
        newer = self.end_frame - start_frame
        if newer > self.frames - min(self.spec.sink_size, self.frames):
            raise ValueError(f"frame {start_frame} was already evicted from the KV cache")
        return self.frames - newer

    def window(self, start_frame: int, new_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached K, V that a chunk of ``new_frames`` starting at ``start_frame`` attends to.

        With a window W and sink S the chunk sees the S sink frames plus the newest
        ``W - S - new_frames`` earlier frames; without a window it sees every earlier frame.
        """
        held = self._held_before(start_frame)
        sink = min(self.spec.sink_size, held)
        recent = held - sink
        if self.spec.local_attn_size > 0:
            recent = min(recent, max(0, self.spec.local_attn_size - new_frames - sink))
        return self._frames(self.k, sink, held - recent, held), self._frames(self.v, sink, held - recent, held)

    def _frames(self, buf: torch.Tensor, sink: int, lo: int, hi: int) -> torch.Tensor:
        """Slots ``[0, sink)`` and ``[lo, hi)`` of ``buf`` (a view when they are contiguous)."""
        fs = self.fs
        if sink == lo:
            return buf[:, :hi * fs]
        return torch.cat([buf[:, :sink * fs], buf[:, lo * fs:hi * fs]], 1)

    def write(self, k: torch.Tensor, v: torch.Tensor, start_frame: int) -> None:
        """Store a chunk's K/V (detached), evicting the oldest non-sink frames when full."""
        self.frames = self._held_before(start_frame)
        self.end_frame = start_frame
        new = k.shape[1] // self.fs
        overflow = self.frames + new - self.capacity
        if overflow > 0:
            if self.spec.local_attn_size <= 0:
                raise ValueError(f"KV cache holds {self.capacity} frames; raise max_frames for full attention")
            sink, fs = min(self.spec.sink_size, self.frames), self.fs
            keep = slice((sink + overflow) * fs, self.frames * fs)
            for buf in (self.k, self.v):
                buf[:, sink * fs:(self.frames - overflow) * fs] = buf[:, keep].clone()
            self.frames -= overflow
        self.k[:, self.frames * self.fs:(self.frames + new) * self.fs] = k.detach()
        self.v[:, self.frames * self.fs:(self.frames + new) * self.fs] = v.detach()
        self.frames += new
        self.end_frame += new


@dataclass
class StreamState:
    """Everything one clip's streaming loop carries between chunks (see ``LipForcingDiT.new_stream``)."""

    spec: CausalSpec
    caches: list[SelfAttnCache]
    cross_kv: list[tuple[torch.Tensor, torch.Tensor]]
    audio: torch.Tensor | None  # [projections, B, T, dim] for the whole clip
    height: int  # latent rows
    width: int  # latent columns

    @property
    def next_frame(self) -> int:
        """Latent frame index where the next chunk starts (frames written so far)."""
        return self.caches[0].end_frame

    def cache_bytes(self) -> int:
        return sum(c.k.numel() * c.k.element_size() * 2 for c in self.caches)
