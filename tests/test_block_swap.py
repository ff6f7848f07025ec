"""Block swap (models/block_swap.py) on the CPU, where host and device are the same memory.

What this proves: the swapped blocks compute on fresh copies of their weights that exist only
during their own forward, the next swapped block is already fetched when a block starts (one
ahead), the text K/V layers used outside a block's forward work, streamed results are exactly
those without the swap, and detaching restores the parameters bit for bit. What it cannot prove:
the overlap of the copy stream with compute and pinned-memory transfers (CUDA only:
tests/test_device.py).
"""

from __future__ import annotations

import copy

import pytest
import torch

from lipforcing_core.models.block_swap import BlockSwap
from lipforcing_core.models.fp8 import use_fp8_linears

pytestmark = pytest.mark.usefixtures("two_threads_no_grad")


@pytest.mark.parametrize("count", [2, 6])
@pytest.mark.parametrize("fp8", [False, True])
def test_streamed_output_equals_no_swap(golden_dit, golden_window_stream, count, fp8):
    model = copy.deepcopy(golden_dit)
    if fp8:
        use_fp8_linears(model)
    expected = golden_window_stream(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    swap = BlockSwap(model.blocks, count)
    first = len(model.blocks) - count
    swapped_keys = tuple(f"blocks.{i}." for i in swap.swapped)
    assert set(model.state_dict()) == {k for k in before if not k.startswith(swapped_keys)}

    seen = []

    def watch(i):
        def hook(block, args):  # runs after the swap's own pre-hook
            hidden = swap.hidden.get(i, [])
            seen.append((i, all(getattr(h.module, h.name).data_ptr() != h.host.data_ptr() for h in hidden),
                         i + 1 in swap.pending))
        return hook

    watchers = [b.register_forward_pre_hook(watch(i)) for i, b in enumerate(model.blocks)]
    got = golden_window_stream(model)
    for w in watchers:
        w.remove()

    assert torch.equal(got, expected)
    for i, on_copy, next_fetched in seen:
        assert on_copy, f"block {i} ran on its host tensors"
        assert next_fetched == (first - 1 <= i < len(model.blocks) - 1), f"block {i}: prefetch of {i + 1}"
    assert not swap.pending and swap.active is None  # nothing left on the device after a pass
    assert all(getattr(h.module, h.name) is h.host for i in swap.swapped for h in swap.hidden[i])
    assert swap.block_bytes == sum(v.numel() * v.element_size() for k, v in before.items() if k.startswith("blocks.5."))

    swap.detach()
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert torch.equal(golden_window_stream(model), expected)


def test_rejects_a_count_outside_the_model(golden_dit):
    model = copy.deepcopy(golden_dit)
    for count in (0, 7):
        with pytest.raises(ValueError, match="between 1 and 6"):
            BlockSwap(model.blocks, count)
