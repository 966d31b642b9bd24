"""Circuit selection, JSON round trip and comparison."""

from __future__ import annotations

import json

import torch

from conftest import hooked, toy_batch
from mechscope.circuits import Circuit, attribute, compare


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
