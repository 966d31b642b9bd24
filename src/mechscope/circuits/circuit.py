"""A circuit: a subset of a :class:`Graph`'s edges with their attribution scores.

Selection rules (each returns a new :class:`Circuit`):

- ``top_n(n)`` / ``top_fraction(f)``: the n edges of largest |score|;
- ``threshold(t)``: every edge with |score| >= t;
- ``greedy(n)``: grow from the logits backwards, each time adding the best-|score| edge whose
  receiving node is already in the circuit (so the circuit stays connected to the logits).

JSON: ``{"method", "model", "task", "n_edges", "total_edges", "faithfulness", "nodes",
"edges": [{"src", "dst", "score"}], "graph", "meta"}``; :func:`compare` measures overlap.
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from mechscope.circuits.graph import Graph
from mechscope.errors import MechscopeError

Tensor = torch.Tensor


@dataclass(frozen=True)
class Circuit:
    """Edges ``mask`` [node port] of ``graph`` with ``scores`` [node port] (0 where unknown)."""

    graph: Graph
    scores: Tensor
    mask: Tensor
    method: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    faithfulness: float | None = None

    def __post_init__(self) -> None:
        self.graph.check_mask(self.mask)
        self.graph.check_mask(self.scores)
        object.__setattr__(self, "mask", self.mask.bool() & self.graph.edge_mask)

    @property
    def n_edges(self) -> int:
        return int(self.mask.sum())

    @property
    def total_edges(self) -> int:
        return self.graph.n_edges

    def edges(self) -> list[tuple[str, str, float]]:
        """(src, dst, score) of every edge in the circuit, by decreasing |score|."""
        idx = self.mask.nonzero().tolist()
        rows = [
            (self.graph.nodes[i], self.graph.ports[j], float(self.scores[i, j])) for i, j in idx
        ]
        return sorted(rows, key=lambda r: -abs(r[2]))

    def nodes(self) -> list[str]:
        """Nodes touched by an edge, in graph order (``logits`` last)."""
        touched = set()
        for i, j in self.mask.nonzero().tolist():
            touched.add(self.graph.nodes[i])
            touched.update(self.graph.port_nodes(self.graph.ports[j]))
        return [n for n in (*self.graph.nodes, "logits") if n in touched]

    def with_faithfulness(self, value: float) -> Circuit:
        """The same circuit with its measured faithfulness recorded (saved in the JSON)."""
        return replace(self, faithfulness=float(value))

    def _with(self, mask: Tensor, how: str) -> Circuit:
        return replace(self, mask=mask, meta={**self.meta, "selection": how}, faithfulness=None)

    def top_n(self, n: int) -> Circuit:
        """The ``n`` edges of largest |score| (among this circuit's edges)."""
        if not 0 <= n <= self.n_edges:
            raise MechscopeError(f"n must lie in [0, {self.n_edges}], got {n}")
        flat = self.scores.abs().masked_fill(~self.mask, -1.0).flatten()
        mask = torch.zeros_like(flat, dtype=torch.bool)
        mask[flat.topk(n).indices] = True
        return self._with(mask.view_as(self.mask), f"top_n({n})")

    def top_fraction(self, fraction: float) -> Circuit:
        """The ``round(fraction * total_edges)`` edges of largest |score|."""
        if not 0.0 <= fraction <= 1.0:
            raise MechscopeError(f"fraction must lie in [0, 1], got {fraction}")
        return self.top_n(min(self.n_edges, round(fraction * self.total_edges)))

    def threshold(self, t: float) -> Circuit:
        """Every edge with |score| >= t."""
        return self._with(self.mask & (self.scores.abs() >= t), f"threshold({t})")

    def greedy(self, n: int) -> Circuit:
        """Grow ``n`` edges from the logits backwards (best |score| into a node already in)."""
        g = self.graph
        ports_of: dict[str, list[int]] = {"logits": [len(g.ports) - 1]}
        for j, port in enumerate(g.ports[:-1]):
            for node in g.port_nodes(port):
                ports_of.setdefault(node, []).append(j)
        allowed, scores = self.mask, self.scores.abs()
        chosen = torch.zeros_like(allowed)
        heap: list[tuple[float, int, int]] = []
        seen: set[str] = set()

        def enter(node: str) -> None:
            if node in seen:
                return
            seen.add(node)
            for j in ports_of.get(node, []):
                for i in allowed[:, j].nonzero()[:, 0].tolist():
                    heapq.heappush(heap, (-float(scores[i, j]), i, j))

        enter("logits")
        while heap and int(chosen.sum()) < n:
            _, i, j = heapq.heappop(heap)
            if not chosen[i, j]:
                chosen[i, j] = True
                enter(g.nodes[i])
        return self._with(chosen, f"greedy({n})")

    # -- JSON -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        g = self.graph
        return {
            "method": self.method,
            "model": self.meta.get("model"),
            "task": self.meta.get("task"),
            "n_edges": self.n_edges,
            "total_edges": self.total_edges,
            "faithfulness": self.faithfulness,
            "nodes": self.nodes(),
            "edges": [{"src": s, "dst": d, "score": v} for s, d, v in self.edges()],
            "graph": {
                "n_layers": g.n_layers,
                "n_heads": g.n_heads,
                "n_kv": g.n_kv,
                "parallel": g.parallel,
            },
            "meta": self.meta,
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Circuit:
        graph = Graph(**data["graph"])
        node = {n: i for i, n in enumerate(graph.nodes)}
        port = {p: j for j, p in enumerate(graph.ports)}
        scores = torch.zeros(len(graph.nodes), len(graph.ports))
        mask = torch.zeros_like(scores, dtype=torch.bool)
        for e in data["edges"]:
            if e["src"] not in node or e["dst"] not in port:
                raise MechscopeError(f"edge {e['src']}->{e['dst']} is not in the saved graph")
            i, j = node[e["src"]], port[e["dst"]]
            scores[i, j], mask[i, j] = e["score"], True
        meta = {**data.get("meta", {}), "model": data.get("model"), "task": data.get("task")}
        return cls(graph, scores, mask, data.get("method", ""), meta, data.get("faithfulness"))

    @classmethod
    def load(cls, path: str | Path) -> Circuit:
        return cls.from_dict(json.loads(Path(path).read_text()))


def compare(a: Circuit, b: Circuit) -> dict[str, float]:
    """Edge and node overlap of two circuits of the same graph (counts and Jaccard indices)."""
    if a.graph != b.graph:
        raise MechscopeError("the circuits come from different graphs; compare like with like")
    both, either = int((a.mask & b.mask).sum()), int((a.mask | b.mask).sum())
    na, nb = set(a.nodes()), set(b.nodes())
    return {
        "edges_a": a.n_edges,
        "edges_b": b.n_edges,
        "edges_shared": both,
        "edge_jaccard": both / either if either else 1.0,
        "nodes_shared": len(na & nb),
        "node_jaccard": len(na & nb) / len(na | nb) if na | nb else 1.0,
    }
