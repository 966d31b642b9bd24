"""The circuit pipeline that the CLI and the report share: attribute, select, measure, curve.

``discover(model, batch, metric)``:

1. build the graph (grouped key/value ports, or ``ungroup_kv=True`` for the EAP-IG library's
   graph) and score every edge (:func:`~mechscope.circuits.eap.attribute`; ``method="acdc"``
   prunes edge by edge instead, :func:`~mechscope.circuits.acdc.acdc`; ``method="node-ap"``
   scores nodes, :mod:`~mechscope.circuits.node_ap`, and gives each edge its writer's score);
2. keep a circuit: ``threshold`` (|score| >= t), else ``edges`` (top n, or grown greedily with
   ``greedy``), else the top ``fraction`` of the graph's edges;
3. measure its faithfulness (:func:`~mechscope.circuits.faithfulness.faithfulness`);
4. the faithfulness curve of the top-n circuits at ``curve_edges`` edges, by default
   :func:`curve_edges` (fractions of the model's *grouped* graph, so that the grouped and
   ungrouped graphs of one model are measured at the same edge counts).

Every measured run keeps its per-prompt metric, so the circuit and each curve point get a 95%
bootstrap interval over prompts (:meth:`Evaluator.faithfulness_ci`; the scores and circuits stay
fixed, the evaluation prompts are resampled) without another forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mechscope.circuits.acdc import acdc
from mechscope.circuits.circuit import Circuit
from mechscope.circuits.eap import attribute
from mechscope.circuits.faithfulness import Evaluator, curve_sizes
from mechscope.circuits.graph import Graph
from mechscope.circuits.node_ap import NODE_METHOD, attribute_nodes
from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.stats import defined_interval
from mechscope.tasks.base import TaskBatch
from mechscope.tasks.metrics import Metric, logit_diff, normalized

CURVE_FRACTIONS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1)
"""Fractions of the model's grouped graph at which the faithfulness curve is measured."""


@dataclass(frozen=True)
class CircuitRun:
    """What :func:`discover` found: the scored graph, the circuit kept and the curve.

    ``curve`` is ``[(n_edges, faithfulness)]`` of the top-n circuits, ascending by ``n_edges``
    (empty for ACDC, whose scores are not a ranking). ``circuit_ci`` and ``curve_ci`` are 95%
    bootstrap intervals over prompts of the circuit's and each curve point's faithfulness (None
    with one prompt, or where most resamples leave the ratio undefined).
    """

    scored: Circuit
    circuit: Circuit
    curve: list[tuple[int, float]]
    circuit_ci: tuple[float, float] | None = None
    curve_ci: list[tuple[float, float] | None] | None = None

    def curve_points(self) -> list[dict[str, Any]]:
        """``{"n_edges", "fraction", "faithfulness", "ci"}`` per curve point (fraction of this
        graph's edges; ``ci`` the point's interval, or None)."""
        total = self.scored.total_edges
        cis = self.curve_ci or [None] * len(self.curve)
        return [
            {"n_edges": n, "fraction": n / total, "faithfulness": f,
             "ci": None if ci is None else list(ci)}
            for (n, f), ci in zip(self.curve, cis, strict=True)
        ]  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """The circuit's JSON (:meth:`Circuit.to_dict`) plus ``faithfulness_ci`` and ``curve``
        (:meth:`curve_points`)."""
        ci = None if self.circuit_ci is None else list(self.circuit_ci)
        return {**self.circuit.to_dict(), "faithfulness_ci": ci, "curve": self.curve_points()}


def curve_edges(model: HookedModel, fractions: Sequence[float] = CURVE_FRACTIONS) -> list[int]:
    """Edge counts of the curve: ``fractions`` of the model's grouped graph, distinct, ascending."""
    return curve_sizes(Graph.from_dims(model.dims).n_edges, fractions)


def discover(
    model: HookedModel,
    batch: TaskBatch,
    metric: Metric = logit_diff,
    *,
    method: str = "eap-ig",
    steps: int = 5,
    ungroup_kv: bool = False,
    edges: int | None = None,
    threshold: float | None = None,
    greedy: bool = False,
    fraction: float = 0.01,
    curve: Sequence[int] | None = None,
) -> CircuitRun:
    """Score the graph, keep a circuit, measure it and its curve (see the module docstring).

    ``curve``: edge counts of the faithfulness curve (None: :func:`curve_edges`; ``()``: none);
    counts above the graph's edge count are dropped.
    """
    if edges is not None and threshold is not None:
        raise MechscopeError("give either edges (top n) or a threshold, not both")
    graph = Graph.from_dims(model.dims, ungroup_kv=ungroup_kv)
    if method == "acdc":
        scored = chosen = acdc(
            model, batch, 0.01 if threshold is None else threshold, metric, graph
        )
        sizes: list[int] = []
    else:
        if method == NODE_METHOD:  # nodes ranked; every edge carries its writer's score
            scored = attribute_nodes(model, batch, metric, graph)
        else:
            scored = attribute(model, batch, metric, method=method, steps=steps, graph=graph)
        chosen = _select(scored, edges, threshold, greedy, fraction)
        wanted = curve_edges(model) if curve is None else curve
        sizes = sorted({int(n) for n in wanted if 0 < int(n) <= scored.total_edges})
    ev = Evaluator(model, batch, metric, graph)
    runs = torch.stack(
        [ev.values(m) for m in (chosen.mask, *(scored.top_n(n).mask for n in sizes))], 1
    )
    faith = normalized(runs.mean(0), ev.clean_value, ev.corrupt_value).tolist()
    chosen = chosen.with_faithfulness(float(faith[0]))
    points = [(n, float(f)) for n, f in zip(sizes, faith[1:], strict=True)]
    if len(batch) < 2:
        return CircuitRun(scored, chosen, points)
    lo, hi = ev.faithfulness_ci(runs)
    bounds = [defined_interval(a, b) for a, b in zip(lo, hi, strict=True)]
    return CircuitRun(scored, chosen, points, bounds[0], bounds[1:])


def _select(
    scored: Circuit, edges: int | None, threshold: float | None, greedy: bool, fraction: float
) -> Circuit:
    if threshold is not None:
        return scored.threshold(threshold)
    n = edges if edges is not None else max(1, round(fraction * scored.total_edges))
    if not 0 <= n <= scored.total_edges:
        raise MechscopeError(f"edges must lie in [0, {scored.total_edges}], got {n}")
    return scored.greedy(n) if greedy else scored.top_n(n)
