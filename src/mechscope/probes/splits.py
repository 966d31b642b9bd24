"""Deterministic, stratified train/test splits and k folds, and the control task.

Splits and folds are stratified (every class is dealt out in proportion) and depend only on the
labels and the seed. The folds partition the examples: each example is in exactly one fold.

The control task (Hewitt & Liang, "Designing and Interpreting Probes with Control Tasks", 2019)
gives every distinct token type (the token id read) a fixed random label, drawn from the
empirical label distribution. A probe can only solve it by memorising token identities, so
``selectivity = accuracy - control accuracy`` is high when the probe reads the property rather
than the word.
"""

from __future__ import annotations

import numpy as np

from mechscope.errors import MechscopeError

__all__ = ["control_labels", "stratified_folds", "train_test_split"]


def _by_class(y: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)]


def train_test_split(
    y: np.ndarray, test_fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` index arrays (sorted); each class puts ``test_fraction`` into test.

    A class with a single example stays in train.
    """
    if not 0 < test_fraction < 1:
        raise MechscopeError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for members in _by_class(y, rng):
        k = min(len(members) - 1, round(test_fraction * len(members)))
        test.append(members[:k])
        train.append(members[k:])
    train_idx, test_idx = np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
    if not len(test_idx):
        raise MechscopeError(
            f"{len(y)} examples leave no test examples at test_fraction={test_fraction}; "
            "add examples or raise the fraction"
        )
    return train_idx, test_idx


def stratified_folds(y: np.ndarray, folds: int, seed: int = 0) -> list[np.ndarray]:
    """``folds`` index arrays (sorted) that partition ``range(len(y))``, classes dealt evenly."""
    if folds < 2:
        raise MechscopeError(
            f"folds must be at least 2 (or 0 for no cross-validation), got {folds}"
        )
    if len(y) < folds:
        raise MechscopeError(f"{len(y)} examples cannot make {folds} folds; use fewer folds")
    rng = np.random.default_rng(seed + 1)
    fold_of = np.empty(len(y), dtype=np.int64)
    start = 0
    for members in _by_class(y, rng):
        # continue the round-robin across classes so fold sizes differ by at most one
        fold_of[members] = (start + np.arange(len(members))) % folds
        start += len(members)
    return [np.flatnonzero(fold_of == f) for f in range(folds)]


def control_labels(token_ids: np.ndarray, y: np.ndarray, seed: int = 0) -> np.ndarray:
    """[n] a random class per distinct token id, drawn from the distribution of ``y``."""
    rng = np.random.default_rng(seed + 2)
    classes, counts = np.unique(y, return_counts=True)
    types = np.unique(token_ids)  # sorted, so the draw is deterministic
    drawn = rng.choice(classes, size=len(types), p=counts / counts.sum())
    return drawn[np.searchsorted(types, token_ids)]
