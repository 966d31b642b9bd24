"""The phase change of superposition (Elhage et al. 2022, section "Superposition as a Phase Change").

Two features, one dimension: feature 1 has importance 1, the "extra" feature 2 importance ``r``,
both the same density ``p = 1 - S``. The trained model falls in one of three phases:

* ``not represented``: feature 2 is dropped (``||W_2|| < 0.5``), feature 1 has the dimension;
* ``dedicated``: feature 2 has the dimension to itself (feature 1 dropped);
* ``superposition``: both share it, antipodally (``W_2 ~ -W_1``).

Steps:

1. one batched training run over the grid ``relative importance x density`` (``replicas``
   initialisations per cell, lowest evaluation loss kept), see :mod:`.superposition`;
2. each cell is classified from ``W`` alone (:func:`classify_extra`);
3. the same grid is solved without sampling noise (:func:`expected_phase_diagram`): the exact
   expected loss -- four cases (neither, one, the other, both features present) with
   Gauss-Legendre quadrature over the uniform values -- is minimised by gradient descent from the
   three configurations (feature 1 alone, feature 2 alone, antipodal) and the lowest is
   classified the same way. Agreement between the two is the check that training found the optimum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mechscope.errors import MechscopeError
from mechscope.toys.superposition import (
    REPRESENTED,
    best_replica,
    feature_norms,
    superposition,
    train_instances,
)

PHASES = ("not represented", "dedicated", "superposition")
NOT_REPRESENTED, DEDICATED, SUPERPOSITION = range(3)
DEFAULT_IMPORTANCE = tuple(float(x) for x in np.geomspace(0.1, 10.0, 8))
DEFAULT_DENSITY = tuple(float(x) for x in np.geomspace(1.0, 0.01, 8))

__all__ = [
    "DEDICATED",
    "NOT_REPRESENTED",
    "PHASES",
    "SUPERPOSITION",
    "PhaseDiagram",
    "classify_extra",
    "expected_loss",
    "expected_phase_diagram",
    "phase_diagram",
]


@dataclass(frozen=True, eq=False)
class PhaseDiagram:
    """Phases over ``relative_importance [r]`` x ``density [d]``.

    ``phase [r d]`` holds codes into :data:`PHASES`; ``W [r d m n]`` and ``losses [r d]`` the
    trained (or optimised) models; ``expected [r d]``, when computed, the noise-free phases.
    """

    relative_importance: np.ndarray
    density: np.ndarray
    phase: np.ndarray
    W: np.ndarray
    losses: np.ndarray
    expected: np.ndarray | None = None

    def agreement(self) -> float:
        """Fraction of cells where the trained phase equals the noise-free one."""
        if self.expected is None:
            raise MechscopeError("no expected phases; call phase_diagram(..., expected=True)")
        return float(np.mean(self.phase == self.expected))

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "phases": list(PHASES),
            "relative_importance": self.relative_importance.tolist(),
            "density": self.density.tolist(),
            "phase": self.phase.tolist(),
            "losses": self.losses.tolist(),
        }
        if self.expected is not None:
            out["expected"] = self.expected.tolist()
            out["agreement"] = self.agreement()
        return out


def classify_extra(W: np.ndarray, feature: int = -1) -> np.ndarray:
    """Phase code of one feature (the last by default) for every instance ``W [... m n]``.

    Not represented if ``||W_f|| < 0.5``; superposition if its interference
    ``sum_{j != f} (W^_f . W_j)^2`` reaches ``0.5**2`` (another feature at least half-overlaps it);
    otherwise dedicated.
    """
    W = np.asarray(W, dtype=np.float64)
    shown = feature_norms(W)[..., feature] >= REPRESENTED
    shared = superposition(W)[..., feature] >= REPRESENTED**2
    return np.where(~shown, NOT_REPRESENTED, np.where(shared, SUPERPOSITION, DEDICATED))


def _grid(
    relative_importance: Sequence[float], density: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    imp = np.asarray(relative_importance, dtype=np.float64).reshape(-1)
    dens = np.asarray(density, dtype=np.float64).reshape(-1)
    if imp.size == 0 or dens.size == 0 or np.any(imp <= 0):
        raise MechscopeError("relative importances must be positive and the grids non-empty")
    if np.any((dens <= 0) | (dens > 1)):
        raise MechscopeError(f"densities must be in (0, 1], got {dens.tolist()}")
    return imp, dens


def phase_diagram(
    relative_importance: Sequence[float] = DEFAULT_IMPORTANCE,
    density: Sequence[float] = DEFAULT_DENSITY,
    *,
    steps: int = 1000,
    lr: float = 1e-2,
    seed: int = 0,
    replicas: int = 8,
    batch_size: int = 128,
    expected: bool = True,
    quiet: bool = True,
) -> PhaseDiagram:
    """Train n=2, m=1 toy models over the grid in one batched run and classify feature 2.

    Many replicas of small batches beat few of large ones here: a start with ``W_1`` and ``W_2``
    of one sign often ends with one feature alone where the antipodal pair is far better; the
    lowest-loss replica of eight avoided that in every cell of seeds 0-3 on the default grid.
    """
    imp, dens = _grid(relative_importance, density)
    n_cells = imp.size * dens.size
    # cells in [importance density] order; feature 1 has importance 1, feature 2 the relative one
    importance = np.stack([np.ones(n_cells), np.repeat(imp, dens.size)], -1)
    probs = np.tile(dens, imp.size)[:, None].repeat(2, 1)
    W, _, losses, _ = train_instances(
        1,
        np.repeat(probs, replicas, 0),
        np.repeat(importance, replicas, 0),
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        quiet=quiet,
    )
    keep = best_replica(losses, replicas)
    W = W[keep].reshape(imp.size, dens.size, 1, 2)
    theory = expected_phase_diagram(imp, dens).phase if expected else None
    return PhaseDiagram(
        imp, dens, classify_extra(W), W, losses[keep].reshape(imp.size, dens.size), theory
    )


def expected_loss(
    W: torch.Tensor,
    b: torch.Tensor,
    importance: torch.Tensor,
    density: torch.Tensor,
    nodes: int = 24,
) -> torch.Tensor:
    """Exact expected loss ``[instance]`` of n=2 toy models ``W [instance m 2]``, ``b [instance 2]``.

    Sums the four presence cases; the uniform values are integrated by ``nodes``-point
    Gauss-Legendre quadrature (not exact across the ReLU kink: 0.14% relative error for the pair
    ``W = [1, -1]``, ``b = 0`` at 24 nodes, 0.035% at 48).
    """
    t, w = np.polynomial.legendre.leggauss(nodes)
    u = torch.as_tensor((t + 1) / 2, dtype=W.dtype)
    wt = torch.as_tensor(w / 2, dtype=W.dtype)
    zero = torch.zeros_like(u)

    def mean_loss(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:  # x [point 2]
        hidden = torch.einsum("pn,imn->ipm", x, W)
        out = torch.relu(torch.einsum("ipm,imn->ipn", hidden, W) + b[:, None, :])
        return ((importance[:, None, :] * (x - out) ** 2).sum(-1) * weights).sum(-1)

    uu, vv = torch.meshgrid(u, u, indexing="ij")
    both = torch.stack([uu.reshape(-1), vv.reshape(-1)], -1)
    p = density
    return (
        (1 - p) ** 2 * mean_loss(torch.zeros(1, 2, dtype=W.dtype), torch.ones(1, dtype=W.dtype))
        + p * (1 - p) * mean_loss(torch.stack([u, zero], -1), wt)
        + p * (1 - p) * mean_loss(torch.stack([zero, u], -1), wt)
        + p**2 * mean_loss(both, (wt[:, None] * wt[None, :]).reshape(-1))
    )


def expected_phase_diagram(
    relative_importance: Sequence[float] = DEFAULT_IMPORTANCE,
    density: Sequence[float] = DEFAULT_DENSITY,
    *,
    steps: int = 400,
    lr: float = 5e-2,
) -> PhaseDiagram:
    """The noise-free phase diagram: the best of the three configurations in each cell.

    Feature 1 alone (``W = [1, 0]``) loses ``r Var(x_2) = r (p/3 - p^2/4)`` (the bias outputs the
    mean ``p/2``), feature 2 alone ``Var(x_1)``; the antipodal configuration starts at
    ``W = [1, -1]``, ``b = 0`` and its exact expected loss is minimised by Adam. The cell's phase
    is that of the lowest of the three.
    """
    imp, dens = _grid(relative_importance, density)
    r = torch.as_tensor(imp).repeat_interleave(dens.size)  # cells in [importance density] order
    p = torch.as_tensor(dens).repeat(imp.size)
    importance = torch.stack([torch.ones_like(r), r], -1)
    W = torch.tensor([[[1.0, -1.0]]], dtype=torch.float64).repeat(r.numel(), 1, 1).requires_grad_()
    b = torch.zeros(r.numel(), 2, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([W, b], lr=lr)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * (1 - step / steps)  # linear decay: settle on the minimum
        loss = expected_loss(W, b, importance, p)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
    variance = (p / 3 - p**2 / 4).numpy()
    with torch.no_grad():
        losses = np.stack(
            [r.numpy() * variance, variance, expected_loss(W, b, importance, p).numpy()]
        )
    configs = np.stack(
        [np.tile([[1.0, 0.0]], (r.numel(), 1, 1)), np.tile([[0.0, 1.0]], (r.numel(), 1, 1))]
        + [W.detach().numpy()]
    )
    best = losses.argmin(0)
    W_best = configs[best, np.arange(r.numel())].reshape(imp.size, dens.size, 1, 2)
    phase = classify_extra(W_best)
    return PhaseDiagram(imp, dens, phase, W_best, losses.min(0).reshape(imp.size, dens.size), phase)
