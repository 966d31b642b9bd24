"""Linear (ridge) probe: least squares onto one-hot class targets, in closed form.

Minimises ``mean ||x W + b - onehot(y)||^2 + weight_decay * ||W||^2`` over standardised features
(one-vs-rest regression; the prediction is the class with the largest output). With centred
features and targets the solution is ``W = (Z^T Z + n λ I)^-1 Z^T Y``, or, when there are fewer
rows than features, the same ``W = Z^T (Z Z^T + n λ I)^-1 Y``; ``b`` is the mean target. With
``weight_decay == 0`` it is the minimum-norm least-squares solution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mechscope.probes.base import LinearClassifier, constant, standardize

Tensor = torch.Tensor

__all__ = ["fit_linear"]


def fit_linear(
    x: Tensor, y: Tensor, n_classes: int, *, weight_decay: float = 1e-2
) -> LinearClassifier:
    """Fit ``x [n d]`` to class indices ``y [n]`` (values in ``[0, n_classes)``)."""
    z, mean, scale = standardize(x)
    present = torch.unique(y)
    if len(present) == 1:
        return constant(z.shape[1], n_classes, int(present[0]))
    targets = F.one_hot(y, n_classes).to(torch.float64)
    target_mean = targets.mean(0)
    targets = targets - target_mean
    n, d = z.shape  # z is centred: standardize subtracts the mean
    ridge = n * weight_decay
    if weight_decay == 0:
        weight = torch.linalg.lstsq(z, targets, driver="gelsd").solution
    elif n < d:
        weight = z.T @ torch.linalg.solve(z @ z.T + ridge * torch.eye(n, dtype=z.dtype), targets)
    else:
        weight = torch.linalg.solve(z.T @ z + ridge * torch.eye(d, dtype=z.dtype), z.T @ targets)
    bias = target_mean.clone()
    absent = torch.ones(n_classes, dtype=torch.bool)
    absent[present] = False
    bias[absent] = -torch.inf  # never predict a class the training rows lack
    return LinearClassifier(weight, bias, mean, scale)
