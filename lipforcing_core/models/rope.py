"""3D rotary position embedding of the Wan2.1 DiT.

Channels ``(2i, 2i+1)`` of every head form complex number ``i``. The first pairs rotate with
the temporal (frame) index, the next with the token row, the last with the token column.
Temporal positions are passed explicitly so that the same code serves absolute positions,
chunk offsets and the dynamic (window-relative) positions of the causal student.

Two forms of the same rotation: the reference in float64 complex math (``rope_frequencies`` +
``apply_rope``, used by the full-sequence passes that tests/test_dit_golden.py pins) and the streaming fast path,
float32 ``cos``/``sin`` pairs (angles computed in float64, each rounded once to float32) held as
complex64 so that a rotation is one complex multiply (``rope_factors32`` + ``apply_rope32``);
the two agree to float32 rounding (tests/test_dit_model.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

RopeTables = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Real channels per axis (frame, row, column), e.g. 44/42/42 for head_dim 128."""
    spatial = 2 * (head_dim // 6)
    return head_dim - 2 * spatial, spatial, spatial


def _angles(dim: int, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """float64 angles ``[len(positions), dim/2]`` of one axis."""
    freqs = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim)
    return torch.outer(positions.to(torch.float64), freqs)


def _axis_table(dim: int, positions: int, theta: float) -> torch.Tensor:
    angles = _angles(dim, torch.arange(positions), theta)
    return torch.polar(torch.ones_like(angles), angles)


def rope_tables(head_dim: int, positions: int = 1024, theta: float = 10000.0,
                device: torch.device | str = "cpu") -> RopeTables:
    """complex128 tables ``[positions, pairs]`` for the frame, row and column axes."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
    return tuple(_axis_table(d, positions, theta).to(device) for d in axis_dims(head_dim))


def rope_frequencies(tables: RopeTables, frame_pos: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Rotation factors ``[F*height*width, 1, head_dim/2]`` for tokens ordered (frame, row, col).

    ``frame_pos`` holds the temporal RoPE index of each of the F frames.
    """
    t_tab, h_tab, w_tab = tables
    f = frame_pos.numel()
    parts = (
        t_tab[frame_pos.to(t_tab.device)].view(f, 1, 1, -1).expand(f, height, width, -1),
        h_tab[:height].view(1, height, 1, -1).expand(f, height, width, -1),
        w_tab[:width].view(1, 1, width, -1).expand(f, height, width, -1),
    )
    return torch.cat(parts, dim=-1).reshape(f * height * width, 1, -1)


def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [B, S, heads, head_dim]`` by ``freqs [S, 1, head_dim/2]`` in float64."""
    b, s, n, d = x.shape
    xc = torch.view_as_complex(x.to(torch.float64).reshape(b, s, n, d // 2, 2))
    return torch.view_as_real(xc * freqs).flatten(3).to(x.dtype)


def rope_factors32(head_dim: int, frame_pos: torch.Tensor, height: int, width: int,
                   theta: float = 10000.0) -> torch.Tensor:
    """complex64 ``cos + i sin`` ``[F*height*width, 1, head_dim/2]`` for tokens ordered (frame, row, col).

    ``frame_pos`` (any device, any length: positions are not limited to a table) holds the
    temporal index of each frame; the tables are built on its device.
    """
    dev, (dt, dh, dw) = frame_pos.device, axis_dims(head_dim)
    f = frame_pos.numel()
    parts = (
        _angles(dt, frame_pos, theta).view(f, 1, 1, -1).expand(f, height, width, -1),
        _angles(dh, torch.arange(height, device=dev), theta).view(1, height, 1, -1).expand(f, height, width, -1),
        _angles(dw, torch.arange(width, device=dev), theta).view(1, 1, width, -1).expand(f, height, width, -1),
    )
    angles = torch.cat(parts, dim=-1).reshape(f * height * width, 1, -1)
    return torch.complex(torch.cos(angles).float(), torch.sin(angles).float())


def apply_rope32(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [B, S, heads, head_dim]`` by complex64 ``factors [S, 1, head_dim/2]`` (float32 math)."""
    xc = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(xc * factors).flatten(3).to(x.dtype)


@dataclass
class ChunkRope:
    """float32 RoPE factors of one chunk: its tokens at absolute positions and (dynamic RoPE, sink
    frames in the window) the sink frames at ``s + start - past``; see models/kv_cache.py."""

    key: tuple[int, int, int]  # (start, frames, past)
    chunk: torch.Tensor  # complex64 factors of the chunk's tokens
    sink: torch.Tensor | None  # complex64 factors of the sink frames' tokens


def chunk_frame_counts(num_frames: int, chunk_size: int) -> list[int]:
    """Frames per causal chunk; the first chunk takes the remainder (official convention)."""
    if num_frames <= 0:
        return []
    full, rest = divmod(num_frames, chunk_size)
    if full == 0:
        return [rest]
    return [chunk_size + rest] + [chunk_size] * (full - 1)


def dynamic_rope_indices(num_frames: int, chunk_size: int, local_attn_size: int, sink_size: int) -> torch.Tensor:
    """Temporal RoPE index per frame in full-sequence mode with dynamic RoPE (the quirk in docs/design.md §4).

    Frame ``f`` gets ``f - ws`` where ``ws = max(0, E - (W - S))`` for the end ``E`` of f's own
    chunk; sink frames keep their absolute index. Without a window the index is absolute.
    """
    if local_attn_size <= 0:
        return torch.arange(num_frames)
    indices, start = [], 0
    for count in chunk_frame_counts(num_frames, chunk_size):
        end = start + count
        window_start = max(0, end - (local_attn_size - sink_size))
        indices += [f if f < sink_size else f - window_start for f in range(start, end)]
        start = end
    return torch.tensor(indices, dtype=torch.long)
