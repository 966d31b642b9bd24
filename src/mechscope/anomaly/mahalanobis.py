"""Mahalanobis distance with Ledoit-Wolf shrinkage, fitted in one streaming pass.

Steps:

1. Accumulate, in float64 and relative to a reference point (the first batch's mean, which keeps
   the sums small when activations have a large mean), the count, ``sum x``, ``sum x x^T``,
   ``sum ||x||^2 x`` and ``sum ||x||^4``.
2. From those sums, the mean, the empirical covariance ``S`` and the Ledoit-Wolf shrinkage
   intensity (Ledoit & Wolf 2004, "A well-conditioned estimator for large-dimensional covariance
   matrices"; the same estimator as scikit-learn's ``LedoitWolf``): with ``mu = tr(S)/p``,
   ``b = (sum ||x - m||^4 / n - ||S||_F^2) / (p n)``, ``d = ||S - mu I||_F^2 / p``, the
   shrinkage is ``min(b, d) / d`` and the covariance ``(1 - s) S + s mu I``. ``sum ||x - m||^4``
   is expanded into the streamed sums, so no activation is kept.
3. The score of ``x`` is ``(x - m)^T P (x - m)`` with ``P`` the inverse shrunk covariance; its
   per-dimension terms ``(x - m)_i (P (x - m))_i`` sum to it exactly and name the dimensions
   that drove it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mechscope.errors import MechscopeError

__all__ = ["MahalanobisStats", "fit_tensors", "mahalanobis", "mahalanobis_terms"]


class MahalanobisStats:
    """Streaming sums for the mean, covariance and Ledoit-Wolf shrinkage of ``[n d]`` rows."""

    def __init__(self) -> None:
        self.n = 0
        self.ref: Tensor | None = None
        self.s1: Tensor | None = None  # sum x              [d]
        self.s2: Tensor | None = None  # sum x x^T          [d d]
        self.s3: Tensor | None = None  # sum ||x||^2 x      [d]
        self.s4 = 0.0  # sum ||x||^4

    def update(self, x: Tensor) -> None:
        """Add the rows of ``x`` [n d]."""
        x = x.detach().double()
        if x.shape[0] == 0:
            return
        if self.ref is None:
            self.ref = x.mean(0)
            d = x.shape[1]
            self.s1, self.s3 = x.new_zeros(d), x.new_zeros(d)
            self.s2 = x.new_zeros(d, d)
        x = x - self.ref
        sq = (x * x).sum(1)
        self.n += x.shape[0]
        self.s1 += x.sum(0)
        self.s2 += x.T @ x
        self.s3 += sq @ x
        self.s4 += float((sq * sq).sum())

    def mean_cov(self) -> tuple[Tensor, Tensor]:
        """The mean [d] and the empirical (biased, 1/n) covariance [d d]."""
        if self.n < 2 or self.ref is None:
            raise MechscopeError(
                "the trusted set is empty (fewer than 2 token activations); pass more trusted text"
            )
        m = self.s1 / self.n
        cov = self.s2 / self.n - torch.outer(m, m)
        return m + self.ref, cov

    def shrinkage(self) -> float:
        """The Ledoit-Wolf shrinkage intensity in [0, 1]."""
        _, cov = self.mean_cov()
        n, p = self.n, cov.shape[0]
        m = self.s1 / n  # the mean relative to ref
        c = float(m @ m)
        a = float(torch.trace(self.s2))  # sum ||x||^2
        fourth = (
            self.s4
            - 4 * float(m @ self.s3)
            + 4 * float(m @ self.s2 @ m)
            + 2 * c * a
            - 4 * c * float(m @ self.s1)
            + n * c * c
        )  # sum ||x - m||^4
        frob = float((cov * cov).sum())
        mu = float(torch.trace(cov)) / p
        b = (fourth / n - frob) / (p * n)
        d = (frob - 2 * mu * float(torch.trace(cov)) + p * mu * mu) / p
        if d <= 0:
            return 0.0
        return max(0.0, min(b, d) / d)


def fit_tensors(stats: MahalanobisStats) -> dict[str, Tensor]:
    """``mean`` [d], ``precision`` [d d] (float32) and ``shrinkage`` [1] of the fitted stats."""
    mean, cov = stats.mean_cov()
    s = stats.shrinkage()
    p = cov.shape[0]
    mu = float(torch.trace(cov)) / p
    shrunk = (1 - s) * cov + s * mu * torch.eye(p, dtype=cov.dtype)
    shrunk += 1e-9 * max(mu, 1e-12) * torch.eye(p, dtype=cov.dtype)  # a constant direction
    precision = torch.linalg.pinv(shrunk, hermitian=True)
    return {
        "mean": mean.float(),
        "precision": precision.float(),
        "shrinkage": torch.tensor([s], dtype=torch.float32),
    }


def mahalanobis(t: dict[str, Tensor], x: Tensor) -> Tensor:
    """Squared Mahalanobis distances [n] of the rows of ``x`` [n d]."""
    centred = x.float() - t["mean"]
    return ((centred @ t["precision"]) * centred).sum(-1)


def mahalanobis_terms(t: dict[str, Tensor], x: Tensor) -> Tensor:
    """Per-dimension terms [n d] that sum to :func:`mahalanobis`."""
    centred = x.float() - t["mean"]
    return (centred @ t["precision"]) * centred
