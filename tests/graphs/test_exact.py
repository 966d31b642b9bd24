"""Exactness: every edge weight is the effect of removing its source in the frozen replacement
model, and the replacement model with error nodes reproduces the model's output."""

from __future__ import annotations

import pytest
import torch
from graphkit import random_set

from mechscope.graphs import GraphConfig, attribute
from mechscope.graphs.attribute import encode_prompt
from mechscope.graphs.freeze import frozen_forward, snapshot
from mechscope.models.hooked import HookedModel
from mechscope.models.tiny import tiny_model

FAMILIES = ["llama", "gpt2", "gemma2", "gpt_neox", "olmo2", "opt", "granite", "mixtral", "phi3"]


def _values(model, snap, g, tcs, embed, outs):
    """Every target's value (feature pre-activations without b_enc, demeaned logits)."""
    with torch.no_grad():
        mlp_in, unembed = frozen_forward(model, snap, embed, outs)
    vals = []
    for layer, pos, feat in g.features.tolist():
        vals.append(mlp_in[layer][:, pos] @ tcs.W_enc[layer][:, feat].to(mlp_in[layer].dtype))
    demeaned = unembed - unembed.mean(-1, keepdim=True)
    vals += [demeaned[:, t] for t in g.logit_tokens]
    return torch.stack(vals, 1)  # [batch targets]


def _removals(g, tcs, snap, feats):
    """One batch row per source (features, errors, tokens): that source removed."""
    n_layers, n_pos, d = snap.mlp_out.shape
    n_src = g.n_features + g.n_errors + g.n_pos
    embed = snap.embed[None].repeat(n_src + 1, 1, 1)
    outs = (feats.recon + feats.error)[:, None].repeat(1, n_src + 1, 1, 1)
    for j, (layer, pos, feat) in enumerate(g.features.tolist()):
        for m in range(layer, layer + tcs.W_dec[layer].shape[1]):
            dec = tcs.W_dec[layer][feat, m - layer].to(outs.dtype)
            outs[m, j, pos] -= g.activations[j].to(outs.dtype) * dec
    for layer in range(n_layers):
        for pos in range(n_pos):
            outs[layer, g.error_index(layer, pos), pos] -= feats.error[layer, pos]
    for pos in range(n_pos):
        embed[g.token_index(pos), pos] = 0
    return embed, list(outs)


@pytest.mark.parametrize("family", FAMILIES)
def test_edges_equal_removal_effects(family: str) -> None:
    dtype = torch.float32 if family == "mixtral" else torch.float64  # grouped MoE matmuls
    model = HookedModel(tiny_model(family, dtype=dtype))
    tcs = random_set(model, cross_layer=family in ("llama", "gpt2", "gemma2"))
    tokens = torch.randint(1, 100, (7,), generator=torch.Generator().manual_seed(3))
    g = attribute(model, tcs, tokens, GraphConfig(batch_size=32), quiet=True)
    snap = snapshot(model, tokens)
    feats = encode_prompt(tcs, snap)
    assert g.n_features == feats.index.shape[0] > 20
    embed, outs = _removals(g, tcs, snap, feats)
    vals = _values(model, snap, g, tcs, embed, outs)
    measured = (vals[-1:] - vals[:-1]).T  # [targets sources]
    rows = torch.cat(
        [torch.arange(g.n_features), torch.arange(g.logit_index(0), g.adjacency.shape[0])]
    )
    predicted = g.adjacency[rows][:, : measured.shape[1]].double()
    scale = predicted.abs().max()
    assert scale > 0
    assert float((measured - predicted).abs().max() / scale) <= 1e-3
    # the real model's unembedding output is reproduced by the replacement model
    assert torch.allclose(
        _values(model, snap, g, tcs, embed[-1:], [o[-1:] for o in outs])[0, g.n_features :],
        (snap.unembed - snap.unembed.mean())[g.logit_tokens],
        rtol=1e-4,
        atol=1e-5 * float(snap.unembed.abs().max()),
    )


def test_max_feature_nodes_keeps_the_most_influential_rows() -> None:
    """With a cap, the chosen features' rows are the full graph's rows, restricted to the chosen
    features, and the chosen ones carry most of the full graph's feature influence."""
    model = HookedModel(tiny_model("llama", dtype=torch.float64))
    tcs = random_set(model, cross_layer=True)
    tokens = torch.randint(1, 100, (7,), generator=torch.Generator().manual_seed(3))
    full = attribute(model, tcs, tokens, GraphConfig(batch_size=8), quiet=True)
    cap = full.n_features // 3
    part = attribute(
        model, tcs, tokens, GraphConfig(batch_size=8, max_feature_nodes=cap), quiet=True
    )
    assert part.n_features == cap
    idx = [full.feature_index(*f) for f in part.features.tolist()]
    n_rest = full.adjacency.shape[0] - full.n_features
    sub = full.adjacency[idx][:, idx]
    assert torch.allclose(part.adjacency[:cap, :cap], sub, rtol=1e-5, atol=1e-7)
    assert torch.allclose(
        part.adjacency[:cap, cap:], full.adjacency[idx, full.n_features :], atol=1e-7
    )
    assert n_rest == part.adjacency.shape[0] - cap
    inf = full.prune().influence[: full.n_features]
    assert float(inf[idx].sum()) > 0.5 * float(inf.sum())
    assert float(inf[idx].sum()) > float(inf.sort(descending=True).values[-cap:].sum())


def test_zero_first_drops_position_zero_nodes_only() -> None:
    """circuit-tracer's convention: no feature or error nodes at position 0; every other edge of
    a feature present in both graphs is unchanged (position 0 only adds constants)."""
    model = HookedModel(tiny_model("llama", dtype=torch.float64))
    tcs = random_set(model)
    tokens = torch.randint(1, 100, (6,), generator=torch.Generator().manual_seed(8))
    full = attribute(model, tcs, tokens, GraphConfig(batch_size=64), quiet=True)
    cut = attribute(model, tcs, tokens, GraphConfig(batch_size=64, zero_first=True), quiet=True)
    assert int((cut.features[:, 1] == 0).sum()) == 0 < int((full.features[:, 1] == 0).sum())
    idx = [full.feature_index(*f) for f in cut.features.tolist()]
    assert torch.allclose(
        cut.adjacency[: cut.n_features, : cut.n_features], full.adjacency[idx][:, idx]
    )
    errors = cut.adjacency[:, cut.n_features : cut.n_features + cut.n_errors]
    assert float(errors.reshape(-1, model.dims.n_layers, cut.n_pos)[:, :, 0].abs().max()) == 0


def test_compact_rows_prune_like_the_dense_matrix() -> None:
    """Pruning and scores on the graph's rows equal circuit-tracer's definitions applied to the
    square matrix (a dense re-statement of them, written out here)."""
    from mechscope.graphs.prune import find_threshold

    model = HookedModel(tiny_model("gpt2", dtype=torch.float64))
    g = attribute(
        model, random_set(model), torch.arange(1, 8), GraphConfig(batch_size=64), quiet=True
    )
    a = g.adjacency.double()
    n = a.shape[0]
    w = torch.zeros(n, dtype=torch.float64)
    w[n - len(g.logit_tokens) :] = g.logit_probs.double()
    norm = a.abs() / a.abs().sum(1, keepdim=True).clamp_min(1e-10)
    dense = torch.linalg.solve((torch.eye(n) - norm).T, w) - w  # w ((I - N)^-1 - I)
    p = g.prune()
    assert torch.allclose(p.influence, dense, rtol=1e-8, atol=1e-12)
    keep = dense >= find_threshold(dense, 0.8)
    assert bool((p.node_mask[: g.n_features] <= keep[: g.n_features]).all())
    err = slice(g.n_features, g.n_features + g.n_errors)
    tok = slice(err.stop, err.stop + g.n_pos)
    replacement = float(dense[tok].sum() / (dense[tok].sum() + dense[err].sum()))
    completeness = float(((1 - norm[:, err].sum(1)) * (dense + w)).sum() / (dense + w).sum())
    assert g.scores() == pytest.approx((replacement, completeness), rel=1e-9)


@pytest.mark.parametrize("counts", [[16] * 9 + [5], [1, 40, 3, 3, 2], [5]])
def test_position_chunks_hold_every_decoder_once(counts: list[int]) -> None:
    """The per-position chunks of the feature rows: every feature's decoder at its own slot, in
    a chunk at its position, the rest zero, and at most twice the features in slots."""
    from mechscope.graphs.attribute import _chunk

    pos = torch.repeat_interleave(torch.arange(len(counts)) * 2, torch.tensor(counts))
    n = len(pos)
    rows = torch.arange(n) + 100
    dec = torch.randn(n, 3, 4, generator=torch.Generator().manual_seed(0))
    got_rows, chunk_pos, chunk, slot, padded = _chunk(rows, pos, dec)
    assert torch.equal(got_rows, rows) and torch.equal(chunk_pos[chunk], pos)
    assert torch.equal(padded[:, chunk, slot], dec.transpose(0, 1))
    filled = torch.zeros(padded.shape[1:3], dtype=torch.bool)
    filled[chunk, slot] = True
    assert int(filled.sum()) == n and float(padded[:, ~filled].abs().sum()) == 0
    assert filled.numel() <= 2 * n
    if counts.count(max(counts)) > len(counts) // 2:  # TopK-like: one chunk per position
        assert filled.numel() <= 1.1 * n
