"""A circuit: a subset of a :class:`Graph`'s edges with their attribution scores.

Selection rules (each returns a new :class:`Circuit`):

- ``top_n(n)`` / ``top_fraction(f)``: the n edges of largest |score|;
- ``threshold(t)``: every edge with |score| >= t;
- ``greedy(n)``: grow from the logits backwards, each time adding the best-|score| edge whose
  receiving node is already in the circuit (so the circuit stays connected to the logits), as
  the reference library's ``Graph.apply_greedy`` (Hanna et al. 2024);
- ``pruned()``: drop edges that cannot change the patched run (writers with no input edge or
  no output edge), as the reference's ``Graph.prune``; faithfulness is unchanged.

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
        """Grow ``n`` edges from the logits backwards, as the reference's ``apply_greedy``.

        Start with the edges into the logits as candidates; repeatedly take the candidate of
        largest |score|, and when its writer enters the circuit for the first time, add every
        edge into that writer's ports (q, k, v, or the MLP input) to the candidates. Every edge
        therefore feeds the logits or a node already in the circuit; a writer may still have no
        edge into it (then it runs on its corrupted input: see :meth:`pruned`).
        """
        if not 0 <= n <= self.n_edges:
            raise MechscopeError(f"n must lie in [0, {self.n_edges}], got {n}")
        g = self.graph
        reads = _reader_ports(g)  # [node port]: the ports through which each node reads
        allowed, scores = self.mask, self.scores.abs()
        chosen = torch.zeros_like(allowed)
        entered = torch.zeros(len(g.nodes), dtype=torch.bool)
        heap: list[tuple[float, int, int]] = []

        def push(ports: Tensor) -> None:
            for i, j in (allowed & ports[None, :]).nonzero().tolist():
                heapq.heappush(heap, (-float(scores[i, j]), i, j))

        logits = torch.zeros(len(g.ports), dtype=torch.bool)
        logits[-1] = True
        push(logits)
        taken = 0
        while heap and taken < n:
            _, i, j = heapq.heappop(heap)
            if chosen[i, j]:  # a grouped k/v port is pushed once per query head that reads it
                continue
            chosen[i, j] = True
            taken += 1
            if not entered[i]:
                entered[i] = True
                push(reads[i])
        return self._with(chosen, f"greedy({n})")

    def pruned(self) -> Circuit:
        """Drop the edges that cannot change the patched run (the reference's ``Graph.prune``).

        Repeat until nothing changes: a writer with no edge into any of its ports (the input
        excepted) reads the corrupted residual everywhere, so it writes its corrupted output and
        its outgoing edges carry nothing; a writer with no outgoing edge is read by nobody in the
        circuit, so its incoming edges matter to nobody. Remove both kinds of writer and every
        edge touching them. Faithfulness is unchanged (tested); only ``n_edges`` falls.
        """
        g = self.graph
        reads = _reader_ports(g).float()
        mask = self.mask.clone()
        while True:
            fed = (reads @ mask.any(0).float()) > 0
            fed[0] = True  # the input embeddings
            alive = fed & mask.any(1)
            port_alive = (alive.float() @ reads) > 0
            port_alive[-1] = True  # the logits
            keep = mask & alive[:, None] & port_alive[None, :]
            if torch.equal(keep, mask):
                break
            mask = keep
        return self._with(mask, f"{self.meta.get('selection', 'all')}, pruned")

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


def _reader_ports(g: Graph) -> Tensor:
    """[node port] bool: port j is one of node i's inputs (a grouped k/v port has several)."""
    index = {name: i for i, name in enumerate(g.nodes)}
    reads = torch.zeros(len(g.nodes), len(g.ports), dtype=torch.bool)
    for j, port in enumerate(g.ports[:-1]):
        for node in g.port_nodes(port):
            reads[index[node], j] = True
    return reads


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
