"""The knapsack allocator against brute force, and its LP bound."""

from __future__ import annotations

import itertools

import pytest
import torch

from mechscope.compress.allocate import allocate
from mechscope.compress.quant import WIDTHS, group_bits
from mechscope.errors import MechscopeError

COST = [group_bits(w, 8) for w in WIDTHS]  # group size 8: 48, 56, 64, 96, 128 bits


def brute(loss: torch.Tensor, budget: int) -> float:
    best = float("inf")
    for combo in itertools.product(range(len(COST)), repeat=loss.shape[0]):
        if sum(COST[j] for j in combo) <= budget:
            best = min(best, float(sum(loss[g, j] for g, j in enumerate(combo))))
    return best


def random_loss(gen: torch.Generator, n: int) -> torch.Tensor:
    # decreasing in width like a quantizer's error, but not convex: the hull matters
    scale = torch.rand(n, 1, generator=gen, dtype=torch.float64) * 10
    shape = torch.tensor([1.0, 0.3, 0.2, 0.01, 0.0], dtype=torch.float64)
    noise = torch.rand(n, len(COST), generator=gen, dtype=torch.float64) * 0.2
    return scale * (shape + noise * shape)


@pytest.mark.parametrize("seed", range(6))
def test_dp_is_optimal_and_hull_is_bounded(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    n = 4
    loss = random_loss(gen, n)
    for frac in (0.0, 0.1, 0.25, 0.5, 0.9):
        budget = n * COST[0] + int(frac * n * (COST[-1] - COST[0]))
        exact = brute(loss, budget)
        dp = allocate(loss, COST, budget, solver="dp")
        assert dp.cost <= budget
        assert dp.loss == pytest.approx(exact, rel=1e-12, abs=1e-12)
        hull = allocate(loss, COST, budget, solver="hull")
        assert hull.cost <= budget
        assert hull.lower_bound <= exact + 1e-9 <= hull.loss + 2e-9


def test_hull_matches_dp_on_many_groups() -> None:
    gen = torch.Generator().manual_seed(7)
    loss = random_loss(gen, 300)
    budget = 300 * group_bits(3, 8)
    dp = allocate(loss, COST, budget, solver="dp")
    hull = allocate(loss, COST, budget, solver="hull")
    assert hull.lower_bound <= dp.loss <= hull.loss
    assert (hull.loss - dp.loss) / dp.loss < 1e-2


def test_budget_below_smallest_width() -> None:
    loss = torch.ones(3, len(COST))
    with pytest.raises(MechscopeError, match="below the smallest width"):
        allocate(loss, COST, 3 * COST[0] - 1)
