"""Routing statistics of one MoE layer, as pure functions of its router logits and choices.

- load: tokens routed to each expert (each token counts once for each of its ``top_k`` experts);
- balance: the coefficient of variation of the load, its max over mean, and the Switch
  Transformer's auxiliary loss ``E * sum_e f_e P_e`` (1 when perfectly balanced; Fedus et al.
  2021), with ``f_e`` the fraction of routings to ``e`` and ``P_e`` its mean router probability;
- entropy: the mean entropy (nats) of the router's softmax over experts, and that mean over
  ``log E`` (1: uniform router, 0: one expert takes all the probability);
- co-activation: ``C[i, j]`` tokens routed to both ``i`` and ``j`` (diagonal: the load);
- specialisation: for each label (a token class or a corpus domain) and expert, the share of that
  label's tokens routed to the expert over the share a uniform router gives, ``top_k / E``
  (1: no preference; ``E / top_k``: every token of the label goes there).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["balance", "coactivation", "entropy", "load", "specialisation"]


def load(indices: Tensor, n_experts: int) -> Tensor:
    """Tokens routed to each expert [expert] from ``indices`` [token top_k]."""
    return torch.bincount(indices.reshape(-1), minlength=n_experts)


def balance(indices: Tensor, logits: Tensor) -> dict[str, float]:
    """Coefficient of variation, max/mean of the load, and the Switch auxiliary loss."""
    n_experts = logits.shape[-1]
    counts = load(indices, n_experts).double()
    f = counts / counts.sum()
    p = torch.softmax(logits.double(), dim=-1).mean(0)
    return {
        "cv": float(counts.std(unbiased=False) / counts.mean()),
        "max_over_mean": float(counts.max() / counts.mean()),
        "switch_aux_loss": float(n_experts * (f * p).sum()),
    }


def entropy(logits: Tensor) -> dict[str, float]:
    """Mean router entropy in nats over tokens, and that over ``log E``."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    h = float(-(logp.exp() * logp).sum(-1).mean())
    return {"entropy": h, "normalised_entropy": h / math.log(logits.shape[-1])}


def coactivation(indices: Tensor, n_experts: int) -> Tensor:
    """``C[i, j]``: tokens routed to both ``i`` and ``j`` [expert expert] (``C[i, i]`` = load)."""
    chosen = torch.zeros(indices.shape[0], n_experts, dtype=torch.float64)
    chosen.scatter_(1, indices, 1.0)
    return (chosen.T @ chosen).round().long()


def specialisation(indices: Tensor, labels: Tensor, n_labels: int, n_experts: int) -> Tensor:
    """Ratio over uniform [label expert]: share of a label's tokens routed to each expert over
    ``top_k / n_experts``; NaN for a label with no tokens."""
    top_k = indices.shape[-1]
    counts = torch.zeros(n_labels, n_experts, dtype=torch.float64)
    rows = labels[:, None].expand_as(indices).reshape(-1)
    counts.index_put_((rows, indices.reshape(-1)), torch.ones(rows.numel(), dtype=torch.float64),
                      accumulate=True)  # fmt: skip
    per_label = torch.bincount(labels, minlength=n_labels).double()[:, None]
    return counts / per_label / (top_k / n_experts)
