"""Statistics for findings over prompts: bootstrap intervals, permutation p-values, stability.

Every function takes a ``seed`` so each interval is reproducible.

- :func:`bootstrap_ci`: the percentile interval of a statistic (default the mean) over prompts
  resampled with replacement (Efron and Tibshirani 1993, ch. 13); values ``[prompt ...]`` give one
  interval per trailing entry (a patching heatmap ``[prompt layer pos]`` gets a heatmap of bounds);
- :func:`normalized_ci`: the same for a normalised effect (0 = corrupted run, 1 = clean run),
  the clean and corrupted means resampled with the same prompts;
- :func:`permutation_pvalue`: how often a mean difference at least as large as the observed one
  arises when the labels "finding" / "control" are shuffled (two-sided, with the +1 correction of
  Phipson and Smyth 2010, so p is never 0); the paired form flips signs of per-prompt differences;
- :func:`signflip_pvalues`: the paired test for every cell of a finding at once (a patching
  heatmap ``[prompt layer pos]`` minus its unpatched run gets a heatmap of p-values), exact when
  all ``2^n`` sign patterns fit in the budget; :func:`bh_adjust` turns a table of p-values into
  Benjamini-Hochberg q-values (the false-discovery rate over the table's cells);
- :func:`auroc`: the area under the ROC curve of positive against negative scores (ties one
  half), shared by the anomaly detectors, the autointerp scorers and the crosscoder checks;
- :func:`bootstrap_jaccard`: circuit stability (Méloux et al. 2025, arXiv 2510.00845): select a
  circuit on prompts resampled with replacement, many times, and report the mean Jaccard index of
  the selected edge sets over all pairs of resamples (1 = the same circuit every time);
  :func:`jaccard_summary` gives that mean an interval over the resamples.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from itertools import combinations
from typing import Any

import numpy as np
import torch

from mechscope.errors import MechscopeError

ArrayLike = Any


def _array(values: ArrayLike, what: str = "values") -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 0 or arr.shape[0] < 2:
        raise MechscopeError(f"{what} need at least 2 prompts along the first axis for statistics")
    return arr


def resamples(n: int, n_boot: int, seed: int) -> np.ndarray:
    """``[n_boot n]`` prompt indices drawn with replacement (seeded)."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_ci(
    values: ArrayLike,
    *,
    level: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    stat: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[Any, Any]:
    """(low, high) percentile bounds of ``stat`` (the mean over axis 0) under resampling of the
    prompts (axis 0); floats for 1-D values, arrays of the trailing shape otherwise.

    A resample on which ``stat`` is undefined (a ratio whose denominator vanishes on it: a
    normalised effect when the resampled prompts' clean and corrupted metrics coincide) is left
    out; a cell with fewer than half of its resamples defined gets NaN bounds (no interval)."""
    if not 0 < level < 1:
        raise MechscopeError(f"level must lie in (0, 1), got {level}")
    arr = _array(values)
    idx = resamples(arr.shape[0], n_boot, seed)
    stat = stat or (lambda a: a.mean(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        boots = np.stack([stat(arr[i]) for i in idx]).astype(float)
    defined = np.isfinite(boots)
    boots[~defined] = np.nan
    alpha = (1 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells (slices not patched)
        lo, hi = np.nanquantile(boots, [alpha, 1 - alpha], axis=0)
    few = defined.mean(axis=0) < 0.5
    lo, hi = np.where(few, np.nan, lo), np.where(few, np.nan, hi)
    if np.ndim(lo) == 0:
        return float(lo), float(hi)
    return lo, hi


def defined_interval(lo: float, hi: float) -> tuple[float, float] | None:
    """``(lo, hi)`` as floats, or None where :func:`bootstrap_ci` left the interval undefined."""
    lo, hi = float(lo), float(hi)
    return None if np.isnan(lo) or np.isnan(hi) else (lo, hi)


def normalized_ci(
    values: ArrayLike,
    clean: ArrayLike,
    corrupt: ArrayLike,
    *,
    level: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[Any, Any]:
    """Bootstrap bounds of the normalised effect ``(mean values - mean corrupt) / (mean clean -
    mean corrupt)`` for every cell of ``values`` ``[prompt ...]`` (a patched run's metric;
    ``clean`` and ``corrupt`` ``[prompt]`` the unpatched runs'): each resample recomputes the three
    means on the same prompts (:func:`bootstrap_ci`). Arrays of the trailing shape."""
    v = _array(values)
    rows = v.reshape(v.shape[0], -1)
    ends = np.stack([np.asarray(clean, dtype=float), np.asarray(corrupt, dtype=float)], 1)
    table = np.concatenate([rows, ends], 1)  # [prompt, cells + clean + corrupt]

    def ratio(a: np.ndarray) -> np.ndarray:
        mean = a.mean(axis=0)
        return (mean[:-2] - mean[-1]) / (mean[-2] - mean[-1])

    lo, hi = bootstrap_ci(table, level=level, n_boot=n_boot, seed=seed, stat=ratio)
    return np.reshape(lo, v.shape[1:]), np.reshape(hi, v.shape[1:])


def permutation_pvalue(
    finding: ArrayLike,
    control: ArrayLike | None = None,
    *,
    n_perm: int = 2000,
    seed: int = 0,
    paired: bool = False,
) -> float:
    """Two-sided p-value that ``finding`` and ``control`` have the same mean.

    ``paired=True`` (or no control: a test of mean zero) flips the signs of the per-prompt
    differences (:func:`signflip_pvalues`); otherwise the pooled values are shuffled between the
    two groups.
    """
    a = _array(finding, "finding").reshape(len(finding), -1).mean(1)
    if control is None or paired:
        diff = a if control is None else a - _array(control, "control").reshape(len(a), -1).mean(1)
        return float(signflip_pvalues(diff, n_perm=n_perm, seed=seed))
    rng = np.random.default_rng(seed)
    b = _array(control, "control").reshape(len(control), -1).mean(1)
    pooled, k = np.concatenate([a, b]), len(a)
    observed = abs(a.mean() - b.mean())
    perms = np.stack([rng.permutation(len(pooled)) for _ in range(n_perm)])
    shuffled = pooled[perms]
    null = np.abs(shuffled[:, :k].mean(1) - shuffled[:, k:].mean(1))
    return float((1 + np.sum(null >= observed - 1e-12)) / (n_perm + 1))


def signflip_pvalues(diff: ArrayLike, *, n_perm: int = 2000, seed: int = 0) -> Any:
    """Two-sided paired permutation p-values that the mean of ``diff`` ``[prompt ...]`` is zero,
    one per trailing cell (a float for 1-D ``diff``).

    ``diff`` is each prompt's finding minus its control (a patched run minus the unpatched one):
    under the null the two labels are exchangeable within a prompt, so each prompt's sign is
    flipped at random, the same flips for every cell. With ``2^n <= n_perm`` every pattern is
    enumerated and p is exact (the observed pattern is one of them); otherwise ``n_perm`` seeded
    patterns with the +1 correction. A cell with a NaN (a slice not patched) gets NaN.
    """
    arr = _array(diff, "differences")
    flat = arr.reshape(arr.shape[0], -1)
    n = flat.shape[0]
    if 2**n <= n_perm:
        bits = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
        signs, extra = 1.0 - 2.0 * bits, 0
    else:
        signs, extra = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n_perm, n)), 1
    observed = np.abs(flat.mean(0))
    null = np.abs(signs @ np.nan_to_num(flat)) / n
    hits = np.sum(null >= observed * (1 - 1e-9) - 1e-12, axis=0)
    p = (hits + extra) / (len(signs) + extra)
    p = np.where(np.isnan(flat).any(0), np.nan, p)
    return float(p[0]) if arr.ndim == 1 else p.reshape(arr.shape[1:])


def bh_adjust(pvalues: ArrayLike) -> Any:
    """Benjamini-Hochberg q-values of a table of p-values (any shape; NaN cells are left out and
    stay NaN): the smallest false-discovery rate at which each cell would be called."""
    p = np.asarray(pvalues, dtype=float)
    flat = p.ravel()
    ok = ~np.isnan(flat)
    q = np.full_like(flat, np.nan)
    vals = flat[ok]
    if vals.size:
        order = np.argsort(vals)
        ranked = vals[order] * vals.size / np.arange(1, vals.size + 1)
        ranked = np.minimum.accumulate(ranked[::-1])[::-1]
        out = np.empty_like(vals)
        out[order] = np.minimum(ranked, 1.0)
        q[ok] = out
    return q.reshape(p.shape)


def auroc(pos: ArrayLike, neg: ArrayLike) -> float:
    """Area under the ROC curve: the chance that a positive's score exceeds a negative's, ties
    counted one half (Mann-Whitney U over ``n_pos n_neg``, from average ranks)."""
    from scipy.stats import rankdata

    p, n = np.asarray(pos, dtype=np.float64).ravel(), np.asarray(neg, dtype=np.float64).ravel()
    if p.size == 0 or n.size == 0:
        raise MechscopeError("AUROC needs at least one positive and one negative score")
    ranks = rankdata(np.concatenate([p, n]))
    return float((ranks[: p.size].sum() - p.size * (p.size + 1) / 2) / (p.size * n.size))


def jaccard(a: Iterable[Any], b: Iterable[Any]) -> float:
    """``|A & B| / |A | B|`` of two sets (1.0 for two empty sets)."""
    sa, sb = set(a), set(b)
    return 1.0 if not sa | sb else len(sa & sb) / len(sa | sb)


def bootstrap_jaccard(
    select: Callable[[np.ndarray], Iterable[Any]],
    n_prompts: int,
    *,
    n_boot: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """Stability of a selection: ``select(prompt_indices)`` returns the chosen items (edges) for a
    resample of the prompts; :func:`jaccard_summary` of the ``n_boot`` selections."""
    if n_boot < 2:
        raise MechscopeError(f"n_boot must be at least 2 to compare resamples, got {n_boot}")
    return jaccard_summary(
        [set(select(idx)) for idx in resamples(n_prompts, n_boot, seed)], seed=seed
    )


def jaccard_summary(
    sets: list[set[Any]], *, level: float = 0.95, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """The mean, min and max Jaccard index over all pairs of ``sets`` (one per prompt resample),
    a percentile interval of the mean, and how often each item was chosen.

    The interval resamples the selections themselves with replacement and averages the Jaccard
    index over the pairs of distinct draws (a draw paired with itself would count 1), so it
    reflects how much the mean depends on which resamples were drawn; it narrows as the number of
    selections grows.
    """
    n = len(sets)
    if n < 2:
        raise MechscopeError(f"need at least 2 selections to compare, got {n}")
    jac = np.ones((n, n))
    for i, j in combinations(range(n), 2):
        jac[i, j] = jac[j, i] = jaccard(sets[i], sets[j])
    pairs = jac[np.triu_indices(n, 1)]
    means = []
    for idx in resamples(n, n_boot, seed):
        distinct = idx[:, None] != idx[None, :]
        if distinct.any():
            means.append(jac[np.ix_(idx, idx)][distinct].mean())
    alpha = (1 - level) / 2
    counts: dict[Any, int] = {}
    for s in sets:
        for item in s:
            counts[item] = counts.get(item, 0) + 1
    return {
        "mean_jaccard": float(pairs.mean()),
        "mean_jaccard_ci": [float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))],
        "min_jaccard": float(pairs.min()),
        "max_jaccard": float(pairs.max()),
        "n_boot": n,
        "frequency": {str(k): v / n for k, v in sorted(counts.items(), key=lambda kv: -kv[1])},
    }
