"""The feature-build states merge exactly: two ranks' states over alternate batches, merged, equal
the one-process state over all batches (top-k with tied values, histograms on different grids,
interval samples whose grids grew at different times)."""

from __future__ import annotations

import pytest
import torch

from mechscope.distributed.features import merge_histogram, merge_sketch, merge_topk
from mechscope.features.sketch import empty_sketch, update_sketch
from mechscope.neurons.histogram import empty_histogram, update_histogram
from mechscope.neurons.topk import empty_topk, update_topk

UNITS, SEQ, BATCH = 6, 8, 4


def batches(seed: int, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        scale = 2.0 ** (i % 5)  # the range grows and shrinks: grids change at different times
        acts = torch.round(torch.randn(BATCH, SEQ, UNITS, generator=g) * scale * 2) / 2  # ties
        acts[..., 0] = -acts[..., 0].abs()  # a unit that never fires: negatives only
        out.append((acts, torch.randint(0, 50, (BATCH, SEQ), generator=g)))
    return out


def run(data: list, keep: list[int]) -> tuple:
    top, hist = empty_topk(UNITS, 5, SEQ), empty_histogram(UNITS, 16)
    sketch = empty_sketch(UNITS, SEQ, 4, 2, 3)
    units = torch.arange(UNITS)
    for i in keep:
        acts, tokens = data[i]
        top = update_topk(top, acts, tokens, i * BATCH, 1)
        hist = update_histogram(hist, acts[:, 1:].reshape(-1, UNITS))
        sketch = update_sketch(sketch, acts, tokens, i * BATCH, units, 1)
    return top, hist, sketch


def same(a: object, b: object) -> None:
    for key, value in vars(a).items():
        other = getattr(b, key)
        if isinstance(value, torch.Tensor):
            if key in ("total", "total_sq"):  # float64 sums in another order
                torch.testing.assert_close(other, value, rtol=1e-12, atol=1e-9)
            else:
                assert torch.equal(other, value), key
        else:
            assert other == value, key


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_merged_states_equal_one_pass(seed: int) -> None:
    data = batches(seed, 11)
    whole = run(data, list(range(11)))
    even, odd = run(data, list(range(0, 11, 2))), run(data, list(range(1, 11, 2)))
    for merge, a, b, ref in zip((merge_topk, merge_histogram, merge_sketch), even, odd, whole):
        same(merge(a, b), ref)
        same(merge(b, a), ref)  # the order of the ranks does not matter
    empty = run(data, [])
    for merge, a, b, ref in zip((merge_topk, merge_histogram, merge_sketch), whole, empty, whole):
        same(merge(a, b), ref)  # a rank with no batch
