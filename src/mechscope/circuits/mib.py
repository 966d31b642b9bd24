"""MIB circuit-localisation scores (Mueller et al. 2025, "MIB: A Mechanistic Interpretability
Benchmark"): CPR and CMD over the whole faithfulness curve, with bootstrap intervals, and the
stability of a circuit under resampling of the prompts.

Following MIB's scoring code (``MIB_circuit_track/evaluation.py:evaluate_area_under_curve``):

1. the clean run's metric (``baseline``) and the empty circuit's (``corrupted``: every edge
   patched) are batch means; faithfulness is ``(circuit - corrupted) / (baseline - corrupted)``;
2. at each fraction ``p`` of :data:`PERCENTAGES` (0.1% .. 100% of the graph's edges, the code's
   list; the paper's text lists 0%..50%) the circuit is the top ``int(p * n_edges)`` edges, ranked
   by signed score (``absolute=False``) or by |score| (``absolute=True``), then pruned
   (:meth:`Circuit.pruned`, the reference's ``prune=True``). MIB attributes the *loss*
   (``loss=True``: minus the metric), so its signed ranking puts first the edges whose patching
   lowers the metric most; mechscope's scores are changes of the metric, so the signed ranking
   sorts ``-score`` (:data:`LOSS_SIGN`);
3. ``area_under`` is the trapezoid rule over ``(p, faithfulness)`` on a linear axis and
   ``area_from_1`` the same over ``|1 - faithfulness|``;
   A node method (``"node-ap"``, :mod:`.node_ap`) ranks nodes instead: the circuit at ``p`` is
   every edge out of the top ``int(p * n_nodes)`` nodes, pruned (MIB's ``level="node"``);
4. CPR is ``area_under`` of the signed ranking and CMD ``area_from_1`` of the absolute ranking
   (``print_results.py`` prefers ``abs-False`` results for CPR and ``abs-True`` for CMD).

Intervals: the circuits stay fixed and the prompts of the evaluation are resampled with
replacement; each resample recomputes baseline, corrupted, every point of both curves, CPR and CMD
from the per-prompt metrics (no extra forwards).

ACDC gives one thresholded circuit, not a ranking. :func:`acdc_ranking` ranks every edge by what
ACDC measured when it tried that edge (the change of the metric with the edge patched, given the
edges still in the circuit at that moment; 0 for an edge never tried because nothing read its
receiver any more), so MIB's curves can be drawn from one ACDC run. It costs one forward per edge
(about 10 CPU-hours for SmolLM2-135M's 70,651 edges on 8 IOI prompts), so it is for small models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from mechscope.circuits.acdc import acdc
from mechscope.circuits.circuit import Circuit
from mechscope.circuits.eap import METHODS, attribute
from mechscope.circuits.faithfulness import Evaluator
from mechscope.circuits.graph import Graph
from mechscope.circuits.node_ap import NODE_METHOD, attribute_nodes, top_nodes
from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.stats import jaccard_summary, resamples
from mechscope.tasks.base import TaskBatch
from mechscope.tasks.metrics import Metric, logit_diff

PERCENTAGES = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
MIB_METHODS = ("eap", "eap-ig", "eap-ig-activations", NODE_METHOD, "acdc", "random")
ACDC_THRESHOLD = 0.01  # ACDC's threshold when MIB scores it (as ``mechscope circuit``'s default)


def areas(
    faithfulness: Sequence[float], percentages: Sequence[float] = PERCENTAGES
) -> tuple[float, float, float]:
    """(area under the curve, area between the curve and 1, mean faithfulness), as MIB."""
    if len(faithfulness) != len(percentages) or len(percentages) < 2:
        raise MechscopeError(
            f"need one faithfulness per fraction ({len(percentages)}), got {len(faithfulness)}"
        )
    under = from_1 = 0.0
    for i in range(len(percentages) - 1):
        width = percentages[i + 1] - percentages[i]
        f1, f2 = faithfulness[i], faithfulness[i + 1]
        from_1 += width * (abs(1.0 - f1) + abs(1.0 - f2)) / 2
        under += width * (f1 + f2) / 2
    return under, from_1, sum(faithfulness) / len(faithfulness)


LOSS_SIGN = -1.0
"""MIB ranks scores of the loss, ``-metric``: the signed ranking sorts ``LOSS_SIGN * score``."""


def ranked(scored: Circuit, n: int, absolute: bool) -> Circuit:
    """The top ``n`` edges by |score| or by MIB's signed score (the loss's: ``-score``, largest
    first)."""
    values = scored.scores.abs() if absolute else LOSS_SIGN * scored.scores
    flat = values.masked_fill(~scored.mask, -float("inf")).flatten()
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[flat.topk(n).indices] = True
    how = f"top_n({n}, {'|score|' if absolute else 'signed'})"
    return replace(scored, mask=mask.view_as(scored.mask), meta={**scored.meta, "selection": how})


@dataclass(frozen=True)
class MIBScore:
    """CPR, CMD and both curves of one method on one task, with bootstrap intervals."""

    method: str
    n_edges: list[int]  # items kept at each fraction: edges, or nodes for a node method
    signed: list[float]  # faithfulness of the signed ranking at each fraction
    absolute: list[float]  # faithfulness of the |score| ranking at each fraction
    cpr: float
    cmd: float
    cpr_ci: tuple[float, float]
    cmd_ci: tuple[float, float]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "percentages": list(PERCENTAGES),
            "n_edges": self.n_edges,
            "faithfulness_signed": self.signed,
            "faithfulness_abs": self.absolute,
            "cpr": self.cpr,
            "cmd": self.cmd,
            "cpr_ci": list(self.cpr_ci),
            "cmd_ci": list(self.cmd_ci),
            **self.meta,
        }


def score_edges(
    model: HookedModel, batch: TaskBatch, metric: Metric, method: str, steps: int, graph: Graph,
    seed: int = 0,
) -> Circuit:  # fmt: skip
    """Edge scores of a method; ``"random"`` draws seeded normal scores (MIB's random baseline);
    ``"acdc"`` runs ACDC at :data:`ACDC_THRESHOLD` and ranks its measurements
    (:func:`acdc_ranking`)."""
    if method not in MIB_METHODS:
        raise MechscopeError(f"unknown method {method!r}; choose one of {', '.join(MIB_METHODS)}")
    if method == NODE_METHOD:
        return attribute_nodes(model, batch, metric, graph)
    if method == "acdc":
        return acdc_ranking(acdc(model, batch, ACDC_THRESHOLD, metric, graph))
    if method != "random":
        return attribute(model, batch, metric, method=method, steps=steps, graph=graph)
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(graph.edge_mask.shape, generator=g).masked_fill(~graph.edge_mask, 0.0)
    return Circuit(graph, scores, graph.edge_mask, method="random", meta={"seed": seed})


def acdc_ranking(found: Circuit) -> Circuit:
    """Every edge of the graph scored by what ACDC measured when it tried it: ACDC records the
    increase of its distance (``clean - metric``) with the edge patched, so the change of the
    metric is its negative, the sign of the other methods' scores (negative: the edge supports
    the clean answer). The kept circuit is in ``meta["acdc_edges"]``."""
    if found.method != "acdc":
        raise MechscopeError(f"acdc_ranking needs an ACDC circuit, got method {found.method!r}")
    meta = {**found.meta, "acdc_edges": found.n_edges, "ranking": "acdc measurements"}
    return replace(found, scores=-found.scores, mask=found.graph.edge_mask.clone(), meta=meta)


def mib_score(
    model: HookedModel,
    batch: TaskBatch,
    metric: Metric = logit_diff,
    method: str = "eap-ig",
    *,
    steps: int = 5,
    ungroup_kv: bool = False,
    scored: Circuit | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> MIBScore:
    """Score ``method`` (or the given ``scored`` edges) by MIB's CPR and CMD (module docstring)."""
    graph = scored.graph if scored is not None else Graph.from_dims(model.dims, ungroup_kv)
    if scored is None:
        scored = score_edges(model, batch, metric, method, steps, graph, seed)
    ev = Evaluator(model, batch, metric, graph)

    def values(mask: torch.Tensor) -> np.ndarray:  # per-prompt metric, one run per distinct mask
        return ev.values(mask).cpu().numpy()

    base = values(graph.edge_mask)  # nothing patched: the clean run
    corrupted = values(torch.zeros_like(graph.edge_mask))
    node = scored.meta.get("level") == "node"  # MIB's curve runs over fractions of the nodes
    counts = [int(p * (len(graph.nodes) if node else graph.n_edges)) for p in PERCENTAGES]

    def select(n: int, a: int) -> Circuit:
        return top_nodes(scored, n, bool(a)) if node else ranked(scored, n, bool(a)).pruned()

    circuits = {a: [select(n, a) for n in counts] for a in (0, 1)}
    curves = {a: [values(c.mask) for c in cs] for a, cs in circuits.items()}
    signed, absolute, cpr, cmd = _scores(base, corrupted, curves, np.arange(len(batch)))
    boots = np.array(
        [_scores(base, corrupted, curves, i)[2:] for i in resamples(len(batch), n_boot, seed)]
    )
    lo, hi = np.quantile(boots, [0.025, 0.975], axis=0)
    return MIBScore(
        method=scored.method or method,
        n_edges=counts,
        signed=signed,
        absolute=absolute,
        cpr=cpr,
        cmd=cmd,
        cpr_ci=(float(lo[0]), float(hi[0])),
        cmd_ci=(float(lo[1]), float(hi[1])),
        meta={
            "n_prompts": len(batch),
            "level": "node" if node else "edge",
            "total_edges": graph.n_edges,
            "total_nodes": len(graph.nodes),
            "circuit_edges_signed": [c.n_edges for c in circuits[0]],
            "circuit_edges_abs": [c.n_edges for c in circuits[1]],
            "n_boot": n_boot,
            "seed": seed,
        },
    )


def _scores(
    base: np.ndarray, corrupted: np.ndarray, curves: dict[int, list[np.ndarray]], idx: np.ndarray
) -> tuple[list[float], list[float], float, float]:
    b, c = base[idx].mean(), corrupted[idx].mean()
    if abs(b - c) < 1e-9:
        raise MechscopeError(
            "clean and corrupted metric values are equal, so faithfulness is undefined; use a "
            "task or metric that separates them"
        )
    faith = {
        a: [float((v[idx].mean() - c) / (b - c)) for v in curve] for a, curve in curves.items()
    }
    return faith[0], faith[1], areas(faith[0])[0], areas(faith[1])[1]


def subset(batch: TaskBatch, index: Sequence[int] | np.ndarray) -> TaskBatch:
    """The prompts ``index`` of a batch (repeats allowed: a bootstrap resample)."""
    idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
    tensors = {k: v[idx] for k, v in vars(batch).items() if isinstance(v, torch.Tensor)}
    sets = {
        k: tuple(getattr(batch, k)[i] for i in idx.tolist())
        for k in ("answer_sets", "wrong_sets")
        if getattr(batch, k) is not None
    }
    return replace(batch, **tensors, **sets)


def stability(
    model: HookedModel,
    batch: TaskBatch,
    metric: Metric = logit_diff,
    method: str = "eap-ig",
    *,
    n_edges: int,
    steps: int = 5,
    ungroup_kv: bool = False,
    n_boot: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """Circuit stability (Méloux et al. 2025): the top ``n_edges`` by |score| found on ``n_boot``
    resamples of the prompts; mean (with a 95% interval), min and max Jaccard index over pairs of
    resamples (:func:`mechscope.stats.jaccard_summary`)."""
    (out,) = stability_sizes(model, batch, metric, method, sizes=[n_edges], steps=steps,
                             ungroup_kv=ungroup_kv, n_boot=n_boot, seed=seed)  # fmt: skip
    return out


def stability_sizes(
    model: HookedModel,
    batch: TaskBatch,
    metric: Metric = logit_diff,
    method: str = "eap-ig",
    *,
    sizes: Sequence[int],
    steps: int = 5,
    ungroup_kv: bool = False,
    n_boot: int = 10,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """:func:`stability` at several circuit sizes from one scoring of each resample (the top
    ``n`` edges of the same scores for every ``n`` in ``sizes``); one result per size."""
    if n_boot < 2:
        raise MechscopeError(f"n_boot must be at least 2 to compare resamples, got {n_boot}")
    graph = Graph.from_dims(model.dims, ungroup_kv)
    scored = [
        score_edges(model, subset(batch, idx), metric, method, steps, graph, seed)
        for idx in resamples(len(batch), n_boot, seed)
    ]
    out = []
    for n in sizes:
        sets = [set(graph.edge_names(s.top_n(n).mask)) for s in scored]
        st = jaccard_summary(sets, seed=seed)
        st["frequency"] = dict(list(st["frequency"].items())[:50])
        out.append({"method": method, "n_edges": n, **st})
    return out


def finding_stats(
    model: HookedModel,
    batch: TaskBatch,
    metric: Metric,
    found: Any,
    *,
    mib: bool,
    n_resamples: int,
    steps: int = 5,
    ungroup_kv: bool = False,
) -> dict[str, Any]:
    """What ``mechscope circuit --mib --stability N`` adds to a :class:`CircuitRun`'s JSON: the
    MIB score of its scored edges and the stability of a circuit of its size."""
    method = found.scored.method
    if method not in (*METHODS, NODE_METHOD, "acdc"):
        raise MechscopeError(
            f"--mib and --stability need scores that rank ({', '.join(METHODS)}, {NODE_METHOD}, "
            f"acdc), not {method!r}"
        )
    out: dict[str, Any] = {}
    if mib:
        scored = acdc_ranking(found.scored) if method == "acdc" else found.scored
        out["mib"] = mib_score(model, batch, metric, scored=scored, steps=steps).to_dict()
    if n_resamples:
        out["stability"] = stability(
            model, batch, metric, method, n_edges=found.circuit.n_edges, steps=steps,
            ungroup_kv=ungroup_kv, n_boot=n_resamples,
        )  # fmt: skip
    return out


def to_mib_json(circuit: Circuit, model: HookedModel) -> dict[str, Any]:
    """A circuit (with its scores) in MIB's submission format, the EAP-IG library's graph JSON:
    ``cfg``, ``nodes`` ``{name: {"in_graph"}}``, ``edges`` ``{"src->dst": {"score", "in_graph"}}``
    (MIB's ``circuit_loading.load_graph_from_json``). MIB's graph gives every query head its own
    key and value ports, so the circuit must be scored on the ungrouped graph."""
    g = circuit.graph
    if model.dims.n_kv_heads != model.dims.n_heads and not any(".h0<k>" in p for p in g.ports):
        raise MechscopeError(
            "MIB's graph gives every query head its own key/value ports; score the circuit with "
            "ungroup_kv=True (mechscope circuit --ungroup-kv)"
        )
    d = model.dims
    cfg = {"n_layers": d.n_layers, "n_heads": d.n_heads, "parallel_attn_mlp": bool(d.parallel),
           "d_model": d.d_model}  # fmt: skip
    touched = set(circuit.nodes())
    nodes = {n: {"in_graph": n in touched} for n in (*g.nodes, "logits")}
    edges = {
        f"{src}->{dst}": {
            "score": float(circuit.scores[i, j]),
            "in_graph": bool(circuit.mask[i, j]),
        }
        for (src, dst), (i, j) in zip(g.edge_names(), g.edge_mask.nonzero().tolist())
    }
    return {"cfg": cfg, "nodes": nodes, "edges": edges}
