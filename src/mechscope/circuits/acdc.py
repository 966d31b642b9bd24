"""ACDC (Conmy et al. 2023, "Towards Automated Circuit Discovery"): the slow, exact reference.

Every decision is an intervention, not an approximation, so it costs one forward pass per edge:

1. Start from the full graph; ``distance`` = KL(clean || patched) of the next-token distribution
   at each prompt's last position (batch mean), or ``clean - metric`` for a task metric.
2. Visit receivers from the logits backwards (ports in reverse forward order), and for each, its
   incoming edges from the latest writer back to the input. A receiver whose nodes no longer write
   to anything in the circuit is skipped and its incoming edges dropped: nothing reads it.
3. Tentatively patch the edge to its corrupted value (the faithfulness engine, with the edge
   outside the circuit); keep it removed if the distance grows by less than ``threshold``.

The returned circuit's scores are the distance increase measured when each edge was tried.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mechscope.circuits.circuit import Circuit
from mechscope.circuits.faithfulness import Evaluator
from mechscope.circuits.graph import Graph
from mechscope.models.hooked import HookedModel
from mechscope.tasks.base import TaskBatch
from mechscope.tasks.metrics import Metric, kl_to_clean, logit_diff

Tensor = torch.Tensor


def _distance(
    ev: Evaluator, metric: Metric | None, clean_logits: Tensor
) -> Callable[[Tensor], float]:
    def distance(mask: Tensor) -> float:
        logits = ev.logits(mask)
        if metric is None:
            return float(kl_to_clean(logits, clean_logits, ev.batch).mean())
        return ev.clean_value - float(metric(logits, ev.batch).mean())

    return distance


def _reads_anything(graph: Graph, mask: Tensor, port: int) -> bool:
    """Whether some node fed by ``port`` still writes to an edge of the circuit."""
    name = graph.ports[port]
    if name == "logits":
        return True
    return any(bool(mask[graph.nodes.index(n)].any()) for n in graph.port_nodes(name))


def acdc(
    model: HookedModel,
    batch: TaskBatch,
    threshold: float,
    metric: Metric | None = None,
    graph: Graph | None = None,
) -> Circuit:
    """Prune the graph edge by edge (see the module docstring); ``metric=None`` uses KL."""
    ev = Evaluator(model, batch, metric or logit_diff, graph)
    g = ev.graph
    with torch.no_grad():
        clean_logits = model(batch.clean_tokens, batch.clean_mask)
    distance = _distance(ev, metric, clean_logits)
    mask = g.edge_mask.clone()
    scores = torch.zeros(mask.shape)
    current = distance(mask)
    for port in reversed(range(len(g.ports))):
        if not _reads_anything(g, mask, port):
            mask[:, port] = False
            continue
        for src in reversed(range(int(g.n_up[port]))):
            trial = mask.clone()
            trial[src, port] = False
            d = distance(trial)
            scores[src, port] = d - current
            if d - current < threshold:
                mask, current = trial, d
    meta = {"threshold": threshold, "distance": current, "task": batch.name}
    return Circuit(g, scores, mask, method="acdc", meta=meta)
