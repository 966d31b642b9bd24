"""The numbers a score is made of: AUROC, balanced accuracy and Pearson correlation.

AUROC is the Mann-Whitney probability that a random positive outranks a random negative (ties
count one half), so it needs no threshold and is exactly 0.5 for a judge that cannot tell the two
apart. Each function returns ``None`` when the number is undefined (one class missing, a
constant series) rather than inventing a value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mechscope import stats

__all__ = ["auroc", "balanced_accuracy", "pearson"]


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve of ``scores`` for the binary ``labels`` (ties count 1/2)."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    if y.all() or not y.any():
        return None
    return stats.auroc(s[y], s[~y])


def balanced_accuracy(predicted: Sequence[bool], labels: Sequence[bool]) -> float | None:
    """The mean of the true-positive rate and the true-negative rate."""
    p = np.asarray(predicted, dtype=bool)
    y = np.asarray(labels, dtype=bool)
    if y.all() or not y.any():
        return None
    return float(((p & y).sum() / y.sum() + (~p & ~y).sum() / (~y).sum()) / 2)


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson's correlation; ``None`` when either series is constant."""
    a = np.asarray(x, dtype=float)
    b = np.asarray(y, dtype=float)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])
