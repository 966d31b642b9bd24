"""How well a score separates anomalous inputs (positives) from clean ones (negatives).

AUROC with ties counted half (the Mann-Whitney U statistic), average precision as scikit-learn
defines it (sum over thresholds of precision times the recall step), and the false-positive rate
at the lowest threshold that reaches a given recall. Higher scores mean more anomalous.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from mechscope import stats

__all__ = ["Separation", "auroc", "average_precision", "fpr_at_recall", "separation"]


def _arrays(pos: Sequence[float], neg: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    p, n = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    if p.size == 0 or n.size == 0:
        raise ValueError("need at least one positive and one negative score")
    return p, n


def auroc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """P(score of a positive > score of a negative), ties counted half."""
    return stats.auroc(*_arrays(pos, neg))


def average_precision(pos: Sequence[float], neg: Sequence[float]) -> float:
    """Average precision: sum over distinct thresholds of precision x (recall step)."""
    p, n = _arrays(pos, neg)
    scores = np.concatenate([p, n])
    labels = np.concatenate([np.ones(p.size), np.zeros(n.size)])
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    last = np.r_[np.nonzero(np.diff(scores))[0], scores.size - 1]  # end of each tie group
    tp = np.cumsum(labels)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / p.size
    steps = np.diff(np.r_[0.0, recall])
    return float((steps * precision).sum())


def fpr_at_recall(pos: Sequence[float], neg: Sequence[float], recall: float = 0.95) -> float:
    """Share of negatives flagged at the highest threshold that flags ``recall`` of positives."""
    p, n = _arrays(pos, neg)
    k = int(np.ceil(recall * p.size))  # positives that must be flagged
    threshold = np.sort(p)[::-1][k - 1]
    return float((n >= threshold).mean())


@dataclass(frozen=True)
class Separation:
    """AUROC, average precision and FPR at 95% recall of one score on one test set."""

    auroc: float
    average_precision: float
    fpr_at_95_recall: float
    n_pos: int
    n_neg: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def separation(pos: Sequence[float], neg: Sequence[float]) -> Separation:
    """All three figures for positives ``pos`` against negatives ``neg``."""
    return Separation(
        auroc(pos, neg), average_precision(pos, neg), fpr_at_recall(pos, neg), len(pos), len(neg)
    )
