"""A diagonal Gaussian on SAE latents: one mean and variance per latent, fitted streaming.

The score of a token is the mean over latents of ``(f_i - m_i)^2 / (v_i + eps)``, with ``f`` the
SAE's latents of the token's activation; its per-latent terms (divided by the number of latents)
sum to it and name the latents that drove a flag. ``eps`` is a small fraction of the mean latent
variance, so a latent that never fired on trusted text but fires now scores high without dividing
by zero.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mechscope.errors import MechscopeError

__all__ = ["DiagonalStats", "diagonal_terms", "fit_diagonal"]

EPS_FRACTION = 1e-3  # eps = this times the mean latent variance


class DiagonalStats:
    """Streaming per-dimension sums of ``[n d]`` rows."""

    def __init__(self) -> None:
        self.n = 0
        self.ref: Tensor | None = None
        self.s1: Tensor | None = None
        self.s2: Tensor | None = None

    def update(self, x: Tensor) -> None:
        x = x.detach().double()
        if x.shape[0] == 0:
            return
        if self.ref is None:
            self.ref = x.mean(0)
            self.s1, self.s2 = torch.zeros_like(self.ref), torch.zeros_like(self.ref)
        x = x - self.ref
        self.n += x.shape[0]
        self.s1 += x.sum(0)
        self.s2 += (x * x).sum(0)


def fit_diagonal(stats: DiagonalStats) -> dict[str, Tensor]:
    """``mean`` [d] and ``var`` [d] (float32, variance plus eps)."""
    if stats.n < 2 or stats.ref is None:
        raise MechscopeError(
            "the trusted set is empty (fewer than 2 token activations); pass more trusted text"
        )
    m = stats.s1 / stats.n
    var = (stats.s2 / stats.n - m * m).clamp(min=0)
    eps = EPS_FRACTION * max(float(var.mean()), 1e-12)
    return {"mean": (m + stats.ref).float(), "var": (var + eps).float()}


def diagonal_terms(t: dict[str, Tensor], x: Tensor) -> Tensor:
    """Per-latent terms [n d]; their sum is the token's score."""
    z = x.float() - t["mean"]
    return z * z / t["var"] / x.shape[-1]
