"""CUDA graphs for the streaming student's passes: one graph per pass shape, reused across clips.

A windowed stream has a handful of pass shapes (the window phases: chunk 0, chunk 1, then every
later chunk; the first chunk's cache-write pass also stores the sink keys), so a few graphs
cover a clip of any length. A graph replays fixed kernels on fixed addresses, so everything a
pass reads lives in buffers owned here: the per-pass inputs (latents, conditioning, the chunk's
audio, time embedding and RoPE factors) are copied into static tensors before each replay, and
the KV cache and the text K/V are buffers that every clip of the same shape reuses
(``LipForcingDiT.new_stream`` takes them from :meth:`StreamGraphs.buffers`). One clip at a time
streams through one :class:`StreamGraphs`.

``capture=False`` runs the same static-buffer path eagerly: the bookkeeping (keys, buffer reuse,
copies) is then testable without a GPU (tests/test_dit_model.py); tests/test_device.py checks
the captured graphs against eager passes on CUDA.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable

import torch
from torch import Tensor

Inputs = dict[str, Tensor | None]


class StreamGraphs:
    """Captured passes keyed by shape, plus the reusable stream buffers they read."""

    def __init__(self, capture: bool = True, warmup: int = 1):
        if capture and not torch.cuda.is_available():
            raise ValueError("CUDA graphs need a CUDA device; use capture=False (or no graphs) on CPU")
        self.capture, self.warmup = capture, warmup
        self._graphs: dict[Hashable, tuple[torch.cuda.CUDAGraph | None, Inputs, Tensor | None]] = {}
        self._buffers: dict[Hashable, object] = {}
        self._pool = torch.cuda.graph_pool_handle() if capture else None
        self._weights: Hashable = None

    def bind(self, weights: Hashable) -> None:
        """Forget every graph unless ``weights`` (e.g. the parameters' addresses) are those captured:
        a graph reads its weights where they were, so moved or reloaded weights need new graphs."""
        if weights != self._weights:
            self._graphs.clear()
            self._weights = weights

    @property
    def keys(self) -> list[Hashable]:
        """The pass shapes captured so far."""
        return list(self._graphs)

    def buffers(self, key: Hashable, make: Callable[[], object]) -> object:
        """The buffers stored under ``key`` (made by ``make()`` the first time)."""
        if key not in self._buffers:
            self._buffers[key] = make()
        return self._buffers[key]

    def run(self, key: Hashable, inputs: Inputs, fn: Callable[[Inputs], Tensor]) -> Tensor:
        """``fn(inputs)`` through the graph of ``key``: inputs copied into its static tensors, replayed.

        ``fn`` may write only to buffers from :meth:`buffers`, and the same values on every call
        with the same inputs (warm-up and capture run it too).
        """
        full_key = (key, tuple((name, None if t is None else (tuple(t.shape), t.dtype)) for name, t in inputs.items()))
        if full_key not in self._graphs:
            static = {name: None if t is None else t.clone(memory_format=torch.contiguous_format)
                      for name, t in inputs.items()}
            self._graphs[full_key] = self._capture(fn, static) if self.capture else (None, static, None)
        graph, static, out = self._graphs[full_key]
        for name, t in inputs.items():
            if t is not None:
                static[name].copy_(t)
        if graph is None:
            return fn(static)
        graph.replay()
        return out.clone()

    def _capture(self, fn: Callable[[Inputs], Tensor], static: Inputs):
        """Warm up and capture ``fn(static)``; if capture fails, warn once and run eagerly from then on."""
        try:
            return self._record(fn, static)
        except RuntimeError as err:
            warnings.warn(f"CUDA graph capture of a streaming pass failed ({err}); running the passes eagerly",
                          stacklevel=4)
            self.capture = False
            torch.cuda.synchronize()
            return None, static, None

    def _record(self, fn: Callable[[Inputs], Tensor], static: Inputs):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up (lazy library init, autotuning) outside the capture
            for _ in range(self.warmup):
                fn(static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out = fn(static)
        return graph, static, out
