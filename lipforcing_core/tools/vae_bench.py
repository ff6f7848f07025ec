"""Throughput and peak memory of streaming decode (Wan VAE or TAEHV), for clips of several lengths.

Memory is measured as the peak total size of the tensor storages that the decode itself creates
and keeps alive (activations, the per-stream caches, outputs not yet dropped), tracked op by op
with a ``TorchDispatchMode`` and storage weak references. Weights and the input latents are not
counted; nor are kernel-internal scratch buffers (e.g. oneDNN workspaces), which do not depend
on clip length. This works the same on CPU, where PyTorch keeps no allocator statistics, and on
CUDA, where ``torch.cuda.max_memory_allocated`` is reported as well. Frames are consumed and
dropped as they come out, as a video writer would, so a constant peak means the stream state
does not grow with clip length. Timing runs without the tracker (it slows every op).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from lipforcing_core.vae.taehv import TAEHV
from lipforcing_core.vae.wan_vae import PRESETS, WanVAE

MEMORY_METHOD = "peak bytes of live tensor storages created during the decode (TorchDispatchMode + storage weakrefs)"


class LiveTensorPeak(TorchDispatchMode):
    """Track the peak total bytes of storages produced by ops inside the context and still alive.

    Storages of the ``exclude`` tensors (the inputs) are not counted even when ops view them.
    """

    def __init__(self, exclude: Sequence[torch.Tensor] = ()) -> None:
        super().__init__()
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}
        self._exclude = {t.untyped_storage()._cdata for t in exclude}
        self.peak_bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage._cdata
                if key in self._exclude:
                    continue
                if key not in self._live or self._live[key][0].expired():
                    self._live[key] = (StorageWeakRef(storage), storage.nbytes())
        self._live = {k: v for k, v in self._live.items() if not v[0].expired()}
        self.peak_bytes = max(self.peak_bytes, sum(n for _, n in self._live.values()))
        return out


def _tiny_model(kind: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    if kind == "wan":
        return WanVAE(PRESETS["tiny"])
    if kind == "taehv":
        return TAEHV()
    raise ValueError(f"kind must be 'wan' or 'taehv', got {kind!r}")


def _stream_decode(model: torch.nn.Module, latent: torch.Tensor) -> int:
    """Decode one latent per call, dropping frames as they come; returns the number of frames."""
    stream = model.new_decode_stream()
    frames = 0
    for i in range(latent.shape[2]):
        frames += model.decode_chunk(latent[:, :, i:i + 1], stream).shape[2]
    return frames


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_stream_decode(
    kind: str = "wan",
    latent_frames: Sequence[int] = (30, 120),
    latent_hw: tuple[int, int] = (4, 4),
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    model: torch.nn.Module | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict:
    """Stream-decode random latents of each length; report frames/s and peak memory per length.

    ``kind`` picks a random-weight tiny model (``wan``: the tiny Wan VAE config; ``taehv``: the
    taew2_1 architecture) unless ``model`` is given. ``memory_ratio`` is the largest peak over the
    smallest; 1.0 means streaming memory does not grow with clip length.
    """
    device = torch.device(device)
    model = (model or _tiny_model(kind, seed)).to(device, dtype).eval()
    gen = torch.Generator().manual_seed(seed)
    runs = []
    with torch.inference_mode():
        _stream_decode(model, torch.randn(1, 16, 2, *latent_hw, generator=gen).to(device, dtype))  # warm-up
        for n in latent_frames:
            latent = torch.randn(1, 16, n, *latent_hw, generator=gen).to(device, dtype)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            _sync(device)
            start = clock()
            frames = _stream_decode(model, latent)
            _sync(device)
            seconds = clock() - start
            run = {"latent_frames": n, "frames": frames, "seconds": seconds, "fps": frames / seconds}
            if device.type == "cuda":
                run["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(device) - base
            with LiveTensorPeak(exclude=[latent]) as tracker:
                _stream_decode(model, latent)
            run["peak_tensor_bytes"] = tracker.peak_bytes
            runs.append(run)
    peaks = [r["peak_tensor_bytes"] for r in runs]
    return {
        "kind": kind,
        "model": type(model).__name__,
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "latent_hw": list(latent_hw),
        "memory_method": MEMORY_METHOD,
        "runs": runs,
        "memory_ratio": max(peaks) / min(peaks),
    }
