"""Toy models of superposition: planted ground truths from Elhage et al. (2022).

Every test trains its own small batch of toy models with a fixed seed (a second or two on one
thread) and checks the geometry the paper reports: dedicated orthogonal dimensions when dense,
more features than dimensions when sparse, the pentagon of 5 features in 2 dimensions, the
antipodal pair of 2 features in 1 dimension.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechscope.errors import MechscopeError
from mechscope.toys.superposition import (
    angles,
    antipodal_pairs,
    dimensions_per_feature,
    feature_dimensionality,
    feature_norms,
    geometry,
    importance_matrix,
    regular_polygon,
    superposition,
    train_instances,
    train_toy,
)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def polygon(k: int, norm: float = 1.0, phase: float = 0.3) -> np.ndarray:
    theta = phase + 2 * np.pi * np.arange(k) / k
    return norm * np.stack([np.cos(theta), np.sin(theta)])


# ---- the measures on weights built by hand ------------------------------------------------


def test_measures_of_orthogonal_features() -> None:
    W = np.zeros((3, 5))
    W[[0, 1, 2], [0, 1, 2]] = 1.0  # three dedicated dimensions, two features dropped
    np.testing.assert_allclose(feature_norms(W), [1, 1, 1, 0, 0])
    np.testing.assert_allclose(superposition(W)[:3], 0, atol=1e-12)
    np.testing.assert_allclose(feature_dimensionality(W), [1, 1, 1, 0, 0], atol=1e-12)
    assert dimensions_per_feature(W) == pytest.approx(1.0)
    assert angles(W)[0, 1] == pytest.approx(90.0)
    assert geometry(W).represented == (0, 1, 2) and geometry(W).antipodal == ()


def test_measures_of_a_pentagon_and_an_antipodal_pair() -> None:
    W = polygon(5, norm=1.2)
    assert regular_polygon(W) == 5 and geometry(W).polygon == 5
    # sum_j cos^2 over a pentagon = 1 + 2 cos^2 72 + 2 cos^2 144 = 5/2: each feature has 2/5
    np.testing.assert_allclose(feature_dimensionality(W), 0.4, atol=1e-12)
    np.testing.assert_allclose(superposition(W), 1.5 * 1.2**2, atol=1e-12)
    assert dimensions_per_feature(W) == pytest.approx(2 / (5 * 1.44))
    assert antipodal_pairs(W) == []
    skewed = W.copy()
    skewed[:, 0] = polygon(5, 1.2, phase=0.6)[:, 0]  # one feature 17 degrees off
    assert regular_polygon(skewed) == 0
    pair = np.array([[0.9, -1.0, 0.01]])
    assert antipodal_pairs(pair) == [(0, 1)]
    # D_i = ||W_i||^2 / sum_j (W^_i . W_j)^2 = a^2 / (a^2 + b^2) for a pair of norms a, b
    np.testing.assert_allclose(feature_dimensionality(pair)[:2], [0.81 / 1.81, 1 / 1.81], atol=1e-3)
    assert antipodal_pairs(np.array([[1.0, -0.3]])) == []  # the second one is not represented


def test_bad_inputs_are_one_line_errors() -> None:
    with pytest.raises(MechscopeError, match="smaller than n_features"):
        train_toy(3, 3, [0.5], steps=5)
    with pytest.raises(MechscopeError, match="sparsities"):
        train_toy(5, 2, [1.0], steps=5)
    with pytest.raises(MechscopeError, match="importance has shape"):
        train_toy(5, 2, [0.5], importance=[1.0, 0.5], steps=5)
    with pytest.raises(MechscopeError, match="decay"):
        importance_matrix(1.5, 1, 3)
    with pytest.raises(MechscopeError, match="one 2-D instance"):
        regular_polygon(np.ones((3, 5)))
    with pytest.raises(MechscopeError, match="replicas"):
        train_toy(5, 2, [0.5], steps=5, replicas=0)
    with pytest.raises(MechscopeError, match="must both be"):
        train_instances(2, np.full((2, 5), 0.5), np.ones((2, 4)))


# ---- planted ground truth: trained toy models ------------------------------------------


def test_training_is_deterministic_for_a_seed() -> None:
    a = train_toy(6, 2, [0.0, 0.9], 0.9, steps=50, seed=3)
    b = train_toy(6, 2, [0.0, 0.9], 0.9, steps=50, seed=3)
    c = train_toy(6, 2, [0.0, 0.9], 0.9, steps=50, seed=4)
    np.testing.assert_array_equal(a.W, b.W)
    np.testing.assert_array_equal(a.losses, b.losses)
    assert not np.array_equal(a.W, c.W)
    assert a.W.shape == (2, 2, 6) and a.b.shape == (2, 6) and a.history.shape[1] == 2


@pytest.fixture(scope="module")
def sweep():
    """n=20 features in m=5 dimensions, importance 0.7**i, from dense to very sparse."""
    return train_toy(
        20, 5, [0.0, 0.7, 0.9, 0.99], importance=0.7, steps=1000, seed=0, replicas=3, batch_size=256
    )


def test_dense_gives_the_m_most_important_features_orthogonal_dimensions(sweep) -> None:
    W = sweep.W[0]
    norms = feature_norms(W)
    np.testing.assert_allclose(norms[:5], 1.0, atol=0.05)
    assert norms[5:].max() < 0.1
    gram = W[:, :5].T @ W[:, :5]
    np.testing.assert_allclose(gram, np.eye(5), atol=0.05)
    assert superposition(W)[:5].max() < 0.01
    assert dimensions_per_feature(W) == pytest.approx(1.0, abs=0.05)


def test_sparse_represents_more_features_than_dimensions(sweep) -> None:
    counts = [len(geometry(w).represented) for w in sweep.W]
    assert counts[0] == 5 and counts[-1] > 5
    assert counts == sorted(counts)  # the more sparse, the more features
    W = sweep.W[-1]
    shown = feature_norms(W) > 0.5
    assert superposition(W)[shown].mean() > 0.3
    assert dimensions_per_feature(W) < 0.6


def test_five_features_in_two_dimensions_form_a_pentagon() -> None:
    result = train_toy(5, 2, [0.9, 0.97], importance=1.0, steps=1000, seed=0, replicas=2)
    for W in result.W:
        assert regular_polygon(W, angle_tol=5.0) == 5
        theta = np.sort(np.degrees(np.arctan2(W[1], W[0])))
        gaps = np.diff(np.append(theta, theta[0] + 360))
        np.testing.assert_allclose(gaps, 72.0, atol=5.0)
        np.testing.assert_allclose(feature_dimensionality(W), 0.4, atol=0.02)


def test_two_features_in_one_dimension() -> None:
    result = train_toy(
        2,
        1,
        [0.95, 0.0, 0.0],
        importance=[[1.0, 1.0], [1.0, 0.5], [1.0, 2.0]],
        steps=1000,
        seed=0,
        replicas=8,  # from a start with W_1, W_2 of one sign, about half the runs never part them
        batch_size=128,
    )
    sparse, dense_weak, dense_strong = result.W
    assert antipodal_pairs(sparse) == [(0, 1)]  # sparse, equal importance: W_1 = -W_2
    np.testing.assert_allclose(feature_norms(dense_weak), [1.0, 0.0], atol=0.05)  # 2 dropped
    np.testing.assert_allclose(feature_norms(dense_strong), [0.0, 1.0], atol=0.05)  # 1 dropped
