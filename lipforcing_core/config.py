"""Architecture configurations of the Lip Forcing DiT (Wan2.1 / OmniAvatar) with named presets.

The released student and the OmniAvatar-LS teacher share one architecture; only the size differs.
``tiny`` is the configuration the golden tests use (docs/design.md §2).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError

FPS = 25  # video frame rate of the released models, their audio features and SyncNet's windows
TEXT_DIM = 4096  # width of a UMT5-XXL text embedding row, the DiT's text input


@dataclass(frozen=True)
class DiTConfig:
    """Constructor arguments of :class:`lipforcing_core.models.dit.LipForcingDiT`."""

    dim: int
    ffn_dim: int
    num_heads: int
    num_layers: int
    in_dim: int = 65
    out_dim: int = 16
    text_dim: int = TEXT_DIM
    freq_dim: int = 256
    eps: float = 1e-6
    patch_size: tuple[int, int, int] = (1, 2, 2)
    audio_dim: int = 10752
    audio_hidden: int = 32
    audio_frames_per_latent: int = 4
    rope_theta: float = 10000.0
    rope_max_positions: int = 1024

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def num_audio_projs(self) -> int:
        """Audio projections; projection ``i`` is added before block ``i + 2``."""
        return self.num_layers // 2 - 1

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")


@dataclass(frozen=True)
class CausalSpec:
    """How the causal student attends over time (docs/design.md §4).

    ``local_attn_size`` is the attention window in latent frames (-1: everything before),
    ``sink_size`` leading frames stay visible, ``dynamic_rope`` re-indexes the temporal RoPE
    position inside the window (keys cached un-rotated) instead of using absolute positions.
    """

    chunk_size: int = 3
    local_attn_size: int = -1
    sink_size: int = 0
    dynamic_rope: bool = False


#: The released student's streaming configuration (window 7 frames with 1 sink, dynamic RoPE).
STREAM_WINDOW = CausalSpec(chunk_size=3, local_attn_size=7, sink_size=1, dynamic_rope=True)
#: Full causal attention with absolute RoPE (cache grows with the clip).
STREAM_FULL = CausalSpec(chunk_size=3, local_attn_size=-1, sink_size=0, dynamic_rope=False)

PRESETS: dict[str, DiTConfig] = {
    "tiny": DiTConfig(dim=128, ffn_dim=256, num_heads=4, num_layers=6),
    "1.3b": DiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30),
    "14b": DiTConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40),
    # the bundled demo model (64x64 faces, 8x8 latents, 16 tokens per latent frame, log-mel audio)
    "demo": DiTConfig(dim=192, ffn_dim=768, num_heads=6, num_layers=6, audio_dim=160),
}


class UnknownPresetError(InputError, KeyError):
    """A preset name that is not in :data:`PRESETS` (a ``KeyError`` too, as a failed lookup)."""

    __str__ = Exception.__str__  # the message, not KeyError's quoted repr


def get_preset(name: str) -> DiTConfig:
    """Return the preset called ``name`` (case-insensitive, e.g. ``"14B"``)."""
    key = name.strip().lower()
    if key not in PRESETS:
        raise UnknownPresetError(f"unknown DiT preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return PRESETS[key]
