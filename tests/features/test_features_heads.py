"""The attn:L streaming pieces against brute force on planted tensors: the quietest windows and the
peak outputs kept beside the top-k, in one pass over batches of any size and merged from two
halves (as torchrun ranks merge them)."""

from __future__ import annotations

import pytest
import torch

from mechscope.distributed.features import merge_topk
from mechscope.features.heads import carry_peaks, empty_lowest
from mechscope.neurons.topk import empty_topk, update_topk

N, SEQ, UNITS, HEADS, D = 50, 6, 3, 4, 5  # windows, positions, units (heads 3, 0, 2), d_head


@pytest.fixture(scope="module")
def planted() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """z [window pos head d], acts [window pos unit] = |z| of heads (3, 0, 2) rounded to 0.25 so
    window maxima tie, and tokens."""
    g = torch.Generator().manual_seed(0)
    z = (torch.randn((N, SEQ, HEADS, D), generator=g) * 4).round() / 4
    heads = torch.tensor([3, 0, 2])
    acts = (z[:, :, heads].norm(dim=-1) * 4).round() / 4
    z[:, :, heads] *= (acts / z[:, :, heads].norm(dim=-1).clamp(min=1e-9))[..., None]
    tokens = torch.randint(0, 100, (N, SEQ), generator=g)
    return z, acts, tokens, heads


def _pass(planted, lo: int, hi: int, batch: int, k: int = 4):
    z, acts, tokens, heads = planted
    top, low = empty_topk(UNITS, k, SEQ), empty_lowest(UNITS, 3, SEQ)
    peaks = torch.zeros((UNITS, k, D))
    for a in range(lo, hi, batch):
        b = min(a + batch, hi)
        old = top.windows
        top = update_topk(top, acts[a:b], tokens[a:b], a, 1)
        peaks = carry_peaks(top, old, peaks, z[a:b], a, heads)
        low = update_topk(low, acts[a:b], tokens[a:b], a, 1, lowest=True)
    return top, low, peaks


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_one_pass_equals_brute_force(planted, batch: int) -> None:
    z, acts, tokens, heads = planted
    top, low, peaks = _pass(planted, 0, N, batch)
    best, where = acts[:, 1:].max(1)  # [window unit]
    for u in range(UNITS):
        order = torch.sort(best[:, u], stable=True).indices[:3]  # ties: the earlier window
        assert low.windows[u].tolist() == order.tolist()
        assert low.values[u].tolist() == best[order, u].tolist()
        assert low.positions[u].tolist() == (where[order, u] + 1).tolist()
        assert torch.equal(low.acts[u], acts[order, :, u])
        assert torch.equal(low.tokens[u], tokens[order].to(torch.int32))
        for slot in range(top.k):  # the peak output of every top slot
            w, p = int(top.windows[u, slot]), int(top.positions[u, slot])
            assert torch.equal(peaks[u, slot], z[w, p, heads[u]])
    assert len(set(best[:, 0].tolist())) < N  # the planted maxima do tie


def test_two_halves_merge_to_one_pass(planted) -> None:
    top, low, peaks = _pass(planted, 0, N, 7)
    (ta, la, pa), (tb, lb, pb) = _pass(planted, 0, 23, 5), _pass(planted, 23, N, 9)
    merged = merge_topk(ta, tb)
    both = carry_peaks(merged, torch.cat([ta.windows, tb.windows], 1), torch.cat([pa, pb], 1))
    assert torch.equal(merged.windows, top.windows)
    assert torch.equal(both, peaks)
    for x, y in ((merge_topk(la, lb, lowest=True), low), (merge_topk(lb, la, lowest=True), low)):
        for field in vars(y):
            assert torch.equal(getattr(x, field), getattr(y, field)), field


def test_empty_slots_stay_empty(planted) -> None:
    top, low, peaks = _pass(planted, 0, 2, 1, k=4)  # two windows for four top / three low slots
    assert top.windows[:, 2:].eq(-1).all() and peaks[:, 2:].eq(0).all()
    assert low.windows[:, 2:].eq(-1).all() and low.values[:, 2:].isinf().all()
