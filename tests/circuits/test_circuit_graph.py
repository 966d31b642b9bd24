"""The EAP graph: edge counts against the closed form and the reference library's count."""

from __future__ import annotations

import pytest
import torch

from conftest import KINDS, hooked
from mechscope.circuits import Graph, edge_count


@pytest.mark.parametrize("kind", KINDS)
def test_edge_count_matches_formula(kind: str) -> None:
    g = Graph.from_dims(hooked(kind).dims)
    assert g.n_edges == int(g.edge_mask.sum())
    assert g.n_edges == edge_count(g.n_layers, g.n_heads, g.n_kv, g.parallel)


def test_edge_count_by_hand() -> None:
    # 1 layer, 2 heads, sequential: input -> 6 qkv ports, input + 2 heads -> m0, 4 -> logits.
    assert Graph(1, 2, 2, parallel=False).n_edges == 6 + 3 + 4
    # parallel: the MLP does not read its own layer's heads.
    assert Graph(1, 2, 2, parallel=True).n_edges == 6 + 1 + 4


def test_smollm2_counts() -> None:
    # hannamw/EAP-IG on a TransformerLens HookedTransformer with GQA ungrouped: 123,211 edges,
    # i.e. one k and one v port per query head. Ours has one per key/value head (3 of 9).
    assert edge_count(30, 9, 9) == 123_211
    assert Graph(30, 9, 3, parallel=False).n_edges == edge_count(30, 9, 3) == 70_651


def test_ungrouped_graph_of_a_gqa_model() -> None:
    dims = hooked("llama").dims  # 3 layers, 6 heads, 2 kv heads
    grouped, ungrouped = Graph.from_dims(dims), Graph.from_dims(dims, ungroup_kv=True)
    assert grouped.n_kv == 2 and ungrouped.n_kv == 6
    assert ungrouped.n_edges == edge_count(3, 6, 6) > grouped.n_edges


def test_ports_and_edges_are_causal() -> None:
    g = Graph(2, 4, 2, parallel=False)
    assert g.port_nodes("a1.kv1<k>") == ("a1.h2", "a1.h3")
    names = dict.fromkeys(g.edge_names())
    assert ("a0.h3", "m0") in names and ("a0.h3", "a0.h0<q>") not in names
    assert ("m1", "logits") in names and ("m1", "a1.h0<q>") not in names
    assert g.edge_mask[g.nodes.index("m0"), g.port_index(1, "k", 1)]
    assert not torch.any(g.edge_mask[g.nodes.index("m1"), : g.port_index(-1, "")])
