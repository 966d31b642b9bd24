"""smallest_faithful: a grid scan that does not assume faithfulness is monotone in the size."""

from __future__ import annotations

import pytest

from conftest import hooked, toy_batch
from mechscope.circuits import Evaluator, attribute
from mechscope.circuits.faithfulness import first_reaching, geometric_sizes, smallest_faithful
from mechscope.errors import MechscopeError


def planted(n: int) -> float:
    """Not monotone: 6 edges reach 0.9, 7 to 11 fall back to 0.5, 12 and more give 0.85."""
    if n == 6:
        return 0.9
    return 0.85 if n >= 12 else (0.5 if n > 6 else 0.1 * n)


def test_first_reaching_on_a_non_monotone_curve() -> None:
    calls: list[int] = []

    def f(n: int) -> float:
        calls.append(n)
        return planted(n)

    r = first_reaching(f, [16, 1, 2, 4, 8, 32], 0.8)
    # The grid 1, 2, 4, 8 falls short; 16 is the first grid size reaching 0.8 (32 never runs).
    assert r.grid_n == 16 and 32 not in calls
    # Bisection inside (8, 16]: 12 reaches, 10 and 11 do not -> the crossing at 12 (6 is missed:
    # it lies below a grid size that fails, which is what the docstring promises).
    assert (r.n, r.faithfulness) == (12, 0.85)
    assert r.curve == sorted((n, planted(n)) for n in set(calls))
    assert planted(r.n - 1) < 0.8 <= planted(r.n)
    coarse = first_reaching(planted, [1, 2, 4, 8, 16, 32], 0.8, refine=False)
    assert (coarse.n, coarse.grid_n) == (16, 16)
    # The curve it saw is reported, so the non-monotone stretch is visible to the caller.
    assert [f for _, f in coarse.curve] == [0.1, 0.2, 0.4, 0.5, 0.85]


def test_first_reaching_when_nothing_reaches() -> None:
    r = first_reaching(lambda n: 0.5, [1, 2, 4], 0.8)
    assert r.n is None and r.faithfulness is None and r.grid_n is None
    assert r.curve == [(1, 0.5), (2, 0.5), (4, 0.5)]


def test_geometric_sizes() -> None:
    sizes = geometric_sizes(10_000)
    assert sizes[0] == 10 and sizes[-1] == 10_000 and sizes == sorted(set(sizes))
    ratios = [b / a for a, b in zip(sizes[:-2], sizes[1:-1])]
    assert all(1.35 < r < 1.48 for r in ratios)
    assert geometric_sizes(5) == [1, 2, 3, 4, 5]
    with pytest.raises(MechscopeError, match="factor > 1"):
        geometric_sizes(100, factor=1.0)


@pytest.mark.parametrize("select", ["top_n", "greedy"])
def test_smallest_faithful_on_a_tiny_model(select: str) -> None:
    model, batch = hooked("llama"), toy_batch()
    scored = attribute(model, batch, method="eap")
    r = smallest_faithful(model, batch, scored, 0.8, select=select)
    assert r.n is not None and r.faithfulness >= 0.8
    # Checked with a fresh evaluator: n reaches the target, n - 1 does not, and every grid size
    # below the first reaching one falls short.
    ev = Evaluator(model, batch, graph=scored.graph)
    pick = scored.top_n if select == "top_n" else scored.greedy
    assert ev.faithfulness(pick(r.n).mask) == pytest.approx(r.faithfulness, abs=1e-6)
    assert ev.faithfulness(pick(r.n - 1).mask) < 0.8
    grid = geometric_sizes(scored.n_edges)
    for n in [n for n in grid if n < r.grid_n]:
        assert ev.faithfulness(pick(n).mask) < 0.8
    with pytest.raises(MechscopeError, match="unknown selection"):
        smallest_faithful(model, batch, scored, select="best")
