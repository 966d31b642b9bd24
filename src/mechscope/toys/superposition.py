"""Toy models of superposition (Elhage et al. 2022, "Toy Models of Superposition").

The ReLU-output model squeezes ``n`` sparse features into ``m < n`` dimensions and reads them back:

    h = W x,    x' = ReLU(W^T h + b),    W [m n], b [n],

trained on the importance-weighted squared error ``L = E_x sum_i I_i (x_i - x'_i)^2``. A feature is
present with probability ``p = 1 - S`` (``S`` its sparsity) and then uniform in ``[0, 1]``.

Steps:

1. many independent models ("instances": one per sparsity, importance or replica) are trained at
   once as one batched model ``W [instance m n]`` -- the paper's trick, so a whole sparsity sweep
   is one run; Adam treats every parameter on its own, so the instances never interact;
2. each step draws a fresh batch from one seeded generator (common random numbers: every
   instance sees the same uniform draws, thresholded at its own ``p``), Adam with a cosine-decayed
   learning rate; the whole run is deterministic for a seed;
3. with ``replicas > 1`` every setting is trained from several initialisations and the one with the
   lowest loss on a fixed evaluation batch is kept (the paper does the same to escape poor local
   minima);
4. the analysis reads ``W`` only: feature norms ``||W_i||``, superposition (interference)
   ``sum_{j != i} (W^_i . W_j)^2``, dimensions per feature ``m / ||W||_F^2``, per-feature
   dimensionality, angles between feature directions, antipodal pairs (``W_i ~ -W_j``) and regular
   polygons in two dimensions (the pentagon of 5 features in 2 dimensions at high sparsity).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mechscope.errors import MechscopeError
from mechscope.progress import progress

Tensor = torch.Tensor
# A feature counts as represented when its column of W has at least this norm (the paper's bars).
REPRESENTED = 0.5
EVAL_SAMPLES = 16384
POLYGONS = {3: "triangle", 4: "square", 5: "pentagon", 6: "hexagon"}

__all__ = [
    "POLYGONS",
    "REPRESENTED",
    "Geometry",
    "ToyResult",
    "angles",
    "antipodal_pairs",
    "best_replica",
    "dimensions_per_feature",
    "feature_dimensionality",
    "feature_norms",
    "geometry",
    "importance_matrix",
    "regular_polygon",
    "superposition",
    "train_instances",
    "train_toy",
]


@dataclass(frozen=True, eq=False)
class ToyResult:
    """Trained toy models, one per instance.

    ``W [instance m n]`` and ``b [instance n]`` are the weights; ``losses [instance]`` the
    importance-weighted loss on a fixed evaluation batch of 16384 samples; ``history [log
    instance]`` the training loss every ``log_every`` steps; ``sparsities [instance]`` and
    ``importance [instance n]`` the settings each instance was trained with.
    """

    W: np.ndarray
    b: np.ndarray
    losses: np.ndarray
    history: np.ndarray
    sparsities: np.ndarray
    importance: np.ndarray
    steps: int
    seed: int

    @property
    def n_features(self) -> int:
        return int(self.W.shape[-1])

    @property
    def n_hidden(self) -> int:
        return int(self.W.shape[-2])

    def to_dict(self) -> dict[str, object]:
        """The result as JSON-ready lists, with the per-instance analysis."""
        return {
            "n_features": self.n_features,
            "n_hidden": self.n_hidden,
            "steps": self.steps,
            "seed": self.seed,
            "sparsities": self.sparsities.tolist(),
            "losses": self.losses.tolist(),
            "W": self.W.tolist(),
            "b": self.b.tolist(),
            "feature_norms": feature_norms(self.W).tolist(),
            "superposition": superposition(self.W).tolist(),
            "dimensions_per_feature": dimensions_per_feature(self.W).tolist(),
        }


def importance_matrix(
    importance: float | Sequence[float] | np.ndarray, n_instances: int, n_features: int
) -> np.ndarray:
    """Importances ``[instance n]`` from a decay ``r`` (``I_i = r**i``), one row ``[n]`` or a matrix."""
    if np.isscalar(importance):
        decay = float(importance)  # type: ignore[arg-type]
        if not 0 < decay <= 1:
            raise MechscopeError(f"importance decay must be in (0, 1], got {decay}; try 0.9")
        row = decay ** np.arange(n_features, dtype=np.float64)
        return np.tile(row, (n_instances, 1))
    values = np.asarray(importance, dtype=np.float64)
    if values.shape == (n_features,):
        values = np.tile(values, (n_instances, 1))
    if values.shape != (n_instances, n_features):
        raise MechscopeError(
            f"importance has shape {values.shape}; give a decay, [{n_features}] "
            f"or [{n_instances}, {n_features}] values"
        )
    if not np.all(values > 0):
        raise MechscopeError("importances must be positive")
    return values


def _check_sizes(n_features: int, n_hidden: int, steps: int, lr: float, batch_size: int) -> None:
    if n_features < 2 or n_hidden < 1:
        raise MechscopeError(
            f"need n_features >= 2 and n_hidden >= 1, got {n_features}, {n_hidden}"
        )
    if n_hidden >= n_features:
        raise MechscopeError(
            f"n_hidden ({n_hidden}) must be smaller than n_features ({n_features}) "
            "for superposition to be possible"
        )
    if steps < 1 or batch_size < 1 or not lr > 0:
        raise MechscopeError(
            f"steps, batch size and lr must be positive, got {steps}, {batch_size}, {lr}"
        )


def _batch(prob: Tensor, batch_size: int, gen: torch.Generator) -> Tensor:
    """Sparse features ``[batch instance n]``: present with probability ``prob [instance n]``."""
    n = prob.shape[-1]
    present = torch.rand(batch_size, 1, n, generator=gen) < prob
    return torch.rand(batch_size, 1, n, generator=gen) * present


def _forward(W: Tensor, b: Tensor, x: Tensor) -> Tensor:
    hidden = torch.einsum("bin,imn->bim", x, W)
    return torch.relu(torch.einsum("bim,imn->bin", hidden, W) + b)


def _loss(W: Tensor, b: Tensor, x: Tensor, importance: Tensor) -> Tensor:
    """Importance-weighted squared error per instance ``[instance]``, mean over the batch."""
    return (importance * (x - _forward(W, b, x)) ** 2).sum(-1).mean(0)


def train_instances(
    n_hidden: int,
    probabilities: np.ndarray,
    importance: np.ndarray,
    *,
    steps: int = 3000,
    lr: float = 1e-2,
    batch_size: int = 1024,
    seed: int = 0,
    log_every: int = 50,
    quiet: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train one toy model per row of ``probabilities`` / ``importance`` ``[instance n]``, at once.

    Returns ``(W [instance m n], b [instance n], eval_losses [instance], history [log instance])``.
    """
    probabilities, importance = np.asarray(probabilities), np.asarray(importance)
    if probabilities.ndim != 2 or importance.shape != probabilities.shape:
        raise MechscopeError(
            f"probabilities {probabilities.shape} and importance {importance.shape} must both be "
            "[instance n]"
        )
    if np.any((probabilities <= 0) | (probabilities > 1)):
        raise MechscopeError("feature probabilities must be in (0, 1]")
    n_instances, n_features = probabilities.shape
    _check_sizes(n_features, n_hidden, steps, lr, batch_size)
    gen = torch.Generator().manual_seed(seed)
    std = math.sqrt(2.0 / (n_hidden + n_features))  # Xavier normal
    W = (torch.randn(n_instances, n_hidden, n_features, generator=gen) * std).requires_grad_()
    b = torch.zeros(n_instances, n_features, requires_grad=True)
    prob = torch.as_tensor(probabilities, dtype=torch.float32)
    imp = torch.as_tensor(importance, dtype=torch.float32)
    opt = torch.optim.Adam([W, b], lr=lr)
    history = []
    for step in progress(range(steps), desc="toy models", quiet=quiet, unit="step"):
        for group in opt.param_groups:  # cosine decay to 0
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss = _loss(W, b, _batch(prob, batch_size, gen), imp)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            history.append(loss.detach().numpy().copy())
    with torch.no_grad():
        eval_gen = torch.Generator().manual_seed(seed + 1)
        final = _loss(W, b, _batch(prob, EVAL_SAMPLES, eval_gen), imp)
    return (
        W.detach().numpy().astype(np.float64),
        b.detach().numpy().astype(np.float64),
        final.numpy().astype(np.float64),
        np.stack(history).astype(np.float64),
    )


def best_replica(losses: np.ndarray, replicas: int) -> np.ndarray:
    """Index of the lowest-loss replica of each setting; instances are ``[setting replica]``."""
    grouped = losses.reshape(-1, replicas)
    return np.arange(grouped.shape[0]) * replicas + grouped.argmin(axis=1)


def train_toy(
    n_features: int,
    n_hidden: int,
    sparsities: Sequence[float] | np.ndarray,
    importance: float | Sequence[float] | np.ndarray = 0.9,
    steps: int = 3000,
    lr: float = 1e-2,
    seed: int = 0,
    *,
    batch_size: int = 1024,
    replicas: int = 1,
    quiet: bool = True,
) -> ToyResult:
    """Train one toy model per sparsity ``S`` (feature probability ``1 - S``) in one batched run.

    ``importance`` is a decay ``r`` (``I_i = r**i``), ``[n]`` values or ``[len(sparsities) n]``.
    With ``replicas > 1``, each sparsity is trained from that many initialisations and the one
    with the lowest evaluation loss is kept.
    """
    sparse = np.asarray(sparsities, dtype=np.float64).reshape(-1)
    if sparse.size == 0 or np.any((sparse < 0) | (sparse >= 1)):
        raise MechscopeError(f"sparsities must be in [0, 1), got {sparse.tolist()}")
    if replicas < 1:
        raise MechscopeError(f"replicas must be >= 1, got {replicas}")
    imp = importance_matrix(importance, sparse.size, n_features)
    probs = np.repeat(np.tile(1 - sparse[:, None], (1, n_features)), replicas, axis=0)
    W, b, losses, history = train_instances(
        n_hidden,
        probs,
        np.repeat(imp, replicas, axis=0),
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        quiet=quiet,
    )
    keep = best_replica(losses, replicas)
    return ToyResult(
        W[keep], b[keep], losses[keep], history[:, keep], sparse, imp, steps=steps, seed=seed
    )


# ---------------------------------------------------------------------------------------------
# analysis of W [... m n]: columns W_i are the feature directions


def feature_norms(W: np.ndarray) -> np.ndarray:
    """``||W_i||`` per feature ``[... n]``."""
    return np.linalg.norm(np.asarray(W), axis=-2)


def _unit(W: np.ndarray) -> np.ndarray:
    return W / np.maximum(feature_norms(W), 1e-12)[..., None, :]


def _overlaps(W: np.ndarray) -> np.ndarray:
    """``(W^_i . W_j)^2`` ``[... n n]`` (row i, column j)."""
    W = np.asarray(W, dtype=np.float64)
    return (np.swapaxes(_unit(W), -1, -2) @ W) ** 2


def superposition(W: np.ndarray) -> np.ndarray:
    """Interference ``sum_{j != i} (W^_i . W_j)^2`` per feature ``[... n]`` (0 when orthogonal)."""
    overlaps = _overlaps(W)
    return overlaps.sum(-1) - np.diagonal(overlaps, axis1=-2, axis2=-1)


def feature_dimensionality(W: np.ndarray) -> np.ndarray:
    """``D_i = ||W_i||^2 / sum_j (W^_i . W_j)^2`` ``[... n]``: the share of a dimension feature i
    has (1 = a dedicated dimension, 1/2 = an antipodal pair, 2/5 = a pentagon, 0 = not there)."""
    norms2 = feature_norms(W) ** 2
    return norms2 / np.maximum(_overlaps(W).sum(-1), 1e-12)


def dimensions_per_feature(W: np.ndarray) -> np.ndarray:
    """``m / ||W||_F^2`` ``[...]``: about ``m / k`` when ``k`` features have unit norm."""
    W = np.asarray(W, dtype=np.float64)
    return W.shape[-2] / np.maximum((W**2).sum(axis=(-2, -1)), 1e-12)


def angles(W: np.ndarray) -> np.ndarray:
    """Angles in degrees between feature directions ``[... n n]`` (0 for a zero column)."""
    unit = _unit(np.asarray(W, dtype=np.float64))
    cos = np.clip(np.swapaxes(unit, -1, -2) @ unit, -1.0, 1.0)
    return np.degrees(np.arccos(cos))


def antipodal_pairs(
    W: np.ndarray,
    *,
    threshold: float = REPRESENTED,
    max_cos: float = -0.95,
    norm_ratio: float = 0.7,
) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, of represented features with ``W_i ~ -W_j`` in one instance
    ``W [m n]``: cosine ``<= max_cos`` and norms within ``norm_ratio`` of each other."""
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2:
        raise MechscopeError(f"antipodal_pairs takes one instance W [m n], got shape {W.shape}")
    norms = feature_norms(W)
    cos = np.cos(np.radians(angles(W)))
    found = []
    for i in range(W.shape[1]):
        for j in range(i + 1, W.shape[1]):
            big = min(norms[i], norms[j]) >= threshold
            alike = min(norms[i], norms[j]) >= norm_ratio * max(norms[i], norms[j])
            if big and alike and cos[i, j] <= max_cos:
                found.append((i, j))
    return found


def regular_polygon(
    W: np.ndarray,
    *,
    threshold: float = REPRESENTED,
    angle_tol: float = 8.0,
    norm_ratio: float = 0.8,
) -> int:
    """The number of sides ``k >= 3`` if the represented features of one 2-D instance ``W [2 n]``
    lie on a regular polygon (adjacent directions ``360/k`` degrees apart within ``angle_tol``,
    norms within ``norm_ratio`` of each other), else 0."""
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != 2:
        raise MechscopeError(f"regular_polygon takes one 2-D instance W [2 n], got shape {W.shape}")
    norms = feature_norms(W)
    shown = norms >= threshold
    k = int(shown.sum())
    if k < 3 or norms[shown].min() < norm_ratio * norms[shown].max():
        return 0
    theta = np.sort(np.degrees(np.arctan2(W[1, shown], W[0, shown])))
    gaps = np.diff(np.append(theta, theta[0] + 360.0))
    return k if np.all(np.abs(gaps - 360.0 / k) <= angle_tol) else 0


@dataclass(frozen=True)
class Geometry:
    """What one instance's feature directions look like."""

    represented: tuple[int, ...]  # features with ||W_i|| >= 0.5
    antipodal: tuple[tuple[int, int], ...]  # pairs with W_i ~ -W_j
    polygon: int  # k if the represented features form a regular k-gon (2-D only), else 0
    dimensions_per_feature: float

    def describe(self) -> str:
        """E.g. ``5 represented, pentagon`` or ``4 represented, square, 2 antipodal pairs``."""
        parts = [f"{len(self.represented)} represented"]
        if self.polygon:
            parts.append(POLYGONS.get(self.polygon, f"regular {self.polygon}-gon"))
        if self.antipodal:
            n = len(self.antipodal)
            parts.append(f"{n} antipodal pair{'s' if n > 1 else ''}")
        return ", ".join(parts)


def geometry(W: np.ndarray) -> Geometry:
    """Represented features, antipodal pairs and (for ``m == 2``) a regular polygon of ``W [m n]``."""
    W = np.asarray(W, dtype=np.float64)
    shown = np.flatnonzero(feature_norms(W) >= REPRESENTED)
    polygon = regular_polygon(W) if W.shape[0] == 2 else 0
    return Geometry(
        represented=tuple(int(i) for i in shown),
        antipodal=tuple(antipodal_pairs(W)),
        polygon=polygon,
        dimensions_per_feature=float(dimensions_per_feature(W)),
    )
