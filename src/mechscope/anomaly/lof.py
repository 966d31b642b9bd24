"""Local outlier factor (Breunig et al. 2000) on PCA-whitened activations, in torch.

Fitting keeps a uniform reservoir sample of trusted token activations while streaming (each row
gets a seeded random key; the rows with the largest keys are kept), then projects it onto the top
principal directions of the streamed covariance, whitened. The stored reference set holds the
projected sample, each point's k-distance and local reachability density (lrd). A new point's LOF
is the mean lrd of its k nearest reference points divided by its own lrd, where
``lrd(x) = 1 / mean_o max(k-dist(o), |x - o|)``; about 1 for inliers, larger for outliers. It
matches scikit-learn's ``LocalOutlierFactor(novelty=True).score_samples`` (with the sign flipped).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mechscope.errors import MechscopeError

__all__ = ["Reservoir", "fit_lof", "lof_scores", "project"]

LRD_EPS = 1e-10  # as in scikit-learn, so duplicate points do not divide by zero


class Reservoir:
    """A uniform random sample of at most ``size`` rows of a stream (priority sampling)."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = size
        self.gen = torch.Generator().manual_seed(seed)
        self.rows: Tensor | None = None
        self.keys: Tensor | None = None

    def update(self, x: Tensor) -> None:
        x = x.detach().float()
        keys = torch.rand(x.shape[0], generator=self.gen)
        if self.rows is not None:
            x, keys = torch.cat([self.rows, x]), torch.cat([self.keys, keys])
        if x.shape[0] > self.size:
            keep = keys.topk(self.size).indices.sort().values
            x, keys = x[keep], keys[keep]
        self.rows, self.keys = x, keys


def _distances(a: Tensor, b: Tensor) -> Tensor:
    return torch.cdist(a.double(), b.double())


def fit_lof(
    sample: Tensor, mean: Tensor, cov: Tensor, dims: int, k: int, block: int = 1024
) -> dict[str, Tensor]:
    """The reference set of a LOF detector from a sample [m d] and the streamed mean and cov."""
    if sample.shape[0] <= k:
        raise MechscopeError(
            f"LOF needs more than k={k} trusted token activations, got {sample.shape[0]}; "
            "pass more trusted text or a smaller k"
        )
    values, vectors = torch.linalg.eigh(cov.double())
    dims = min(dims, cov.shape[0])
    top = values.flip(0)[:dims].clamp(min=1e-12)
    basis = vectors.flip(1)[:, :dims] / top.sqrt()  # [d dims]: whitened principal directions
    t = {"mean": mean.float(), "basis": basis.float()}
    ref = project(t, sample).double()
    kdist = torch.empty(ref.shape[0], dtype=torch.float64)
    neighbours = torch.empty(ref.shape[0], k, dtype=torch.long)
    for start in range(0, ref.shape[0], block):
        d = _distances(ref[start : start + block], ref)
        rows = torch.arange(d.shape[0])
        d[rows, rows + start] = float("inf")  # a point is not its own neighbour
        dist, idx = d.topk(k, largest=False)
        kdist[start : start + block], neighbours[start : start + block] = dist[:, -1], idx
    reach = torch.maximum(kdist[neighbours], _distances_rows(ref, neighbours))
    lrd = 1.0 / (reach.mean(1) + LRD_EPS)
    return {**t, "reference": ref.float(), "kdist": kdist.float(), "lrd": lrd.float()}


def _distances_rows(ref: Tensor, neighbours: Tensor) -> Tensor:
    return (ref[:, None, :] - ref[neighbours]).norm(dim=-1)


def project(t: dict[str, Tensor], x: Tensor) -> Tensor:
    """Rows of ``x`` [n d] in the whitened principal basis [n dims]."""
    return (x.float() - t["mean"]) @ t["basis"]


def lof_scores(t: dict[str, Tensor], x: Tensor, k: int, block: int = 1024) -> Tensor:
    """The local outlier factor [n] of the rows of ``x`` [n d] against the reference set."""
    z = project(t, x).double()
    ref, kdist, lrd = t["reference"].double(), t["kdist"].double(), t["lrd"].double()
    out = []
    for start in range(0, z.shape[0], block):
        dist, idx = _distances(z[start : start + block], ref).topk(k, largest=False)
        reach = torch.maximum(kdist[idx], dist)
        own = 1.0 / (reach.mean(1) + LRD_EPS)
        out.append(lrd[idx].mean(1) / own)
    return torch.cat(out).float() if out else z.new_zeros(0).float()
