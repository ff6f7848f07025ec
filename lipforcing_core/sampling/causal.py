"""The causal student's few-step streaming sampler (docs/design.md §4).

Per chunk of latent frames: start from the chunk's slice of the clip noise, then for each
``t`` of the schedule predict ``x0`` with the cache read-only and, if another step follows,
re-noise ``x0`` to the next ``t`` with **fresh** noise. The last ``x0`` is the chunk's output.
After the output has been used (decoded), a final pass on the clean chunk at ``t = 0`` writes
its K/V into the cache so later chunks attend to it. No CFG.

The schedule is data: ``t_list`` is the official list of times ending in 0, e.g. the released
two-step ``(0.999, 0.769, 0.0)``; ``len(t_list) - 1`` denoising passes (1-4) per chunk.

Noise is a :class:`NoiseSource` so a run can be seeded (:class:`SeededNoise`, the official draw
order: the whole clip's initial noise first, then one draw per re-noise) or replayed from stored
tensors (:class:`ReplayNoise`, with which tests/test_dit_golden.py replays the reference noise).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Protocol

import torch
from torch import Tensor

from ..config import STREAM_WINDOW, CausalSpec
from ..models.dit import LipForcingDiT
from ..models.cuda_graphs import StreamGraphs
from ..models.kv_cache import StreamState
from .schedule import STUDENT_T_LIST, renoise, x0_from_flow

MAX_STEPS = 4


def check_t_list(t_list: Sequence[float]) -> tuple[float, ...]:
    """Validate a student schedule: strictly decreasing times in (0, 1), then a final 0.0."""
    ts = tuple(float(t) for t in t_list)
    steps = len(ts) - 1
    if not 1 <= steps <= MAX_STEPS or ts[-1] != 0.0:
        raise ValueError(f"t_list must be 2-{MAX_STEPS + 1} times ending in 0.0 (1-{MAX_STEPS} denoising steps), "
                         f"e.g. {STUDENT_T_LIST}; got {ts}")
    if any(not 0.0 < t < 1.0 for t in ts[:-1]) or any(a <= b for a, b in pairwise(ts)):
        raise ValueError(f"t_list must decrease strictly from below 1.0 to 0.0, got {ts}")
    return ts


class NoiseSource(Protocol):
    """Where the sampler's Gaussian noise comes from."""

    def initial(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        """The whole clip's starting noise ``[B, 16, L, H, W]`` (drawn once, before any chunk)."""

    def renoise(self, like: Tensor) -> Tensor:
        """Fresh noise shaped like ``like`` for one re-noise step."""


class SeededNoise:
    """Gaussian draws from a ``torch.Generator`` in the official order (reproducible per seed).

    ``seed`` may be an int (a new generator on ``device`` is seeded with it, like the official
    ``torch.manual_seed(seed)``) or an existing generator, which is used and advanced as is.
    """

    def __init__(self, seed: int | torch.Generator = 42, device: torch.device | str = "cpu"):
        if isinstance(seed, torch.Generator):
            self.generator = seed
        else:
            self.generator = torch.Generator(device=device).manual_seed(int(seed))

    def _draw(self, shape, dtype, device) -> Tensor:
        out = torch.randn(shape, generator=self.generator, dtype=dtype, device=self.generator.device)
        return out.to(device)

    def initial(self, shape, dtype, device):
        return self._draw(shape, dtype, device)

    def renoise(self, like):
        return self._draw(like.shape, like.dtype, like.device)


class ReplayNoise:
    """Stored noise: ``initial`` for the clip, then the ``renoise`` tensors in order of use."""

    def __init__(self, initial: Tensor, renoise: Sequence[Tensor] = ()):
        self._initial, self._renoise = initial, list(renoise)
        self._used = 0

    def initial(self, shape, dtype, device):
        if tuple(self._initial.shape) != tuple(shape):
            raise ValueError(f"stored initial noise has shape {tuple(self._initial.shape)}, the clip needs {tuple(shape)}")
        return self._initial.to(device, dtype)

    def renoise(self, like):
        if self._used >= len(self._renoise):
            raise ValueError(f"all {len(self._renoise)} stored re-noise tensors are used up")
        eps = self._renoise[self._used]
        self._used += 1
        if eps.shape != like.shape:
            raise ValueError(f"stored re-noise tensor {self._used - 1} has shape {tuple(eps.shape)}, "
                             f"expected {tuple(like.shape)}")
        return eps.to(like.device, like.dtype)


def denoise_chunk(model: LipForcingDiT, state: StreamState, x_t: Tensor, y: Tensor, t_list: Sequence[float],
                  start_frame: int, fresh_noise: Callable[[int, Tensor], Tensor], *, exit_step: int | None = None,
                  bf16_attn: bool = False, record: dict[str, Tensor] | None = None) -> Tensor:
    """The one denoise-a-chunk loop of the student, shared by inference and the training rollout.

    From ``x_t`` at ``t_list[0]``, step ``i`` predicts ``x0`` with the cache read-only; before
    the exit step (default: the last denoising time) ``x0`` is re-noised to ``t_list[i + 1]``
    with ``fresh_noise(i + 1, x0)``. Returns the exit step's ``x0``. If autograd is on when
    called, only the exit step builds a graph (earlier steps run without one).

    Initial-noise conventions (the caller builds ``x_t``): the streaming sampler starts from the
    Gaussian draw itself, as the released inference code does (tests/test_dit_golden.py pins it
    with the official streaming vectors). The training rollout (training/rollout.py) starts from
    ``t_list[0] * eps``, the forward process ``(1 - t) x0 + t eps`` at ``t_list[0]`` without its
    data term, the convention the stage-2 trainer and the shipped demo student were trained and
    tested with. At ``t_list[0] = 0.999`` the two differ by 0.1 % in scale; each keeps its own so
    that inference stays equal to the official vectors and training runs stay reproducible.

    ``record`` receives ``xt_step{i}``, ``flow_step{i}``, ``x0_step{i}`` (i from 1).
    """
    last = len(t_list) - 2 if exit_step is None else exit_step
    grad = torch.is_grad_enabled()
    for i in range(last + 1):
        t = t_list[i]
        with torch.set_grad_enabled(grad and i == last):
            flow = model.forward_chunk(x_t, t, y, state, start_frame=start_frame, bf16_attn=bf16_attn)
            x0 = x0_from_flow(x_t, flow, t)
        if record is not None:
            record.update({f"xt_step{i + 1}": x_t, f"flow_step{i + 1}": flow, f"x0_step{i + 1}": x0})
        if i < last:
            x_t = renoise(x0, fresh_noise(i + 1, x0), t_list[i + 1])
    return x0


class CausalSampler:
    """Few-step chunk denoising and cache commits of a :class:`LipForcingDiT` student.

    ``spec`` selects windowed (the released :data:`STREAM_WINDOW`) or full causal attention;
    ``bf16_attn`` emulates the official CPU fallback's bfloat16 attention casts.
    ``cuda_graphs``: run the windowed passes through CUDA graphs (models/cuda_graphs.py), one per
    window phase, captured on first use and reused by every later clip; None (default) turns
    them on when the model is on a CUDA device and the attention is windowed.
    """

    def __init__(self, model: LipForcingDiT, t_list: Sequence[float] = STUDENT_T_LIST,
                 spec: CausalSpec = STREAM_WINDOW, bf16_attn: bool = False, cuda_graphs: bool | None = None):
        self.model, self.t_list, self.spec, self.bf16_attn = model, check_t_list(t_list), spec, bf16_attn
        self.cuda_graphs = cuda_graphs
        self.graphs: StreamGraphs | None = None

    def _graphs(self) -> StreamGraphs | None:
        on_cuda = self.model.patch_embedding.weight.is_cuda
        wanted = (on_cuda and self.spec.local_attn_size > 0) if self.cuda_graphs is None else self.cuda_graphs
        if not wanted:
            return None
        if self.graphs is None:
            self.graphs = StreamGraphs(capture=True)
        return self.graphs

    @property
    def chunk_size(self) -> int:
        return self.spec.chunk_size

    @property
    def passes_per_chunk(self) -> int:
        """Transformer passes per chunk: the denoising steps plus the cache write."""
        return len(self.t_list)

    @torch.no_grad()
    def start(self, context: Tensor, audio_emb: Tensor | None, latent_hw: tuple[int, int],
              num_frames: int) -> StreamState:
        """Fresh stream state for one clip of ``num_frames`` latent frames, with the time embeddings of
        the schedule computed (once per clip, so that no pass builds them)."""
        state = self.model.new_stream(context, audio_emb, latent_hw=latent_hw, spec=self.spec, max_frames=num_frames,
                                      graphs=self._graphs())
        for t in self.t_list:
            self.model.stream_time(state, t, 1, 1)
        return state

    @torch.no_grad()
    def denoise(self, state: StreamState, x_t: Tensor, y: Tensor, noise: NoiseSource, start_frame: int,
                record: dict[str, Tensor] | None = None) -> Tensor:
        """Denoise one chunk from its starting noise ``x_t``; returns the clean chunk ``x0``.

        ``record`` (optional) receives every intermediate under the names tests/test_dit_golden.py compares:
        ``flow_step{i}``, ``x0_step{i}``, ``xt_step{i}`` (i from 1).
        """
        return denoise_chunk(self.model, state, x_t, y, self.t_list, start_frame, lambda _, x0: noise.renoise(x0),
                             bf16_attn=self.bf16_attn, record=record)

    @torch.no_grad()
    def commit(self, state: StreamState, x0: Tensor, y: Tensor, start_frame: int,
               record: dict[str, Tensor] | None = None) -> None:
        """The ``t = 0`` pass on the clean chunk that writes its K/V into the cache."""
        flow = self.model.forward_chunk(x0, 0.0, y, state, start_frame=start_frame, write_cache=True,
                                        bf16_attn=self.bf16_attn)
        if record is not None:
            record["flow_cachewrite"] = flow
