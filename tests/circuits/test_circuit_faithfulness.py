"""Faithfulness identities on every tiny family, and the curve's bookkeeping."""

from __future__ import annotations

import pytest
import torch

from conftest import KINDS, hooked, toy_batch
from mechscope.circuits import Circuit, Evaluator, Graph, attribute, faithfulness_curve


@pytest.mark.parametrize("kind", KINDS)
def test_full_is_clean_and_empty_is_corrupted(kind: str) -> None:
    model, batch = hooked(kind), toy_batch()
    ev = Evaluator(model, batch)
    edges = ev.graph.edge_mask
    assert ev.value(edges) == pytest.approx(ev.clean_value, abs=1e-5)
    assert ev.value(torch.zeros_like(edges)) == pytest.approx(ev.corrupt_value, abs=1e-5)
    # The empty circuit reproduces the corrupted logits, not just the metric.
    with torch.no_grad():
        corrupt = model(batch.corrupt_tokens, batch.corrupt_mask)
    torch.testing.assert_close(ev.logits(torch.zeros_like(edges)), corrupt, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["llama", "mixtral"])
def test_identities_with_ungrouped_kv(kind: str) -> None:
    model, batch = hooked(kind), toy_batch()
    ev = Evaluator(model, batch, graph=Graph.from_dims(model.dims, ungroup_kv=True))
    edges = ev.graph.edge_mask
    assert ev.value(edges) == pytest.approx(ev.clean_value, abs=1e-5)
    assert ev.value(torch.zeros_like(edges)) == pytest.approx(ev.corrupt_value, abs=1e-5)


def test_patching_one_edge_changes_only_its_receiver() -> None:
    """Patching input -> logits alone equals adding (corrupt - clean) embeddings to the final
    residual: check against a direct hook on the last resid_post."""
    model, batch = hooked("llama"), toy_batch()
    ev = Evaluator(model, batch)
    g = ev.graph
    mask = g.edge_mask.clone()
    mask[0, -1] = False
    delta = ev.corrupt[:, :, 0] - Evaluator(model, batch.flipped()).corrupt[:, :, 0]
    last = f"blocks.{g.n_layers - 1}.hook_resid_post"
    with torch.no_grad():
        want = model.run_with_hooks(
            batch.clean_tokens, [(last, lambda x, h: x + delta)], attention_mask=batch.clean_mask
        )
    torch.testing.assert_close(ev.logits(mask), want, atol=1e-5, rtol=1e-5)


def test_curve_ends() -> None:
    model, batch = hooked("gpt2"), toy_batch()
    scored: Circuit = attribute(model, batch, method="eap-ig", steps=2)
    curve = faithfulness_curve(model, batch, scored, [0, 10, scored.total_edges])
    assert curve[0] == (0, pytest.approx(0.0, abs=1e-4))
    assert curve[-1] == (scored.total_edges, pytest.approx(1.0, abs=1e-4))
