"""Streaming top-k and histograms equal the all-at-once computation, for any batch size."""

from __future__ import annotations

import pytest
import torch
from neuron_helpers import brute_topk

from mechscope.neurons.histogram import (
    MIN_EXPONENT,
    empty_histogram,
    update_histogram,
)
from mechscope.neurons.topk import empty_topk, update_topk


def brute_histogram(x: torch.Tensor, bins: int):
    """Per unit: the smallest power-of-two width fitting all values in ``bins`` bins."""
    out = []
    for col in x.T.double():
        e = MIN_EXPONENT
        while torch.floor(col.max() / 2**e) - torch.floor(col.min() / 2**e) >= bins:
            e += 1
        idx = torch.floor(col / 2**e).long()
        offset = int(idx.min())
        out.append((e, offset, torch.bincount(idx - offset, minlength=bins)))
    return out


def stream(acts: torch.Tensor, tokens: torch.Tensor, batch: int, k: int, bins: int, first: int):
    """The scan's merge: windows rank by their maximum over positions ``first:``, the histogram
    counts positions ``first:``."""
    top = empty_topk(acts.shape[2], k, acts.shape[1])
    hist = empty_histogram(acts.shape[2], bins)
    for start in range(0, len(acts), batch):
        a, t = acts[start : start + batch], tokens[start : start + batch]
        top = update_topk(top, a, t, start, first)
        hist = update_histogram(hist, a[:, first:].reshape(-1, acts.shape[2]))
    return top, hist


@pytest.mark.parametrize("first", [0, 1])  # 1: each window's first position left out
@pytest.mark.parametrize("batch", [1, 3, 7, 40])
@pytest.mark.parametrize("integer", [False, True])  # integer values: many exact ties
def test_streaming_equals_all_at_once(batch: int, integer: bool, first: int) -> None:
    g = torch.Generator().manual_seed(batch)
    acts = torch.randn(40, 9, 6, generator=g) * torch.tensor([0.01, 1, 3, 50, 1e-4, 7])
    acts[:, :, 5] = torch.relu(acts[:, :, 5])  # a unit that is often exactly 0
    if integer:
        acts = torch.randint(-3, 4, (40, 9, 6), generator=g).float()
    tokens = torch.randint(0, 100, (40, 9), generator=g)
    k, bins = 5, 16
    acts[:, 0] += 1000.0  # a huge first position: ranked only when it is not left out
    top, hist = stream(acts, tokens, batch, k, bins, first)
    values, windows, positions = brute_topk(acts, k, first)
    assert bool((positions == 0).all()) == (first == 0)
    assert torch.equal(top.values, values)
    assert torch.equal(top.windows, windows)
    assert torch.equal(top.positions, positions)
    for u in range(6):
        for slot in range(k):
            w = int(windows[u, slot])
            assert torch.equal(top.acts[u, slot], acts[w, :, u])
            assert torch.equal(top.tokens[u, slot].long(), tokens[w])
    flat = acts[:, first:].reshape(-1, 6)
    for u, (e, offset, counts) in enumerate(brute_histogram(flat, bins)):
        assert int(hist.exponent[u]) == e and int(hist.offset[u]) == offset
        assert torch.equal(hist.counts[u], counts)
        edges = hist.edges(u)
        col = flat[:, u].double()
        assert edges[0] <= col.min() and col.max() < edges[-1]
    assert hist.n == flat.shape[0]
    assert torch.allclose(hist.mean(), flat.double().mean(0))
    assert torch.allclose(hist.std(), flat.double().std(0, unbiased=False), atol=1e-9)
    assert torch.equal(hist.density(), (flat > 0).double().mean(0))


def test_fewer_windows_than_k_leave_empty_slots() -> None:
    acts = torch.randn(2, 4, 3)
    top = update_topk(empty_topk(3, 5, 4), acts, torch.zeros(2, 4, dtype=torch.long), 0)
    assert (top.windows[:, 2:] == -1).all() and torch.isinf(top.values[:, 2:]).all()
    assert set(top.windows[:, :2].flatten().tolist()) == {0, 1}


def test_constant_unit_gets_the_finest_bins() -> None:
    hist = update_histogram(empty_histogram(1, 8), torch.zeros(10, 1))
    assert int(hist.exponent[0]) == MIN_EXPONENT and int(hist.counts.sum()) == 10
