"""Block swap: the last N transformer blocks live in host memory and visit the GPU one at a time.

With ``BlockSwap(model.blocks, n)`` the weights of the last ``n`` blocks are moved to host memory
(pinned when CUDA is present, so copies run asynchronously). When block ``i`` starts, its weights
are copied to the device of its input and, on a separate copy stream, those of block ``i + 1``
are already on their way (one block ahead); when block ``i`` ends its device copy is dropped. The
GPU holds the resident blocks plus at most two swapped ones, and every block computes on exactly
the weights it would have without the swap, so results are bit-identical.

While attached, the swapped blocks' weights are plain tensor attributes of their modules, not
parameters: ``Module.to``, ``state_dict`` and ComfyUI's model loader see (and move) only the
resident part. A swapped block's layer used outside the block's own forward (the text K/V
projections, computed once per clip) is brought over by itself, synchronously.
:meth:`BlockSwap.detach` restores the parameters (on the host).

On a CPU-only machine the same code runs with host and device both the CPU: the copies, the
hook order and the one-ahead prefetch are exercised, the asynchronous overlap is not.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class _Hidden:
    """A swapped parameter: its module, its name there and its host copy."""

    module: nn.Module
    name: str
    host: torch.Tensor


class BlockSwap:
    """Keep the last ``count`` of ``blocks`` in host memory and stream them to the compute device."""

    def __init__(self, blocks: nn.ModuleList, count: int):
        if not 0 < count <= len(blocks):
            raise ValueError(f"blocks to swap must be between 1 and {len(blocks)} (the model's blocks), got {count}")
        self.blocks = blocks
        self.swapped = list(range(len(blocks) - count, len(blocks)))
        pin = torch.cuda.is_available()
        self.hidden = {i: self._hide(blocks[i], pin) for i in self.swapped}
        self.pending: dict[int, tuple[list[torch.Tensor], torch.cuda.Event | None]] = {}
        self.active: int | None = None
        self._streams: dict[torch.device, torch.cuda.Stream] = {}
        self._handles = []
        for i in range(max(self.swapped[0] - 1, 0), len(blocks)):
            self._handles.append(blocks[i].register_forward_pre_hook(self._block_starts(i)))
        for i in self.swapped:
            self._handles.append(blocks[i].register_forward_hook(self._block_ends(i)))
            for module in {h.module for h in self.hidden[i]} - {blocks[i]}:  # the block's own: block hooks
                self._handles.append(module.register_forward_pre_hook(self._layer_starts(i, module)))
                self._handles.append(module.register_forward_hook(self._layer_ends(i, module)))

    @property
    def block_bytes(self) -> int:
        """Bytes of the largest swapped block (the device holds at most two at a time)."""
        return max(sum(h.host.numel() * h.host.element_size() for h in self.hidden[i]) for i in self.swapped)

    def detach(self) -> None:
        """Remove the hooks and give the swapped blocks their parameters back (in host memory)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.pending.clear()
        for hidden in self.hidden.values():
            for h in hidden:
                delattr(h.module, h.name)
                h.module.register_parameter(h.name, nn.Parameter(h.host, requires_grad=False))

    # ------------------------------------------------------------------------------- placement
    @staticmethod
    def _hide(block: nn.Module, pin: bool) -> list[_Hidden]:
        hidden = []
        for module in block.modules():
            for name, param in list(module._parameters.items()):
                if param is None:
                    continue
                host = param.detach().to("cpu")
                host = host.pin_memory() if pin else host
                del module._parameters[name]
                setattr(module, name, host)
                hidden.append(_Hidden(module, name, host))
        return hidden

    def _fetch(self, i: int, device: torch.device) -> None:
        """Start copying block ``i``'s weights to ``device`` (on a copy stream when CUDA)."""
        if i in self.pending:
            return
        stream = self._copy_stream(device)
        with torch.cuda.stream(stream) if stream is not None else nullcontext():
            copies = [torch.empty_like(h.host, device=device).copy_(h.host, non_blocking=True) for h in self.hidden[i]]
            event = stream.record_event() if stream is not None else None
        self.pending[i] = (copies, event)

    def _copy_stream(self, device: torch.device) -> torch.cuda.Stream | None:
        if device.type != "cuda":
            return None
        if device not in self._streams:
            self._streams[device] = torch.cuda.Stream(device)
        return self._streams[device]

    def _place(self, i: int, device: torch.device) -> None:
        """Point block ``i``'s modules at its device copy (waiting for the copy to land)."""
        self._fetch(i, device)
        copies, event = self.pending.pop(i)
        if event is not None:
            compute = torch.cuda.current_stream(device)
            compute.wait_event(event)
            for t in copies:
                t.record_stream(compute)  # not reused by the copy stream before compute is done with it
        for h, t in zip(self.hidden[i], copies):
            setattr(h.module, h.name, t)

    def _release(self, i: int, module: nn.Module | None = None) -> None:
        for h in self.hidden[i]:
            if module is None or h.module is module:
                setattr(h.module, h.name, h.host)

    # ------------------------------------------------------------------------------- hooks
    def _block_starts(self, i: int):
        def hook(block, args):
            device = args[0].device
            if i in self.hidden:
                self._place(i, device)
                self.active = i
            if i + 1 in self.hidden:
                self._fetch(i + 1, device)
        return hook

    def _block_ends(self, i: int):
        def hook(block, args, output):
            self._release(i)
            self.active = None
        return hook

    def _layer_starts(self, i: int, module: nn.Module):
        def hook(layer, args):
            if self.active != i:
                device = args[0].device
                for h in self.hidden[i]:
                    if h.module is module:
                        setattr(module, h.name, h.host.to(device, copy=True))
        return hook

    def _layer_ends(self, i: int, module: nn.Module):
        def hook(layer, args, output):
            if self.active != i:
                self._release(i, module)
        return hook

