"""A scan equals a brute-force computation over every cached activation of the same windows."""

from __future__ import annotations

import pytest
import torch
from neuron_helpers import brute_topk, hooked

from mechscope.corpus import windows
from mechscope.neurons import (
    head_outputs,
    mlp_neurons,
    residual_directions,
    scan,
    scan_corpus,
    scan_to_dict,
)

SEQ = 12


def all_windows(model, corpus):
    return torch.stack(list(windows(corpus, model.tokenizer, seq_len=SEQ, seed=0)))


def cached(model, tokens, site):
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names=[site])
    return cache[site].float()


def batches_of(tokens, size):
    return [tokens[i : i + size] for i in range(0, len(tokens), size)]


@pytest.mark.parametrize("include_first", [False, True])
@pytest.mark.parametrize("kind", ["llama", "gpt2", "gpt_neox"])
def test_neuron_scan_equals_brute_force(kind: str, include_first: bool, corpus) -> None:
    """Top windows and statistics over positions 1: by default, over all with include_first."""
    model = hooked(kind)
    tokens = all_windows(model, corpus)
    readout = mlp_neurons(model, 1)
    acts = cached(model, tokens, readout.site)  # [window pos d_mlp]
    start = 0 if include_first else 1
    values, wins, positions = brute_topk(acts, 6, start)
    for size in (1, 4, len(tokens)):
        result = scan(model, readout, batches_of(tokens, size), k=6, include_first=include_first)
        assert torch.allclose(result.top.values, values, atol=1e-5)
        assert torch.equal(result.top.windows, wins)
        assert torch.equal(result.top.positions, positions)
        assert torch.equal(result.top.tokens[:, 0].long(), tokens[wins[:, 0]])
        rows = acts[wins[:, 0], :, torch.arange(acts.shape[2])]  # [unit pos]
        assert torch.allclose(result.top.acts[:, 0], rows, atol=1e-5)
        assert result.n_tokens == tokens.numel() and result.n_windows == len(tokens)
        assert torch.allclose(result.max, acts[:, start:].amax((0, 1)), atol=1e-5)
        assert result.include_first == include_first
    # the same single batch: exact histograms
    full = scan(model, readout, [tokens], k=6, include_first=include_first)
    flat = acts[:, start:].reshape(-1, acts.shape[2])
    assert torch.equal(full.histogram.hi, flat.max(0).values)
    assert torch.equal(full.histogram.lo, flat.min(0).values)
    assert int(full.histogram.counts.sum()) == flat.numel() == full.histogram.n * acts.shape[2]
    assert torch.equal(full.histogram.positive, (flat > 0).sum(0))
    assert torch.allclose(full.histogram.mean(), flat.double().mean(0), atol=1e-6)


def test_subset_of_neurons_matches_the_full_layer(llama, corpus) -> None:
    tokens = all_windows(llama, corpus)
    whole = scan(llama, mlp_neurons(llama, 2), [tokens], k=3)
    some = scan(llama, mlp_neurons(llama, 2, [5, 0, 17]), [tokens], k=3)
    assert torch.equal(some.top.values, whole.top.values[[5, 0, 17]])
    assert torch.equal(some.effects.promote_ids, whole.effects.promote_ids[[5, 0, 17]])


@pytest.mark.parametrize("site", ["z", "result"])
def test_head_norms_and_projections_equal_the_cache(llama, corpus, site: str) -> None:
    tokens = all_windows(llama, corpus)
    acts = cached(llama, tokens, f"blocks.1.attn.hook_{site}")  # [window pos head width]
    norms = scan(llama, head_outputs(llama, 1, site=site), [tokens], k=4)
    assert torch.allclose(norms.top.values, brute_topk(acts.norm(dim=-1), 4)[0], atol=1e-5)
    assert norms.effects is None
    u = torch.randn(acts.shape[-1], generator=torch.Generator().manual_seed(0))
    proj = scan(llama, head_outputs(llama, 1, [2, 4], direction=u, site=site), [tokens], k=4)
    expect = brute_topk(acts[:, :, [2, 4]] @ u, 4)
    assert torch.allclose(proj.top.values, expect[0], atol=1e-5)
    assert torch.equal(proj.top.windows, expect[1])


def test_z_direction_writes_what_the_head_result_shows(llama, corpus) -> None:
    """One unit of z_h . u writes (u / |u|^2) @ W_O[h]: check against hook_result on a run."""
    tokens = all_windows(llama, corpus)[:2]
    u = torch.randn(llama.dims.d_head, generator=torch.Generator().manual_seed(1))
    readout = head_outputs(llama, 0, [3], direction=u)
    z = cached(llama, tokens, "blocks.0.attn.hook_z")[:, :, 3]  # [b p d_head]
    result = cached(llama, tokens, "blocks.0.attn.hook_result")[:, :, 3]  # [b p d_model]
    # the head writes z @ W_O; its component along u (with z = c u + rest) is c * (u @ W_O)
    w_o = result.reshape(-1, result.shape[-1]).T @ torch.linalg.pinv(z.reshape(-1, z.shape[-1]).T)
    assert torch.allclose(readout.writes[0], u @ w_o.T / u.dot(u), atol=1e-3)


def test_direction_scan_and_its_unembedding(llama, corpus) -> None:
    tokens = all_windows(llama, corpus)
    dirs = torch.randn(3, llama.dims.d_model, generator=torch.Generator().manual_seed(2))
    readout = residual_directions(llama, "blocks.1.hook_resid_post", dirs)
    result = scan(llama, readout, batches_of(tokens, 5), k=5, through_norm=False)
    acts = cached(llama, tokens, "blocks.1.hook_resid_post") @ dirs.T
    assert torch.allclose(result.top.values, brute_topk(acts, 5)[0], atol=1e-4)
    # per unit of x . d the write is d / |d|^2: the same ranking as d itself
    logits = dirs @ llama.hf.lm_head.weight.T / dirs.pow(2).sum(-1, keepdim=True)
    assert torch.allclose(result.effects.promote_values, logits.topk(10).values, atol=1e-5)
    assert torch.equal(result.effects.promote_ids, logits.topk(10).indices)


def test_scan_corpus_and_json(llama, corpus) -> None:
    result = scan_corpus(llama, mlp_neurons(llama, 0), corpus, n_tokens=300, seq_len=10, k=4)
    assert result.n_tokens == 300 and result.seq_len == 10
    data = scan_to_dict(result, llama.tokenizer, show=result.ranked(2), model="tiny")
    assert set(data) >= {"model", "layer", "site", "tokens", "neurons", "summary"}
    assert data["layer"] == 0 and data["site"] == "blocks.0.mlp.hook_post"
    first = data["neurons"][0]
    assert set(first) >= {"index", "max", "top", "histogram", "promotes", "suppresses"}
    assert first["max"] == max(s["max"] for s in data["summary"])
    top = first["top"][0]
    assert set(top) == {"window", "text", "tokens", "acts", "position", "value"}
    assert len(top["tokens"]) == len(top["acts"]) == 10
    assert top["acts"][top["position"]] == pytest.approx(top["value"], abs=1e-4)
    hist = first["histogram"]
    # statistics leave out each window's first position: 30 windows of 9 counted tokens
    assert len(hist["edges"]) == len(hist["counts"]) + 1 and sum(hist["counts"]) == 270
    assert data["include_first"] is False and "final norm" in data["logit_unit"]
    assert all(t["position"] >= 1 for n in data["neurons"] for t in n["top"])
    assert hist["edges"][0] <= first["min"] and first["max"] < hist["edges"][-1]
