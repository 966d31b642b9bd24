"""Node attribution patching as a circuit method (MIB's node-level EAP, ``--level node``).

Attribution patching of nodes (Nanda 2023; Syed et al. 2023) scores each writer of the
:class:`Graph` (the input embeddings, every attention head, every MLP) by the first-order change
of the batch-mean metric when that writer alone takes its corrupted output:
``sum over prompts and positions of (out(corrupt) - out(clean)) . dmetric/d out``, the gradient
taken on the clean run, divided by the number of prompts. The scores come from one clean
forward and backward, through :func:`mechscope.attribution.attribution_patch_sweeps` (the
``resid_pre`` sweep at layer 0 for the input, ``attn_head`` for the heads, ``mlp_out`` summed
over positions for the MLPs; ``direction="noise"``).

A writer's output is read by every port after it, so its node score equals the sum of its
outgoing edges' EAP scores (tested: two code paths, one identity).

Circuits, as MIB's ``Graph.apply_topn(n, level="node")`` followed by ``prune``: keep the top
``n`` nodes (by |score|, or by signed score of the loss, ``-score``, as MIB), put every edge leaving a kept node into the circuit,
then prune (:meth:`Circuit.pruned`: a writer with no edge into it, or none out of it, drops
out). MIB's curve for a node method runs over fractions of the *nodes* (``n_scored_items`` is the
node count), so :func:`mechscope.circuits.mib.mib_score` does the same and records each
circuit's edge count beside it.

The returned :class:`Circuit` carries the node scores in ``meta["node_scores"]`` and, so that the
edge-level selections of ``mechscope circuit`` still apply, gives every edge its writer's score.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from mechscope.attribution.patching import attribution_patch_sweeps
from mechscope.circuits.circuit import Circuit
from mechscope.circuits.graph import Graph
from mechscope.circuits.nodes import graph_for
from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.tasks.base import TaskBatch
from mechscope.tasks.metrics import Metric, logit_diff

Tensor = torch.Tensor
NODE_METHOD = "node-ap"


def node_scores(model: HookedModel, batch: TaskBatch, metric: Metric, graph: Graph) -> Tensor:
    """[node] attribution-patching score of every writer of ``graph``, in graph order."""
    res = attribution_patch_sweeps(
        model, batch, metric, ["resid_pre", "attn_head", "mlp_out"], direction="noise"
    )
    clean = res["attn_head"].clean

    def change(sweep: str) -> Tensor:  # estimated metric change: values are base mean + change
        return res[sweep].values.double() - clean

    heads = change("attn_head")  # [layer head]
    mlps = change("mlp_out").sum(-1)  # [layer pos] -> [layer]
    parts = [change("resid_pre")[0].sum(-1, keepdim=True)]  # the input: layer 0, all positions
    for layer in range(graph.n_layers):
        parts += [heads[layer], mlps[layer : layer + 1]]
    return torch.cat(parts).float()


def attribute_nodes(
    model: HookedModel,
    batch: TaskBatch,
    metric: Metric = logit_diff,
    graph: Graph | None = None,
) -> Circuit:
    """Node attribution patching over the graph; every edge carries its writer's score."""
    batch.require_aligned()
    graph = graph_for(model, graph)
    start = time.perf_counter()
    scores = node_scores(model, batch, metric, graph)
    edges = scores[:, None].expand(-1, len(graph.ports)).masked_fill(~graph.edge_mask, 0.0)
    meta = {
        "model": model.provenance.get("name", model.hf.config.model_type),
        "task": batch.name,
        "metric": getattr(metric, "__name__", str(metric)),
        "n_prompts": len(batch),
        "level": "node",
        "node_scores": scores.tolist(),
        "seconds": time.perf_counter() - start,
    }
    return Circuit(graph, edges.contiguous(), graph.edge_mask, method=NODE_METHOD, meta=meta)


def top_nodes(scored: Circuit, n: int, absolute: bool = True) -> Circuit:
    """MIB's node-level top-n: every edge out of the ``n`` best nodes, pruned."""
    if "node_scores" not in scored.meta:
        raise MechscopeError("these are edge scores; top_nodes needs a node method's scores")
    values = torch.tensor(scored.meta["node_scores"])
    if not 0 <= n <= len(values):
        raise MechscopeError(f"n must lie in [0, {len(values)}] nodes, got {n}")
    values = values.abs() if absolute else -values  # MIB's signed ranking: the loss's scores
    keep = torch.zeros(len(values), dtype=torch.bool)
    keep[values.topk(n).indices] = True
    mask = scored.graph.edge_mask & keep[:, None]
    how = f"top_nodes({n}, {'|score|' if absolute else 'signed'})"
    return replace(scored, mask=mask, meta={**scored.meta, "selection": how}).pruned()
