"""Planted ground truth: activations that are sparse non-negative mixes of a known dictionary."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor


def dictionary(n_features: int = 256, d: int = 64, seed: int = 0) -> Tensor:
    """``[n_features d]`` random unit directions."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n_features, d, generator=g)
    return w / w.norm(dim=1, keepdim=True)


def codes(n: int, n_features: int, active: float, g: torch.Generator) -> Tensor:
    """``[n n_features]`` sparse non-negative codes: each feature on with probability active/n_features."""
    on = torch.rand(n, n_features, generator=g) < active / n_features
    return on * (0.5 + torch.rand(n, n_features, generator=g))


def batches(
    dic: Tensor,
    n_batches: int,
    batch_size: int = 1024,
    *,
    active: float = 4.0,
    noise: float = 0.01,
    seed: int = 1,
    scale: float = 3.0,
) -> Iterator[Tensor]:
    """Deterministic batches ``scale * (codes @ dic + noise)`` (scale: the SAE must undo it)."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(n_batches):
        c = codes(batch_size, dic.shape[0], active, g)
        yield scale * (c @ dic + noise * torch.randn(batch_size, dic.shape[1], generator=g))


def pair_batches(
    dic: Tensor, mix: Tensor, n_batches: int, batch_size: int = 1024, *, seed: int = 1
) -> Iterator[tuple[Tensor, Tensor]]:
    """Transcoder pairs: ``x_in = codes @ dic``, ``x_out = codes @ dic @ mix`` (+ small noise)."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(n_batches):
        c = codes(batch_size, dic.shape[0], 4.0, g)
        x_in = c @ dic + 0.01 * torch.randn(batch_size, dic.shape[1], generator=g)
        yield x_in, c @ dic @ mix + 0.01 * torch.randn(batch_size, mix.shape[1], generator=g)


def recovery(true: Tensor, learned: Tensor, threshold: float = 0.9) -> tuple[float, float]:
    """Fraction of true directions whose best-matching learned row has cosine >= threshold; mean max cosine."""
    learned = learned / learned.norm(dim=1, keepdim=True).clamp_min(1e-12)
    best = (true @ learned.T).max(dim=1).values
    return float((best >= threshold).float().mean()), float(best.mean())


def norm_scale(sample: Tensor) -> float:
    """The unit-mean-squared-norm factor of a sample of activations."""
    return float(sample.pow(2).sum(-1).mean().rsqrt())
