"""What every probe kind shares: a fitted linear classifier and feature standardisation.

A probe kind is a function ``fit(x, y, n_classes, *, weight_decay) -> LinearClassifier`` over
float64 features ``x [n d]`` and class indices ``y [n]``; :data:`mechscope.probes.PROBES` lists
them. Features are standardised with the training set's mean and standard deviation first, so
the weight decay means the same on every site whatever its scale (residual streams carry a few
huge dimensions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Tensor = torch.Tensor

__all__ = ["LinearClassifier", "accuracy", "standardize"]


@dataclass(frozen=True, eq=False)
class LinearClassifier:
    """``scores = ((x - mean) / scale) @ weight + bias``; the prediction is the argmax class."""

    weight: Tensor  # [d n_classes]
    bias: Tensor  # [n_classes]
    mean: Tensor  # [d]
    scale: Tensor  # [d]

    def scores(self, x: Tensor) -> Tensor:
        """[n n_classes] class scores (logits for the logistic probe)."""
        z = (x.to(self.weight.dtype) - self.mean) / self.scale
        return z @ self.weight + self.bias

    def predict(self, x: Tensor) -> Tensor:
        """[n] the predicted class index of every row."""
        return self.scores(x).argmax(-1)


def standardize(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(z, mean, scale)`` with ``z = (x - mean) / scale``; constant features keep scale 1."""
    x = x.to(torch.float64)
    mean = x.mean(0)
    scale = x.std(0, correction=0)
    scale = torch.where(scale > 1e-12 * (1 + mean.abs()), scale, torch.ones_like(scale))
    return (x - mean) / scale, mean, scale


def constant(d: int, n_classes: int, label: int) -> LinearClassifier:
    """The classifier that always predicts ``label`` (a training set with a single class)."""
    bias = torch.zeros(n_classes, dtype=torch.float64)
    bias[label] = 1.0
    zeros = torch.zeros(d, dtype=torch.float64)
    return LinearClassifier(torch.zeros(d, n_classes, dtype=torch.float64), bias, zeros, zeros + 1)


def accuracy(classifier: LinearClassifier, x: Tensor, y: Tensor) -> float:
    """The fraction of rows whose predicted class is ``y``."""
    return float((classifier.predict(x) == y).double().mean())
