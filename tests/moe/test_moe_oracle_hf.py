"""Oracle: routing counts equal an independent computation from transformers' own
``output_router_logits=True`` on the random-init config of every MoE family."""

from __future__ import annotations

import math

import pytest
import torch

from mechscope.moe import coactivation, collect_routing, entropy, load, specialisation


def hf_routing(model, tokens):
    """Per layer: HF's router logits [token expert] and the top-k experts as sets."""
    with torch.no_grad():
        out = model.hf(tokens, output_router_logits=True)
    return [t.float() for t in out.router_logits]


def test_every_moe_family_is_covered() -> None:
    from mechscope.models.tiny import CONFIGS

    kinds = {k for k in CONFIGS if getattr(CONFIGS[k](), "num_experts_per_tok", None)}
    assert kinds == {"mixtral", "gpt_oss", "qwen2_moe", "olmoe"}


def test_counts_match_output_router_logits(moe_model, moe_x) -> None:
    X = moe_x
    kind, model = moe_model
    routing = collect_routing(model, X, batch_size=2)  # two forwards: batching must not matter
    theirs = hf_routing(model, X)
    assert len(theirs) == model.dims.n_layers
    n, k = model.dims.n_experts, model.dims.top_k
    for layer, logits in enumerate(theirs):
        torch.testing.assert_close(routing.logits[layer], logits, atol=1e-5, rtol=0)
        # every family's router keeps the k largest logits (softmax is monotonic)
        chosen = torch.zeros(logits.shape[0], n, dtype=torch.long)
        chosen.scatter_(1, logits.topk(k, dim=-1).indices, 1)
        ours = routing.indices[layer]
        assert torch.equal(ours.sort(-1).values, logits.topk(k, dim=-1).indices.sort(-1).values)
        assert load(ours, n).tolist() == chosen.sum(0).tolist()
        assert coactivation(ours, n).tolist() == (chosen.T @ chosen).tolist()
        p = torch.softmax(logits.double(), -1)
        h = float(-(p * p.log()).sum(-1).mean())
        assert entropy(routing.logits[layer])["entropy"] == pytest.approx(h, rel=1e-6)
        labels = X.reshape(-1) % 3
        share = torch.stack([chosen[labels == c].double().mean(0) for c in range(3)])
        torch.testing.assert_close(specialisation(ours, labels, 3, n), share / (k / n))


def test_uniform_router_gives_ratio_one_and_full_entropy() -> None:
    logits = torch.zeros(6, 4)
    indices = torch.tensor([[0, 1], [2, 3]] * 3)
    assert entropy(logits)["normalised_entropy"] == pytest.approx(1.0)
    ratio = specialisation(indices, torch.zeros(6, dtype=torch.long), 1, 4)
    assert ratio.tolist() == [[1.0, 1.0, 1.0, 1.0]]
    assert math.isclose(float(entropy(torch.tensor([[50.0, 0, 0, 0]]))["entropy"]), 0, abs_tol=1e-9)
