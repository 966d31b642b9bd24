"""Logistic-regression probe: multinomial softmax regression with L2 weight decay.

Minimises ``mean cross-entropy + weight_decay / 2 * ||W||^2`` (the bias is not decayed) over
standardised features, full batch, with L-BFGS and a strong-Wolfe line search in float64 from
zero weights: no randomness, so the same data always gives the same probe. The objective is
strictly convex in ``W``, so the optimum is unique; the tests check it against SciPy's L-BFGS-B
on the same objective. Classes absent from the training rows are never predicted.

Alain & Bengio, "Understanding intermediate layers using linear classifier probes" (2016).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mechscope.probes.base import LinearClassifier, constant, standardize

Tensor = torch.Tensor

__all__ = ["fit_logistic"]


def fit_logistic(
    x: Tensor,
    y: Tensor,
    n_classes: int,
    *,
    weight_decay: float = 1e-2,
    max_iter: int = 500,
) -> LinearClassifier:
    """Fit ``x [n d]`` to class indices ``y [n]`` (values in ``[0, n_classes)``)."""
    z, mean, scale = standardize(x)
    present = torch.unique(y)
    if len(present) == 1:
        return constant(z.shape[1], n_classes, int(present[0]))
    local = torch.searchsorted(present, y)  # train only over the classes that occur
    w = torch.zeros(z.shape[1], len(present), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(len(present), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z @ w + b, local) + 0.5 * weight_decay * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    weight = torch.zeros(z.shape[1], n_classes, dtype=torch.float64)
    bias = torch.full((n_classes,), -torch.inf, dtype=torch.float64)
    weight[:, present] = w.detach()
    bias[present] = b.detach()
    return LinearClassifier(weight, bias, mean, scale)
