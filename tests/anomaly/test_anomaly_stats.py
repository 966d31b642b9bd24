"""The detectors' statistics against scikit-learn (the oracle) and exact identities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

sklearn = pytest.importorskip("sklearn")
from sklearn.covariance import LedoitWolf  # noqa: E402
from sklearn.metrics import average_precision_score, roc_auc_score  # noqa: E402
from sklearn.neighbors import LocalOutlierFactor  # noqa: E402

from mechscope.anomaly import default_layers  # noqa: E402
from mechscope.anomaly.gaussian import DiagonalStats, diagonal_terms, fit_diagonal  # noqa: E402
from mechscope.anomaly.lof import Reservoir, fit_lof, lof_scores  # noqa: E402
from mechscope.anomaly.mahalanobis import (  # noqa: E402
    MahalanobisStats,
    fit_tensors,
    mahalanobis,
    mahalanobis_terms,
)
from mechscope.anomaly.metrics import auroc, average_precision, fpr_at_recall  # noqa: E402


def _data(n: int = 300, d: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d))
    return rng.normal(size=(n, d)) @ mix + 50.0  # correlated, far from the origin


@pytest.mark.parametrize("n", [40, 300])
def test_streamed_ledoit_wolf_matches_sklearn(n: int) -> None:
    x = _data(n)
    stats = MahalanobisStats()
    for chunk in np.array_split(x, 7):
        stats.update(torch.from_numpy(chunk))
    oracle = LedoitWolf().fit(x)
    assert stats.shrinkage() == pytest.approx(oracle.shrinkage_, rel=1e-6)
    t = fit_tensors(stats)
    np.testing.assert_allclose(t["mean"].numpy(), oracle.location_, rtol=1e-5)
    np.testing.assert_allclose(t["precision"].numpy(), oracle.precision_, rtol=2e-3, atol=1e-6)
    probe = _data(20, seed=1)
    np.testing.assert_allclose(
        mahalanobis(t, torch.from_numpy(probe)).numpy(), oracle.mahalanobis(probe), rtol=2e-3
    )


def test_mahalanobis_terms_sum_to_the_score() -> None:
    x = torch.from_numpy(_data()).float()
    stats = MahalanobisStats()
    stats.update(x)
    t = fit_tensors(stats)
    torch.testing.assert_close(mahalanobis_terms(t, x[:5]).sum(-1), mahalanobis(t, x[:5]))


def test_diagonal_gaussian_is_the_exact_mean_and_variance() -> None:
    x = torch.from_numpy(_data()).double()
    stats = DiagonalStats()
    for chunk in x.split(33):
        stats.update(chunk)
    t = fit_diagonal(stats)
    torch.testing.assert_close(t["mean"].double(), x.mean(0), rtol=1e-6, atol=1e-6)
    eps = 1e-3 * float(x.var(0, unbiased=False).mean())
    torch.testing.assert_close(t["var"].double(), x.var(0, unbiased=False) + eps, rtol=1e-5, atol=0)
    z = (x[:3].float() - t["mean"]) ** 2 / t["var"] / x.shape[1]
    torch.testing.assert_close(diagonal_terms(t, x[:3]), z)


def test_lof_matches_sklearn_novelty_scores() -> None:
    x = _data(200, d=6)
    stats = MahalanobisStats()
    stats.update(torch.from_numpy(x))
    mean, cov = stats.mean_cov()
    t = fit_lof(torch.from_numpy(x).float(), mean, cov, dims=6, k=10, block=64)
    # the oracle sees the same whitened points
    z = ((torch.from_numpy(x).float() - t["mean"]) @ t["basis"]).double().numpy()
    oracle = LocalOutlierFactor(n_neighbors=10, novelty=True, algorithm="brute").fit(z)
    probe = _data(30, d=6, seed=3)
    zp = ((torch.from_numpy(probe).float() - t["mean"]) @ t["basis"]).double().numpy()
    ours = lof_scores(t, torch.from_numpy(probe), k=10, block=7).numpy()
    np.testing.assert_allclose(ours, -oracle.score_samples(zp), rtol=1e-4)


def test_reservoir_is_bounded_deterministic_and_uniform() -> None:
    def run(seed: int) -> torch.Tensor:
        r = Reservoir(100, seed)
        for start in range(0, 5000, 64):
            r.update(torch.arange(start, min(start + 64, 5000)).float()[:, None])
        assert r.rows is not None
        return r.rows[:, 0]

    a = run(0)
    assert a.shape == (100,) and len(set(a.tolist())) == 100
    torch.testing.assert_close(a, run(0))
    assert abs(float(a.mean()) - 2500) < 600  # a prefix-biased sample would sit near 50


def test_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 60).round(1), rng.normal(0, 1, 90).round(1)  # with ties
    y = np.r_[np.ones(60), np.zeros(90)]
    s = np.r_[pos, neg]
    assert auroc(pos, neg) == pytest.approx(roc_auc_score(y, s))
    assert average_precision(pos, neg) == pytest.approx(average_precision_score(y, s))


def test_fpr_at_recall_by_hand() -> None:
    # 95% recall of 20 positives (2..21) needs 19 flagged: threshold 3, the 19th largest
    pos = [float(v) for v in range(2, 22)]
    assert fpr_at_recall(pos, [0.0, 1.0, 2.0, 3.0]) == 0.25
    assert fpr_at_recall(pos, [0.0, 1.0]) == 0.0


def test_default_layers() -> None:
    assert default_layers(3) == (0, 1, 2)
    assert default_layers(30) == (4, 9, 14, 19, 24, 29)


def test_lens_translator_is_ridge_least_squares() -> None:
    from sklearn.linear_model import Ridge

    from mechscope.anomaly.lens import RIDGE, fit_translator

    x = _data(400, 6, seed=1)
    y = x @ np.random.default_rng(2).normal(size=(6, 6)) + np.random.default_rng(3).normal(
        size=(400, 6)
    )
    stats = MahalanobisStats()
    for chunk in np.array_split(np.concatenate([x, y], 1), 5):
        stats.update(torch.from_numpy(chunk))
    t = fit_translator(stats)
    # the covariance is the biased (1/n) one, so the ridge on the sums is n times larger
    alpha = RIDGE * x.var(0).mean() * len(x)
    oracle = Ridge(alpha=alpha).fit(x, y)
    assert t["weight"].numpy() == pytest.approx(oracle.coef_, rel=1e-4, abs=1e-4)
    assert t["bias"].numpy() == pytest.approx(oracle.intercept_, rel=1e-4, abs=1e-3)
