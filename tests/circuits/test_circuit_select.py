"""Circuit selection, JSON round trip and comparison."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import hooked, toy_batch
from mechscope.circuits import Circuit, Evaluator, Graph, attribute, compare
from mechscope.errors import MechscopeError


def scored_tiny() -> Circuit:
    return attribute(hooked("llama"), toy_batch(), method="eap")


def test_top_n_threshold_greedy() -> None:
    s = scored_tiny()
    top = s.top_n(20)
    assert top.n_edges == 20
    kept = s.scores.abs()[top.mask]
    assert kept.min() >= s.scores.abs()[s.mask & ~top.mask].max()
    t = float(kept.min())
    assert torch.equal(s.threshold(t).mask, top.mask)
    greedy = s.greedy(15)
    assert greedy.n_edges == 15
    # Every greedy edge feeds a node that is in the circuit (or the logits).
    nodes = set(greedy.nodes())
    for src, dst, _ in greedy.edges():
        assert dst == "logits" or set(greedy.graph.port_nodes(dst)) & nodes
        assert src in nodes


def test_json_round_trip(tmp_path) -> None:
    c = scored_tiny().top_n(25).with_faithfulness(0.5)
    path = tmp_path / "c.json"
    c.save(path)
    data = json.loads(path.read_text())
    assert {"n_edges", "total_edges", "faithfulness", "nodes", "edges", "method"} <= set(data)
    assert set(data["edges"][0]) == {"src", "dst", "score"}
    back = Circuit.load(path)
    assert back.graph == c.graph and torch.equal(back.mask, c.mask)
    torch.testing.assert_close(back.scores[back.mask], c.scores[c.mask])
    assert back.nodes() == c.nodes() and back.method == c.method
    assert back.faithfulness == data["faithfulness"] == 0.5


def test_compare() -> None:
    s = scored_tiny()
    r = compare(s.top_n(10), s.top_n(20))
    assert r["edges_shared"] == 10 and r["edge_jaccard"] == 0.5
    assert compare(s.top_n(10), s.top_n(10))["node_jaccard"] == 1.0


def replay_greedy(s: Circuit, n: int) -> torch.Tensor:
    """The reference's apply_greedy, replayed literally: open the logits; n times, take the
    largest-|score| edge not yet taken whose port is open; opening a writer opens its ports."""
    g = s.graph
    open_ports = {len(g.ports) - 1}
    entered: set[str] = set()
    chosen = torch.zeros_like(s.mask)
    for _ in range(n):
        candidates = [(i, j) for i, j in s.mask.nonzero().tolist() if j in open_ports]
        best = max((e for e in candidates if not chosen[e]), key=lambda e: abs(float(s.scores[e])))
        chosen[best] = True
        src = g.nodes[best[0]]
        if src not in entered:
            entered.add(src)
            open_ports |= {j for j, p in enumerate(g.ports[:-1]) if src in g.port_nodes(p)}
    return chosen


@pytest.mark.parametrize("ungroup", [False, True])
def test_greedy_is_the_reference_rule(ungroup: bool) -> None:
    model, batch = hooked("llama"), toy_batch()
    graph = Graph.from_dims(model.dims, ungroup_kv=ungroup)
    s = attribute(model, batch, method="eap", graph=graph)
    for n in (1, 7, 40):
        assert torch.equal(s.greedy(n).mask, replay_greedy(s, n))
    with pytest.raises(MechscopeError, match="n must lie"):
        s.greedy(s.n_edges + 1)


@pytest.mark.parametrize(
    ("kind", "ungroup"), [("llama", False), ("llama", True), ("gpt_neox", False)]
)
def test_pruning_keeps_faithfulness(kind: str, ungroup: bool) -> None:
    model, batch = hooked(kind), toy_batch()
    graph = Graph.from_dims(model.dims, ungroup_kv=ungroup)
    s = attribute(model, batch, method="eap", graph=graph)
    ev = Evaluator(model, batch, graph=graph)
    dropped = 0
    for c in (s.top_n(10), s.top_n(60), s.greedy(10), s.greedy(60)):
        p = c.pruned()
        assert bool((p.mask <= c.mask).all())
        assert torch.equal(p.pruned().mask, p.mask)
        assert ev.faithfulness(p.mask) == pytest.approx(ev.faithfulness(c.mask), abs=1e-5)
        dropped += c.n_edges - p.n_edges
        # What is left is connected: every writer with an edge out has an edge in (or is the
        # input), and every port with an edge in belongs to a writer with an edge out (or logits).
        reads = {
            i: [j for j, q in enumerate(graph.ports[:-1]) if n in graph.port_nodes(q)]
            for i, n in enumerate(graph.nodes)
        }
        for i in p.mask.any(1).nonzero()[:, 0].tolist():
            assert i == 0 or bool(p.mask[:, reads[i]].any())
    assert dropped > 0  # the check above is not vacuous: pruning removed something
