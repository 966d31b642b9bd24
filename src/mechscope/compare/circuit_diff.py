"""The diff of two circuits of one task: in two models, or in a model and its compressed copy.

Nodes and edges are matched by name (``a3.h1``, ``m2``, ``a3.h1 -> a5.h0<q>``), so the two
graphs need not be the same object, only use the same names (two checkpoints, a model and a copy
with some weights changed or pruned). Each edge of either circuit is ``shared`` (in both),
``lost`` (in A only) or ``added`` (in B only), with its score in each model (the score in the
model's scored graph, so a lost edge still shows what B gives it); nodes likewise.
:func:`diff_circuits` takes the scored graphs and the selected circuits of
:func:`mechscope.circuits.discover`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mechscope.circuits.circuit import Circuit

__all__ = ["CircuitDiff", "diff_circuits"]

STATUSES = ("shared", "lost", "added")


@dataclass
class CircuitDiff:
    """Edges ``{"src", "dst", "status", "score_a", "score_b"}`` and nodes by status."""

    edges: list[dict[str, Any]]
    nodes: dict[str, list[str]]
    graph: dict[str, Any]  # the graph to draw the union on (A's)

    def counts(self) -> dict[str, int]:
        out = {f"edges_{s}": sum(e["status"] == s for e in self.edges) for s in STATUSES}
        out.update({f"nodes_{s}": len(self.nodes[s]) for s in STATUSES})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": self.counts(),
            "nodes": self.nodes,
            "edges": self.edges,
            "graph": self.graph,
        }


def _scores(scored: Circuit) -> dict[tuple[str, str], float]:
    g = scored.graph
    return {
        (g.nodes[i], g.ports[j]): float(scored.scores[i, j])
        for i, j in g.edge_mask.nonzero().tolist()
    }


def diff_circuits(
    circuit_a: Circuit,
    circuit_b: Circuit,
    scored_a: Circuit | None = None,
    scored_b: Circuit | None = None,
) -> CircuitDiff:
    """Shared, lost and added edges and nodes of ``circuit_a`` (model A) and ``circuit_b``."""
    all_a = _scores(scored_a if scored_a is not None else circuit_a)
    all_b = _scores(scored_b if scored_b is not None else circuit_b)
    in_a = {(s, d) for s, d, _ in circuit_a.edges()}
    in_b = {(s, d) for s, d, _ in circuit_b.edges()}
    edges = []
    for key in sorted(in_a | in_b, key=lambda k: -max(abs(all_a.get(k, 0)), abs(all_b.get(k, 0)))):
        status = "shared" if key in in_a and key in in_b else "lost" if key in in_a else "added"
        edges.append({
            "src": key[0], "dst": key[1], "status": status,
            "score_a": all_a.get(key), "score_b": all_b.get(key),
        })  # fmt: skip
    na, nb = set(circuit_a.nodes()), set(circuit_b.nodes())
    order = {n: i for i, n in enumerate((*circuit_a.graph.nodes, "logits"))}

    def ordered(names: set[str]) -> list[str]:
        return sorted(names, key=lambda n: (order.get(n, len(order)), n))

    nodes = {"shared": ordered(na & nb), "lost": ordered(na - nb), "added": ordered(nb - na)}
    return CircuitDiff(edges, nodes, circuit_a.to_dict()["graph"])
