"""Influence, pruning and the graph scores of Ameisen et al. 2025 (circuit-tracer's definitions).

With ``A`` the adjacency matrix (rows: targets, columns: sources), ``N = |A|`` row-normalised to
sum 1, and ``w`` the logit probabilities on the logit rows, a node's influence on the output is
``(w (I - N)^-1 - w)[node] = (w N + w N^2 + ...)[node]`` (the sum ends: the graph is acyclic).

Pruning (``node_threshold`` 0.8, ``edge_threshold`` 0.98 as in circuit-tracer): keep the nodes
whose influence is above the value at which the sorted influences reach that fraction of the
total (tokens and logits always stay); recompute the influence in the graph of the kept nodes,
score each edge as ``N[t, s] * (influence[t] + w[t])`` and keep the edges likewise; then drop,
until nothing changes, feature and error nodes with no kept outgoing edge and feature nodes with
no kept incoming edge.

Only feature and logit nodes have inputs, so the matrix is kept as its non-zero rows
(``rows [R n]`` with ``row_nodes [R]`` naming the node of each row): a 1,024-token prompt has
31,000 error nodes, and the square matrix would take gigabytes.

Scores: the replacement score is the share of the tokens' influence in the influence of tokens
and errors; the completeness score is the influence-weighted mean over nodes of the share of
their normalised input that does not come from error nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mechscope.errors import MechscopeError

__all__ = [
    "Pruned",
    "edge_influence",
    "find_threshold",
    "influence",
    "node_influence",
    "normalize_rows",
    "prune",
    "scores",
]


def normalize_rows(matrix: Tensor) -> Tensor:
    """``|A|`` with each row divided by its sum (rows summing to less than 1e-10: by 1e-10)."""
    a = matrix.abs().double()
    return a / a.sum(1, keepdim=True).clamp_min(1e-10)


def influence(
    normalized: Tensor, row_nodes: Tensor, weights: Tensor, max_iter: int = 10_000
) -> Tensor:
    """``w N + w N^2 + ...`` over all nodes ``[n]`` for the rows ``normalized [R n]`` of an acyclic
    ``N`` (``weights [R]``: the weight of each row's node): ``w ((I - N)^-1 - I)``."""
    current = weights.double() @ normalized
    total = current.clone()
    for _ in range(max_iter):
        current = current[row_nodes] @ normalized
        if not bool(current.any()):
            return total
        total += current
    raise MechscopeError("influence did not converge: the adjacency matrix has a cycle")


def node_influence(rows: Tensor, row_nodes: Tensor, weights: Tensor) -> Tensor:
    return influence(normalize_rows(rows), row_nodes, weights)


def edge_influence(rows: Tensor, row_nodes: Tensor, weights: Tensor, n: int) -> Tensor:
    """Edge scores ``[R n]``: ``N[t, s] * (influence[t] + w[t])``."""
    normalized = normalize_rows(rows)
    node = influence(normalized, row_nodes, weights)
    full_w = torch.zeros(n, dtype=torch.float64)
    full_w[row_nodes] = weights.double()
    return normalized * (node + full_w)[row_nodes][:, None]


def find_threshold(scores: Tensor, fraction: float) -> Tensor:
    """The score at which the descending cumulative sum reaches ``fraction`` of the total."""
    ordered = scores.flatten().sort(descending=True).values
    total = ordered.sum()
    if not bool(total > 0):
        return ordered.new_tensor(float("inf"))
    cumulative = ordered.cumsum(0) / total
    i = int(torch.searchsorted(cumulative, cumulative.new_tensor(fraction)))
    return ordered[min(i, ordered.shape[0] - 1)]


@dataclass
class Pruned:
    """Masks of the kept nodes ``[n]`` and edges ``[R n]`` (per row), and every node's influence."""

    node_mask: Tensor
    edge_mask: Tensor
    influence: Tensor  # [n] node influence in the whole graph
    cumulative: Tensor  # [n] cumulative share of influence at each node's rank (circuit-tracer)


def _weights(row_nodes: Tensor, logit_p: Tensor) -> Tensor:
    w = torch.zeros(row_nodes.shape[0], dtype=torch.float64)
    w[row_nodes.shape[0] - logit_p.shape[0] :] = logit_p.double()  # the logit rows come last
    return w


def prune(
    rows: Tensor,
    row_nodes: Tensor,
    logit_p: Tensor,
    n_features: int,
    n_tokens: int,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
) -> Pruned:
    """Prune a graph laid out as [features, errors, tokens, logits] (see the module doc)."""
    for name, t in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not 0.0 <= t <= 1.0:
            raise MechscopeError(f"{name} must lie in [0, 1], got {t}")
    n = rows.shape[1]
    n_logits = logit_p.shape[0]
    weights = _weights(row_nodes, logit_p)
    node_inf = node_influence(rows, row_nodes, weights)
    node_mask = node_inf >= find_threshold(node_inf, node_threshold)
    node_mask[n - n_logits - n_tokens :] = True
    kept = rows.clone()
    kept[~node_mask[row_nodes]] = 0
    kept[:, ~node_mask] = 0
    edge_scores = edge_influence(kept, row_nodes, weights, n)
    edge_mask = edge_scores >= find_threshold(edge_scores, edge_threshold)
    inner = n - n_logits - n_tokens  # features and errors
    feature_rows = row_nodes < n_features
    while True:
        old = node_mask.clone()
        edge_mask[~node_mask[row_nodes]] = False
        edge_mask[:, ~node_mask] = False
        node_mask[:inner] &= edge_mask[:, :inner].any(0)
        has_input = torch.zeros(n, dtype=torch.bool)
        has_input[row_nodes[feature_rows]] = edge_mask[feature_rows].any(1)
        node_mask[:n_features] &= has_input[:n_features]
        if bool((old == node_mask).all()):
            break
    ordered, order = node_inf.sort(descending=True)
    cumulative = torch.zeros_like(node_inf)
    cumulative[order] = ordered.cumsum(0) / ordered.sum().clamp_min(1e-30)
    return Pruned(node_mask, edge_mask, node_inf, cumulative)


def scores(
    rows: Tensor, row_nodes: Tensor, logit_p: Tensor, n_features: int, n_errors: int, n_tokens: int
) -> tuple[float, float]:
    """(replacement score, completeness score) of a graph laid out as in :func:`prune`."""
    n = rows.shape[1]
    weights = _weights(row_nodes, logit_p)
    normalized = normalize_rows(rows)
    node = influence(normalized, row_nodes, weights)
    err = slice(n_features, n_features + n_errors)
    tok = slice(n_features + n_errors, n_features + n_errors + n_tokens)
    token_inf, error_inf = float(node[tok].sum()), float(node[err].sum())
    replacement = token_inf / max(token_inf + error_inf, 1e-30)
    non_error = torch.ones(
        n, dtype=torch.float64
    )  # nodes with no inputs count 1, as circuit-tracer
    non_error[row_nodes] = 1 - normalized[:, err].sum(1)
    full_w = torch.zeros(n, dtype=torch.float64)
    full_w[row_nodes] = weights
    output = node + full_w
    completeness = float((non_error * output).sum() / output.sum())
    return replacement, completeness
