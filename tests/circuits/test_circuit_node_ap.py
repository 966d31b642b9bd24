"""Node attribution patching as an MIB circuit method: its node scores are the row sums of the EAP
edge scores (two code paths, one identity), its circuits are MIB's node-level top-n, and its
CPR and CMD beat MIB's random baseline on a tiny model."""

from __future__ import annotations

import pytest
import torch

from conftest import hooked, logit_diff64, toy_batch
from mechscope.circuits import discover
from mechscope.circuits.eap import attribute
from mechscope.circuits.graph import Graph
from mechscope.circuits.mib import mib_score
from mechscope.circuits.node_ap import attribute_nodes, node_scores, top_nodes
from mechscope.errors import MechscopeError


@pytest.mark.parametrize("kind", ["llama", "gpt2", "gpt_neox"])
@pytest.mark.parametrize("ungroup", [False, True])
def test_node_score_is_sum_of_outgoing_edge_scores(kind: str, ungroup: bool) -> None:
    model, batch = hooked(kind, torch.float64), toy_batch(b=4)
    graph = Graph.from_dims(model.dims, ungroup)
    edges = attribute(model, batch, logit_diff64, method="eap", graph=graph).scores
    nodes = node_scores(model, batch, logit_diff64, graph).double()
    scale = float(edges.sum(1).abs().max())
    assert scale > 0
    torch.testing.assert_close(nodes, edges.sum(1), atol=1e-6 * scale, rtol=0)


def test_top_nodes_is_mibs_node_selection() -> None:
    model, batch = hooked("llama"), toy_batch(b=4)
    scored = attribute_nodes(model, batch)
    g, s = scored.graph, torch.tensor(scored.meta["node_scores"])
    assert torch.equal(scored.scores[:, 0][g.edge_mask[:, 0]], s[g.edge_mask[:, 0]])
    full = top_nodes(scored, len(g.nodes))
    assert torch.equal(full.mask, g.edge_mask)  # every node: every edge
    best = s.abs().topk(5).indices.tolist()
    five = top_nodes(scored, 5)
    rows = five.mask.any(1).nonzero().flatten().tolist()
    assert set(rows) <= set(best)  # only edges out of the five best nodes (then pruned)
    assert top_nodes(scored, 0).n_edges == 0
    signed = top_nodes(scored, 5, absolute=False).mask.any(1).nonzero().flatten().tolist()
    assert set(signed) <= set((-s).topk(5).indices.tolist())  # MIB: the loss's scores
    with pytest.raises(MechscopeError, match="node"):
        top_nodes(attribute(model, batch, method="eap"), 3)


def test_node_ap_beats_random_baseline() -> None:
    model, batch = hooked("llama"), toy_batch(b=8)
    node = mib_score(model, batch, method="node-ap", n_boot=100)
    rand = mib_score(model, batch, method="random", n_boot=100)
    assert node.meta["level"] == "node" and rand.meta["level"] == "edge"
    assert node.n_edges[-1] == len(Graph.from_dims(model.dims).nodes)
    assert node.absolute[-1] == pytest.approx(1.0, abs=1e-5)
    assert node.cpr > rand.cpr and node.cmd < rand.cmd


def test_discover_with_node_ap() -> None:
    model, batch = hooked("llama"), toy_batch(b=4)
    run = discover(model, batch, method="node-ap", edges=40, curve=())
    assert run.scored.method == "node-ap" and run.circuit.n_edges == 40
    assert run.circuit.faithfulness is not None
