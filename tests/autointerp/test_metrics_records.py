"""The numbers and records under every score: AUROC against scipy's Mann-Whitney U, marking,
and the split that keeps explaining and scoring examples apart."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import mannwhitneyu, pearsonr

from mechscope.autointerp.metrics import auroc, balanced_accuracy, pearson
from mechscope.autointerp.planted import planted_examples
from mechscope.autointerp.records import Example, mark, split
from mechscope.errors import MechscopeError


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_is_mann_whitney_u_over_pairs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 5, size=40).astype(float)  # many ties
    labels = rng.random(40) < 0.4
    u = mannwhitneyu(scores[labels], scores[~labels]).statistic
    assert auroc(scores, labels) == pytest.approx(u / (labels.sum() * (~labels).sum()))


def test_undefined_numbers_are_none_not_invented() -> None:
    assert auroc([0.1, 0.2], [True, True]) is None
    assert balanced_accuracy([True, False], [False, False]) is None
    assert pearson([1.0, 1.0, 1.0], [0.0, 1.0, 2.0]) is None
    x, y = np.arange(10.0), np.arange(10.0) ** 2
    assert pearson(x, y) == pytest.approx(pearsonr(x, y).statistic)
    assert balanced_accuracy(
        [True, True, False, False], [True, False, False, False]
    ) == pytest.approx(5 / 6)


def test_mark_wraps_runs_and_keeps_leading_spaces_outside() -> None:
    tokens = [" in", " New", " York", " and", " Paris", ")"]
    assert mark(tokens, [0, 1, 1, 0, 1, 0]) == " in <<New York>> and <<Paris>>)"
    assert mark(tokens, [0, 0, 0, 0, 1, 1]) == " in New York and <<Paris)>>"
    with pytest.raises(MechscopeError, match="2 tokens but 1 activations"):
        Example(("a", "b"), (1.0,))


def test_split_keeps_explaining_and_scoring_examples_apart() -> None:
    for feature in planted_examples():
        data = split(feature, n_explain=10, n_score=10)
        shown = {id(e) for e in data.explain}
        assert len(data.explain) == 10 and len(data.activating) == 10 and len(data.negative) == 10
        assert not shown & {id(e) for e in data.activating}
        assert all(e.max > 0 for e in data.activating) and all(e.max == 0 for e in data.negative)
