"""Statistics on planted data: coverage, reproducibility, p-values, stability."""

from __future__ import annotations

import numpy as np
import pytest

from mechscope.errors import MechscopeError
from mechscope.stats import (
    bootstrap_ci,
    bootstrap_jaccard,
    jaccard,
    jaccard_summary,
    permutation_pvalue,
)


def test_bootstrap_ci_covers_the_mean_at_the_normal_width() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=400)
    lo, hi = bootstrap_ci(x, seed=1)
    assert lo < 3.0 < hi
    assert abs((hi - lo) - 2 * 1.96 * 2.0 / 20) < 0.06  # about 2 z sigma / sqrt(n) = 0.39
    assert bootstrap_ci(x, seed=1) == (lo, hi)  # seeded
    assert bootstrap_ci(x, seed=2) != (lo, hi)


def test_bootstrap_ci_coverage_over_many_samples() -> None:
    rng = np.random.default_rng(1)
    hits = sum(
        lo <= 0 <= hi
        for lo, hi in (bootstrap_ci(rng.normal(0, 1, 50), n_boot=300, seed=s) for s in range(100))
    )
    assert 88 <= hits <= 99  # nominal 95


def test_bootstrap_ci_per_cell() -> None:
    x = np.zeros((30, 2, 3))
    x[:, 1, 2] = np.arange(30)
    lo, hi = bootstrap_ci(x)
    assert lo.shape == hi.shape == (2, 3)
    assert lo[0, 0] == hi[0, 0] == 0
    assert lo[1, 2] < 14.5 < hi[1, 2]


def test_permutation_pvalue() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(1, 1, 40), rng.normal(0, 1, 40)
    assert permutation_pvalue(a, b, n_perm=999) < 0.01
    assert permutation_pvalue(rng.normal(0, 1, 40), rng.normal(0, 1, 40)) > 0.05
    assert permutation_pvalue(a, a + 0.5 + rng.normal(0, 0.01, 40), paired=True) < 0.01
    assert permutation_pvalue(a, n_perm=99) == pytest.approx(0.01)  # the +1 floor: 1 / 100
    with pytest.raises(MechscopeError, match="at least 2 prompts"):
        permutation_pvalue([1.0])


def test_bootstrap_jaccard() -> None:
    assert jaccard({1, 2}, {2, 3}) == pytest.approx(1 / 3)
    same = bootstrap_jaccard(lambda idx: {"a", "b"}, 20, n_boot=5)
    assert same["mean_jaccard"] == 1.0 and same["frequency"] == {"a": 1.0, "b": 1.0}
    # the edge chosen is the resample's most frequent prompt: unstable
    loose = bootstrap_jaccard(lambda idx: {int(np.bincount(idx).argmax())}, 20, n_boot=8)
    assert loose["mean_jaccard"] < 0.5
    assert same["mean_jaccard_ci"] == [1.0, 1.0]


def test_jaccard_interval() -> None:
    # pairwise disjoint selections: every pair of distinct resamples has Jaccard 0, and so must
    # the interval (a draw paired with itself would count 1 and lift it)
    disjoint = jaccard_summary([{i} for i in range(10)])
    assert disjoint["mean_jaccard"] == 0.0 and disjoint["mean_jaccard_ci"] == [0.0, 0.0]
    # planted: each selection keeps 8 of 10 core items and adds 2 of its own, so a pair shares
    # 8 * 8 / 10 items on average; the interval covers the mean and narrows with more selections
    rng = np.random.default_rng(0)

    def draw(i: int) -> set:
        return set(rng.choice(10, 8, replace=False).tolist()) | {f"x{i}a", f"x{i}b"}

    few = jaccard_summary([draw(i) for i in range(8)], seed=1)
    many = jaccard_summary([draw(i) for i in range(64)], seed=1)
    for st in (few, many):
        lo, hi = st["mean_jaccard_ci"]
        assert lo <= st["mean_jaccard"] <= hi and st["min_jaccard"] <= lo
    assert many["mean_jaccard_ci"][1] - many["mean_jaccard_ci"][0] < (
        few["mean_jaccard_ci"][1] - few["mean_jaccard_ci"][0]
    )
    with pytest.raises(MechscopeError, match="at least 2 selections"):
        jaccard_summary([{1}])


def test_signflip_pvalues_exact_and_sampled() -> None:
    from mechscope.stats import signflip_pvalues

    # 3 prompts, all positive: 2 of the 8 sign patterns (all + and all -) reach |mean|
    assert signflip_pvalues([1.0, 2.0, 3.0]) == pytest.approx(2 / 8)
    # one cell per column; a NaN cell (a slice not patched) stays NaN
    table = np.array([[1.0, 0.5, np.nan], [2.0, -0.5, 1.0], [3.0, 0.5, 1.0]])
    p = signflip_pvalues(table)
    assert p[0] == pytest.approx(0.25) and p[1] == pytest.approx(1.0) and np.isnan(p[2])
    # 40 prompts exceed the exact budget: seeded sampling with the +1 floor
    rng = np.random.default_rng(1)
    far = rng.normal(3, 0.1, 40)
    assert signflip_pvalues(far, n_perm=99) == pytest.approx(0.01)
    assert signflip_pvalues(far, n_perm=99, seed=2) == signflip_pvalues(far, n_perm=99, seed=2)
    assert signflip_pvalues(rng.normal(0, 1, 40)) > 0.05


def test_bh_adjust_matches_the_step_up_rule() -> None:
    from mechscope.stats import bh_adjust

    q = bh_adjust(np.array([[0.01, 0.04], [0.03, np.nan]]))
    # m = 3: sorted 0.01, 0.03, 0.04 -> 0.03, 0.045, 0.04 -> monotone from the top: 0.03, 0.04, 0.04
    np.testing.assert_allclose(q[0], [0.03, 0.04])
    assert q[1, 0] == pytest.approx(0.04) and np.isnan(q[1, 1])
    assert bh_adjust([0.9, 0.95]).max() <= 1.0


def test_bootstrap_ci_leaves_out_undefined_resamples() -> None:
    """A ratio whose denominator vanishes on some resamples: those are left out; a cell with
    fewer than half of its resamples defined has no interval (NaN)."""

    def ratio(a: np.ndarray) -> np.ndarray:
        m = a.mean(axis=0)
        return np.atleast_1d(m[0] / m[1])

    never = np.array([[1.0, 0.0]] * 8)
    assert all(np.isnan(bootstrap_ci(never, stat=ratio, n_boot=200)))
    # denominator > 0 on one prompt of 8: (7/8)^8 = 34% of resamples draw none of it (inf)
    rare = np.array([[1.0, 0.0]] * 7 + [[2.0, 1.0]])
    lo, hi = bootstrap_ci(rare, stat=ratio, n_boot=400, seed=3)
    idx = np.random.default_rng(3).integers(0, 8, size=(400, 8))
    with np.errstate(divide="ignore"):
        boots = np.array([rare[i, 0].mean() / rare[i, 1].mean() for i in idx])
    finite = boots[np.isfinite(boots)]
    assert 0.5 < len(finite) / 400 < 0.8
    assert (lo, hi) == pytest.approx(tuple(np.quantile(finite, [0.025, 0.975])))
