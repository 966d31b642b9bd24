"""The probe kinds against independent references on synthetic data.

- logistic: the same objective minimised by SciPy's L-BFGS-B in NumPy (scikit-learn is not
  installed here); the weights are unique (strictly convex in W), so they must agree;
- linear: the closed form against NumPy's least squares on an augmented system;
- both: linearly separable data is classified perfectly; fits are deterministic.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.special import log_softmax

from mechscope.probes import PROBES, accuracy, fit_linear, fit_logistic


def blobs(n: int, d: int, n_classes: int, seed: int = 0, spread: float = 4.0):
    """Gaussian blobs around random centres, with a few large-scale features (like residuals)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, d)) * spread
    y = np.arange(n) % n_classes
    x = centres[y] + rng.normal(size=(n, d))
    x[:, :2] *= 100.0
    return torch.from_numpy(x), torch.from_numpy(y)


def scipy_logistic(x: np.ndarray, y: np.ndarray, n_classes: int, wd: float) -> np.ndarray:
    """W minimising mean CE + wd/2 ||W||^2 on standardised x, by SciPy (float64, own gradient)."""
    z = (x - x.mean(0)) / x.std(0)
    n, d = z.shape
    onehot = np.eye(n_classes)[y]

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[: d * n_classes].reshape(d, n_classes), theta[d * n_classes :]
        logp = log_softmax(z @ w + b, axis=1)
        loss = -(onehot * logp).sum() / n + 0.5 * wd * (w * w).sum()
        g = (np.exp(logp) - onehot) / n
        return loss, np.concatenate([(z.T @ g + wd * w).ravel(), g.sum(0)])

    theta0 = np.zeros(d * n_classes + n_classes)
    opt = minimize(
        objective,
        theta0,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 5000, "gtol": 1e-12, "ftol": 1e-15},
    )
    return opt.x[: d * n_classes].reshape(d, n_classes)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_logistic_matches_scipy_on_the_same_objective(n_classes: int) -> None:
    x, y = blobs(120, 10, n_classes, spread=0.7)  # overlapping: the optimum is interior
    ours = fit_logistic(x, y, n_classes, weight_decay=0.05)
    ref = scipy_logistic(x.numpy(), y.numpy(), n_classes, 0.05)
    # softmax is shift-invariant per row of W's columns only through b; W itself is unique
    np.testing.assert_allclose(ours.weight.numpy(), ref, atol=1e-5)


def test_linear_matches_numpy_least_squares() -> None:
    x, y = blobs(80, 12, 3, spread=0.5)
    wd = 0.1
    ours = fit_linear(x, y, 3, weight_decay=wd)
    xn = x.numpy()
    z = (xn - xn.mean(0)) / xn.std(0)
    targets = np.eye(3)[y.numpy()]
    # ridge as plain least squares on rows augmented with sqrt(n * wd) * I (no bias: z is centred)
    n, d = z.shape
    a = np.vstack([z, np.sqrt(n * wd) * np.eye(d)])
    t = np.vstack([targets - targets.mean(0), np.zeros((d, 3))])
    ref = np.linalg.lstsq(a, t, rcond=None)[0]
    np.testing.assert_allclose(ours.weight.numpy(), ref, atol=1e-10)
    np.testing.assert_allclose(ours.bias.numpy(), targets.mean(0), atol=1e-12)


@pytest.mark.parametrize("n, d", [(60, 10), (30, 80)])  # both branches: n >= d and n < d
def test_linear_without_decay_is_least_squares(n: int, d: int) -> None:
    x, y = blobs(n, d, 2, seed=3)
    fitted = fit_linear(x, y, 2, weight_decay=1e-12)
    exact = fit_linear(x, y, 2, weight_decay=0.0)
    scores = fitted.scores(x).numpy()
    xn = x.numpy()
    z = np.hstack([(xn - xn.mean(0)) / xn.std(0), np.ones((n, 1))])
    ref = z @ np.linalg.lstsq(z, np.eye(2)[y.numpy()], rcond=None)[0]
    np.testing.assert_allclose(exact.scores(x).numpy(), ref, atol=1e-8)
    np.testing.assert_allclose(scores, ref, atol=1e-4)


@pytest.mark.parametrize("kind", sorted(PROBES))
@pytest.mark.parametrize("n_classes", [2, 4])
def test_separable_data_is_classified_perfectly(kind: str, n_classes: int) -> None:
    x, y = blobs(200, 16, n_classes, spread=6.0)
    fit = PROBES[kind](x[:150], y[:150], n_classes, weight_decay=1e-3)
    assert accuracy(fit, x[:150], y[:150]) == 1.0
    assert accuracy(fit, x[150:], y[150:]) == 1.0


@pytest.mark.parametrize("kind", sorted(PROBES))
def test_fits_are_deterministic(kind: str) -> None:
    x, y = blobs(90, 20, 3, spread=0.5)
    a, b = (PROBES[kind](x, y, 3, weight_decay=1e-2) for _ in range(2))
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


@pytest.mark.parametrize("kind", sorted(PROBES))
def test_classes_missing_from_training_are_never_predicted(kind: str) -> None:
    x, y = blobs(90, 8, 3)
    keep = y != 1
    fit = PROBES[kind](x[keep], y[keep], 3, weight_decay=1e-2)
    assert fit.weight.shape == (8, 3)
    assert 1 not in fit.predict(x).tolist()
    single = PROBES[kind](x[y == 2], y[y == 2], 3, weight_decay=1e-2)
    assert set(single.predict(x).tolist()) == {2}
