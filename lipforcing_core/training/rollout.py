"""Self-Forcing rollout of the causal student with its KV cache (stage 2, docs/design.md §8).

Chunk by chunk, with the inference loop's own denoise-a-chunk function
(:func:`~lipforcing_core.sampling.causal.denoise_chunk`, which also says why training starts
from ``t_list[0] * eps`` and inference from ``eps``): start from ``t_list[0] * eps``, denoise,
re-noise with fresh noise to the next time, ... until the *exit step* (the same for every
chunk), whose prediction is the chunk's output; then a no-grad pass on the clean chunk at
``t = 0`` writes its K/V to the cache (writes are detached). Only the exit-step passes build an
autograd graph; every earlier pass runs under ``no_grad``, and the past K/V a chunk attends to
carry no gradient, so the student learns only through the exit step of each chunk. The text and
audio conditioning are embedded once per clip with gradient.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..config import CausalSpec
from ..models.dit import LipForcingDiT
from ..models.kv_cache import StreamState
from ..models.rope import chunk_frame_counts
from ..sampling.causal import denoise_chunk


def self_rollout(student: LipForcingDiT, noise: torch.Tensor, y: torch.Tensor, context: torch.Tensor,
                 audio: torch.Tensor | None, *, t_list: Sequence[float], exit_step: int, spec: CausalSpec,
                 return_state: bool = False) -> torch.Tensor | tuple[torch.Tensor, StreamState]:
    """Generate latents ``[B, 16, T, H, W]`` with gradient through the exit step of every chunk.

    ``noise`` is ``[len(t_list) - 1, B, 16, T, H, W]``: ``noise[0]`` starts every chunk,
    ``noise[s]`` re-noises to ``t_list[s]``. ``exit_step`` indexes the denoising times
    ``t_list[:-1]``. Without grad mode it is the plain streaming sampler.
    """
    steps, frames = len(t_list) - 1, noise.shape[3]
    if not 0 <= exit_step < steps:
        raise ValueError(f"exit_step must be in 0..{steps - 1} for t_list {tuple(t_list)}, got {exit_step}")
    if noise.shape[0] != steps:
        raise ValueError(f"noise must stack {steps} draws (one per denoising time), got {noise.shape[0]}")
    state = student.new_stream(context, audio, latent_hw=tuple(noise.shape[-2:]), spec=spec, max_frames=frames)
    grad = torch.is_grad_enabled()
    if grad:  # new_stream embeds the conditioning without a graph; the exit steps need one
        state.cross_kv, state.audio = student.text_kv(context), student.encode_audio(audio)
    chunks, start = [], 0
    for count in chunk_frame_counts(frames, spec.chunk_size):
        sl = slice(start, start + count)
        x0 = denoise_chunk(student, state, noise[0][:, :, sl] * t_list[0], y[:, :, sl], t_list, start,
                           lambda step, _, sl=sl: noise[step][:, :, sl], exit_step=exit_step)
        chunks.append(x0)
        with torch.no_grad():
            student.forward_chunk(x0, 0.0, y[:, :, sl], state, start_frame=start, write_cache=True)
        start += count
    out = torch.cat(chunks, 2)
    return (out, state) if return_state else out
