"""Splits, folds and the control task: exact properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mechscope.errors import MechscopeError
from mechscope.probes import control_labels, stratified_folds, train_test_split

labels = st.lists(st.integers(0, 3), min_size=10, max_size=200).map(np.array)


@settings(max_examples=60, deadline=None)
@given(y=labels, folds=st.integers(2, 10), seed=st.integers(0, 5))
def test_folds_partition_the_examples_and_balance_classes(y, folds, seed) -> None:
    if len(y) < folds:
        with pytest.raises(MechscopeError, match="cannot make"):
            stratified_folds(y, folds, seed)
        return
    parts = stratified_folds(y, folds, seed)
    assert len(parts) == folds
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(len(y)))  # each example in exactly one fold
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    for c in np.unique(y):
        per_fold = [int((y[p] == c).sum()) for p in parts]
        assert max(per_fold) - min(per_fold) <= 1  # stratified


@settings(max_examples=60, deadline=None)
@given(y=labels, fraction=st.floats(0.1, 0.5), seed=st.integers(0, 5))
def test_split_is_disjoint_complete_and_stratified(y, fraction, seed) -> None:
    counts = np.bincount(y)
    if all(round(fraction * c) == 0 or c == 1 for c in counts if c):
        return  # nothing would reach the test split (checked below)
    train, test = train_test_split(y, fraction, seed)
    assert np.intersect1d(train, test).size == 0
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(y)))
    for c in np.unique(y):
        n = int((y == c).sum())
        assert int((y[test] == c).sum()) == min(n - 1, round(fraction * n))


def test_split_and_folds_are_deterministic_per_seed() -> None:
    y = np.arange(100) % 3
    a, b = train_test_split(y, 0.2, 4), train_test_split(y, 0.2, 4)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not np.array_equal(train_test_split(y, 0.2, 5)[1], a[1])


def test_control_gives_each_token_type_one_label_from_the_label_distribution() -> None:
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 3000, size=20000)
    y = (rng.random(20000) < 0.3).astype(np.int64)  # 30% class 1
    control = control_labels(tokens, y, seed=0)
    for t in np.unique(tokens)[:200]:
        assert len(set(control[tokens == t].tolist())) == 1
    per_type = np.array([control[tokens == t][0] for t in np.unique(tokens)])
    assert abs(per_type.mean() - y.mean()) < 0.03  # drawn from the empirical distribution
    assert np.array_equal(control, control_labels(tokens, y, seed=0))
    assert not np.array_equal(control, control_labels(tokens, y, seed=1))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: train_test_split(np.array([0, 1] * 5), 1.5), "test_fraction"),
        (lambda: train_test_split(np.array([0, 1, 1]), 0.1), "no test examples"),
        (lambda: stratified_folds(np.array([0, 1] * 5), 1), "at least 2"),
        (lambda: stratified_folds(np.array([0, 1, 0]), 5), "cannot make 5 folds"),
    ],
)
def test_bad_settings_raise_one_line_errors(call, message) -> None:
    with pytest.raises(MechscopeError, match=message) as info:
        call()
    assert "\n" not in str(info.value)
