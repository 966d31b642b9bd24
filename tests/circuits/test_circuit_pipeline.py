"""The circuit pipeline (``discover``), the grouped and ungrouped graphs of one GQA model, and the
result schemas (``to_dict``, ``top_abs``).

The grouped graph's k/v port of key/value head g is the input that every query head of g's group
reads, so (exact identities, on a tiny GQA Llama with 6 query and 2 key/value heads):

- its EAP / EAP-IG score is the sum of the ungrouped graph's scores of those heads' ports (the
  gradient with respect to a shared input is the sum over its readers), every other port's score
  is the same in both graphs;
- a grouped circuit runs exactly as the ungrouped circuit with each grouped k/v edge replaced by
  the edges into all of its group's heads.

With the ungrouped graph checked against the EAP-IG library (tests/circuits/
test_circuit_smollm2.py), these carry the reference comparison over to the grouped graph.
"""

from __future__ import annotations

import pytest
import torch

from conftest import hooked, logit_diff64, toy_batch
from mechscope.circuits import (
    Circuit,
    Evaluator,
    Graph,
    attribute,
    curve_edges,
    discover,
    faithfulness_curve,
)
from mechscope.results import top_abs
from mechscope.tasks.metrics import logit_diff


def ungroup_map(grouped: Graph, ungrouped: Graph) -> torch.Tensor:
    """[grouped port, ungrouped port] 1 where the ungrouped port is one of the grouped port's."""
    index = {p: j for j, p in enumerate(ungrouped.ports)}
    m = torch.zeros(len(grouped.ports), len(ungrouped.ports))
    for j, port in enumerate(grouped.ports):
        kind = port[port.index("<") :] if "<" in port else ""
        for node in grouped.port_nodes(port) if kind in ("<k>", "<v>") else (port.split("<")[0],):
            m[j, index[node + kind] if kind else index[port]] = 1.0
    return m


@pytest.mark.parametrize("method", ["eap", "eap-ig"])
def test_grouped_scores_are_sums_of_ungrouped_scores(method: str) -> None:
    model, batch = hooked("llama", torch.float64), toy_batch()
    grouped = Graph.from_dims(model.dims)
    ungrouped = Graph.from_dims(model.dims, ungroup_kv=True)
    assert (grouped.n_kv, ungrouped.n_kv) == (2, 6)
    kw = {"metric": logit_diff64, "method": method, "steps": 3}
    g = attribute(model, batch, graph=grouped, **kw).scores
    u = attribute(model, batch, graph=ungrouped, **kw).scores
    m = ungroup_map(grouped, ungrouped)
    assert int(m.sum()) == len(ungrouped.ports)  # every ungrouped port belongs to one port
    # equal to 1e-6 of the largest score (rounding; a wrong identity is off by O(1))
    torch.testing.assert_close(g, u @ m.T.double(), atol=1e-6 * float(u.abs().max()), rtol=0)


def test_grouped_circuit_runs_as_its_ungrouped_expansion() -> None:
    model, batch = hooked("llama"), toy_batch()
    grouped = Graph.from_dims(model.dims)
    ungrouped = Graph.from_dims(model.dims, ungroup_kv=True)
    m = ungroup_map(grouped, ungrouped).bool()
    ev_g, ev_u = Evaluator(model, batch, graph=grouped), Evaluator(model, batch, graph=ungrouped)
    scored = attribute(model, batch, method="eap", graph=grouped)
    for n in (5, 20, 60):
        mask = scored.top_n(n).mask
        expanded = (mask.float() @ m.float()).bool()
        torch.testing.assert_close(ev_g.logits(mask), ev_u.logits(expanded), atol=1e-5, rtol=0)


def test_discover_runs_the_pipeline() -> None:
    model, batch = hooked("llama"), toy_batch()
    sizes = curve_edges(model)
    found = discover(model, batch, logit_diff, method="eap", edges=30)
    assert found.circuit.n_edges == 30 and found.scored.n_edges == found.scored.total_edges
    assert [n for n, _ in found.curve] == sizes
    # the same numbers as the separate library calls
    want = faithfulness_curve(model, batch, found.scored, sizes)
    assert found.curve == pytest.approx(want, abs=1e-6)
    ev = Evaluator(model, batch)
    assert found.circuit.faithfulness == pytest.approx(ev.faithfulness(found.circuit.mask))
    data = found.to_dict()
    assert data["n_edges"] == 30 and len(data["edges"]) == 30
    assert [p["n_edges"] for p in data["curve"]] == sizes
    assert data["curve"][0]["fraction"] == pytest.approx(sizes[0] / found.scored.total_edges)


def test_both_graphs_are_measured_at_the_same_edge_counts() -> None:
    model, batch = hooked("llama"), toy_batch()
    a = discover(model, batch, method="eap", edges=10)
    b = discover(model, batch, method="eap", edges=10, ungroup_kv=True)
    assert a.scored.total_edges == Graph.from_dims(model.dims).n_edges
    assert b.scored.total_edges == Graph.from_dims(model.dims, ungroup_kv=True).n_edges
    assert b.scored.total_edges > a.scored.total_edges
    assert [n for n, _ in a.curve] == [n for n, _ in b.curve]
    full = discover(model, batch, method="eap-ig", steps=2, threshold=0.0, curve=())
    assert full.curve == [] and full.circuit.faithfulness == pytest.approx(1.0, abs=1e-5)
    acdc = discover(model, batch, method="acdc", threshold=1e9)
    assert acdc.curve == [] and acdc.circuit.n_edges == 0


def test_top_abs() -> None:
    values = torch.tensor([[0.5, -3.0, 1.0], [float("nan"), 2.0, -0.1]])
    assert top_abs(values, 3) == [((0, 1), -3.0), ((1, 1), 2.0), ((0, 2), 1.0)]
    assert top_abs([[1.0, -1.0]], 5)[:2] == [((0, 0), 1.0), ((0, 1), -1.0)]  # ties: row-major
    assert top_abs(values, 0) == []


def test_circuit_json_round_trip_keeps_the_ungrouped_graph(tmp_path) -> None:
    model, batch = hooked("llama"), toy_batch()
    found = discover(model, batch, method="eap", edges=12, ungroup_kv=True, curve=())
    path = tmp_path / "c.json"
    found.circuit.save(path)
    back = Circuit.load(path)
    assert back.graph == found.circuit.graph and back.graph.n_kv == 6
    assert torch.equal(back.mask, found.circuit.mask)


def test_smallest_to_dict() -> None:
    from mechscope.circuits import first_reaching

    found = first_reaching(lambda n: n / 10, [2, 4, 8, 16], target=0.7, refine=False)
    assert found.to_dict() == {
        "n": 8,
        "faithfulness": 0.8,
        "target": 0.7,
        "grid_n": 8,
        "curve": [{"n_edges": n, "faithfulness": n / 10} for n in (2, 4, 8)],
    }
