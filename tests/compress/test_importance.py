"""Task importance: the neuron estimate against attribution patching, the slice mapping, and a
planted circuit whose weight groups must receive more bits."""

from __future__ import annotations

import pytest
import torch
from compress_helpers import GS, tiny_llama, toy_batch

from mechscope.attribution import attribution_patch
from mechscope.compress.groups import linear_weights
from mechscope.compress.importance import (
    NodeScores,
    group_importance,
    neuron_attribution,
    node_scores,
    task_importance,
)
from mechscope.compress.methods import Inputs, circuit
from mechscope.compress.tables import error_tables
from mechscope.tasks.metrics import logit_diff


def test_neuron_attribution_matches_attribution_patching() -> None:
    model, batch = tiny_llama(), toy_batch()
    ours = neuron_attribution(model, batch, logit_diff)
    for layer in range(model.dims.n_layers):
        ref = attribution_patch(model, batch, logit_diff, "neuron", direction="noise", layer=layer)
        assert torch.allclose(ours[layer], ref.values - ref.clean, atol=1e-5, rtol=1e-4)


def test_slices_follow_heads_kv_groups_and_neurons() -> None:
    model = tiny_llama()
    layout = linear_weights(model, GS)
    n_layers, h, kv, d_mlp = 3, 6, 2, 80
    z = torch.zeros
    out = z(n_layers, h)
    out[1, 4] = 1.0  # head 4 of layer 1: key/value head 4 // 3 = 1
    neurons = z(n_layers, d_mlp)
    neurons[2, 17] = 5.0
    s = NodeScores(out, z(n_layers, h), z(n_layers, kv), z(n_layers, kv), z(n_layers), neurons)
    imp = group_importance(layout, s, d_head=8)
    hot = {}
    for w in layout.weights:
        part = imp[w.offset : w.offset + w.n_groups].view(w.out_features, -1)
        hot[(w.layer, w.kind)] = part.nonzero().tolist()
    assert sorted({r for r, _ in hot[(1, "q")]}) == list(range(32, 40))
    assert sorted({r for r, _ in hot[(1, "k")]}) == list(range(8, 16))
    assert sorted({r for r, _ in hot[(1, "v")]}) == list(range(8, 16))
    assert sorted({c for _, c in hot[(1, "o")]}) == [4]  # columns 32..39 = group 4 of each row
    assert (
        sorted({r for r, _ in hot[(2, "gate")]}) == [17] == sorted({r for r, _ in hot[(2, "up")]})
    )
    assert sorted({c for _, c in hot[(2, "down")]}) == [17 // GS]
    assert not hot[(0, "q")] and not hot[(2, "o")]


@pytest.fixture(scope="module")
def planted() -> tuple:
    """Only head 3 of layer 1 writes to the residual: every other head's o_proj columns and every
    MLP's down projection are zero, so the task's circuit is that head (and the embeddings)."""
    model = tiny_llama(seed=1)
    with torch.no_grad():
        for layer in range(3):
            o = model.hf.model.layers[layer].self_attn.o_proj.weight
            keep = o[:, 24:32].clone() if layer == 1 else None
            o.zero_()
            if keep is not None:
                o[:, 24:32] = keep * 4
            model.hf.model.layers[layer].mlp.down_proj.weight.zero_()
    scores = node_scores(model, toy_batch(seed=2, b=6), logit_diff, steps=3)
    layout = linear_weights(model, GS)
    tables = error_tables(model, layout, (2, 3, 4, 8, 16))
    tables["fisher"] = tables["mse"]  # a stand-in general term: every group alike
    return model, layout, scores, tables


def _mean_width(layout, widths, layer: int, kind: str, rows: slice) -> float:  # type: ignore[no-untyped-def]
    w = next(w for w in layout.weights if w.layer == layer and w.kind == kind)
    part = widths[w.offset : w.offset + w.n_groups].view(w.out_features, -1)
    return float(part[rows].float().mean())


@pytest.mark.parametrize("task_weight", [0.0, 1.0])
def test_planted_circuit_gets_more_bits(planted: tuple, task_weight: float) -> None:
    model, layout, scores, tables = planted
    top = scores.top_heads(1)[0][0]
    assert top == "a1.h3"
    task = task_importance(layout, [scores], 8)
    inp = Inputs(layout, (2, 3, 4, 8, 16), 7.0, tables, task, task_weight=task_weight)
    widths = circuit(inp)
    assert (widths == 16).float().mean() < 0.5  # the budget binds
    head_q = _mean_width(layout, widths, 1, "q", slice(24, 32))
    other_q = _mean_width(layout, widths, 1, "q", slice(0, 24))
    head_k = _mean_width(layout, widths, 1, "k", slice(8, 16))  # key/value head 3 // 3 = 1
    other_k = _mean_width(layout, widths, 1, "k", slice(0, 8))
    if task_weight:
        assert head_q >= other_q + 3 and head_k >= other_k + 3
    else:  # without the task term the head is not singled out
        assert head_q < other_q + 1 and head_k < other_k + 1
