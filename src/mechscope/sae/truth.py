"""Recovery of a known dictionary: how well an SAE's decoder matches planted ground-truth features.

On synthetic data built from a known dictionary ``truth [n_true d]`` the field scores an SAE by
comparing its decoder rows ``W_dec [d_sae d]`` with the true directions. Steps:

1. both sets of rows are normalised to unit length and ``C = |truth @ W_dec.T|`` (absolute cosine,
   ``[n_true d_sae]``) is formed;
2. **MCC** (mean correlation coefficient): the one-to-one matching of true features to latents
   maximising the summed ``C`` (the Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``),
   averaged over the true features (a true feature left without a partner, when
   ``d_sae < n_true``, counts 0);
3. **feature detection**: a matched pair with ``C >= threshold`` (0.9) is a detected feature;
   ``recall`` = detected / ``n_true``, ``precision`` = detected / ``d_sae`` (every latent that is not
   a detected feature, dead or duplicate or mixed, is a false positive), ``f1`` their harmonic mean;
4. **recovered**: the fraction of true features whose best latent (not one-to-one) has
   ``C >= threshold``, the figure the recovery tests use; ``mean_max_cos`` the mean of those maxima.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mechscope.errors import MechscopeError

__all__ = ["TruthScores", "load_truth", "score_dictionary"]


@dataclass(frozen=True)
class TruthScores:
    """Scores of a learned dictionary against the true one (see the module docstring)."""

    n_true: int
    n_latents: int
    threshold: float
    mcc: float
    precision: float
    recall: float
    f1: float
    recovered: float
    mean_max_cos: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_dictionary(truth: Tensor, learned: Tensor, *, threshold: float = 0.9) -> TruthScores:
    """Score learned rows ``[n_latents d]`` (e.g. ``sae.W_dec``) against ``truth [n_true d]``."""
    from scipy.optimize import linear_sum_assignment

    if truth.dim() != 2 or learned.dim() != 2 or truth.shape[1] != learned.shape[1]:
        raise MechscopeError(
            f"true dictionary has shape {list(truth.shape)}, the SAE's decoder "
            f"{list(learned.shape)}: the true dictionary must be [n_features, {learned.shape[-1]}]"
        )
    cos = (_unit(truth) @ _unit(learned).T).abs()  # [n_true n_latents]
    rows, cols = linear_sum_assignment(cos.numpy(), maximize=True)
    matched = cos[torch.as_tensor(rows), torch.as_tensor(cols)]
    n_true, n_latents = cos.shape
    detected = int((matched >= threshold).sum())
    precision, recall = detected / n_latents, detected / n_true
    best = cos.max(dim=1).values
    return TruthScores(
        n_true=n_true,
        n_latents=n_latents,
        threshold=threshold,
        mcc=float(matched.sum()) / n_true,
        precision=precision,
        recall=recall,
        f1=2 * precision * recall / (precision + recall) if detected else 0.0,
        recovered=float((best >= threshold).double().mean()),
        mean_max_cos=float(best.mean()),
    )


def load_truth(path: str | Path, width: int) -> Tensor:
    """Read a ``[n_features width]`` float array from a ``.npy`` file (no pickles) as float64."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise MechscopeError(
            f"cannot read {path} as a .npy array of numbers ({exc}): save it with numpy.save"
        ) from exc
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
        raise MechscopeError(f"{path} does not hold a numeric array: save a float array")
    if array.ndim != 2 or array.shape[1] != width:
        hint = " (transpose it)" if array.ndim == 2 and array.shape[0] == width else ""
        raise MechscopeError(
            f"true dictionary in {path} has shape {list(array.shape)}, expected "
            f"[n_features, {width}] (one row per feature){hint}"
        )
    truth = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))
    if not torch.isfinite(truth).all() or bool((truth.norm(dim=1) == 0).any()):
        raise MechscopeError(f"true dictionary in {path} has NaN, infinite or zero rows: fix it")
    return truth


def _unit(rows: Tensor) -> Tensor:
    rows = rows.detach().to(torch.float64)
    return rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
