"""The routing sites: ids, weights and the shared expert, read and written."""

from __future__ import annotations

import torch

from mechscope import HookedModel
from mechscope.models.tiny import tiny_model, tiny_tokenizer


def test_weights_and_indices_agree_and_sum(moe_model, moe_x) -> None:
    X = moe_x
    kind, model = moe_model
    names = [f"blocks.0.mlp.hook_{s}" for s in ("expert_indices", "expert_weights", "expert_out")]
    names += ["blocks.0.hook_mlp_out"]
    if "blocks.0.mlp.hook_shared_expert_out" in model.sites:
        names.append("blocks.0.mlp.hook_shared_expert_out")
    with torch.no_grad():
        _, cache = model.run_with_cache(X, names=names)
    idx, w, out = (cache[n] for n in names[:3])
    assert idx.shape == (*X.shape, model.dims.top_k) and w.shape == (*X.shape, model.dims.n_experts)
    nonzero = w.ne(0)
    assert torch.equal(nonzero.sum(-1), torch.full(X.shape, model.dims.top_k))
    assert nonzero.gather(-1, idx).all()
    written = out.abs().sum(-1) > 0
    assert torch.equal(written, nonzero)  # an expert writes exactly where it is routed
    total = out.sum(-2) + cache.get("blocks.0.mlp.hook_shared_expert_out", 0)
    torch.testing.assert_close(total, cache["blocks.0.hook_mlp_out"], atol=1e-5, rtol=0)


def test_zero_weight_equals_dropping_that_expert_write(moe_model, moe_x) -> None:
    X = moe_x
    kind, model = moe_model

    def zero_e1(w, hook):
        w = w.clone()
        w[..., 1] = 0
        return w

    def drop_e1(t, hook):
        t = t.clone()
        t[..., 1, :] = 0
        return t

    with torch.no_grad():
        a = model.run_with_hooks(X, fwd_hooks=[("blocks.0.mlp.hook_expert_weights", zero_e1)])
        b = model.run_with_hooks(X, fwd_hooks=[("blocks.0.mlp.hook_expert_out", drop_e1)])
        base = model(X)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert (a - base).abs().max() > 1e-4


def test_index_write_reroutes(moe_model, moe_x) -> None:
    X = moe_x
    kind, model = moe_model
    k = model.dims.top_k

    def force(t, hook):
        return torch.arange(k).expand_as(t).clone()

    with torch.no_grad():
        _, cache = model.run_with_cache(
            X, names=["blocks.0.mlp.hook_expert_out"],
            fwd_hooks=[("blocks.0.mlp.hook_expert_indices", force)],
        )  # fmt: skip
    written = cache["blocks.0.mlp.hook_expert_out"].abs().sum(-1) > 0
    assert written[..., :k].all() and not written[..., k:].any()


def test_weight_on_an_unchosen_expert_reroutes(moe_model, moe_x) -> None:
    X = moe_x
    kind, model = moe_model
    n = model.dims.n_experts

    def only_last(w, hook):
        w = torch.zeros_like(w)
        w[..., n - 1] = 1.0
        w[..., n - 2] = 0.5
        return w

    with torch.no_grad():
        _, cache = model.run_with_cache(
            X, names=["blocks.0.mlp.hook_expert_indices"],
            fwd_hooks=[("blocks.0.mlp.hook_expert_weights", only_last)],
        )  # fmt: skip
    assert cache["blocks.0.mlp.hook_expert_indices"][..., 0].eq(n - 1).all()


def test_shared_expert_write_equals_a_weight_edit(moe_x) -> None:
    X = moe_x
    model = HookedModel(tiny_model("qwen2_moe"), tiny_tokenizer())
    with torch.no_grad():
        zeroed = model.run_with_hooks(
            X, fwd_hooks=[("blocks.1.mlp.hook_shared_expert_out", lambda t, hook: t * 0)]
        )
        base = model(X)
        model.mlp(1).shared_expert.down_proj.weight.zero_()
        edited = model(X)
    assert (zeroed - base).abs().max() > 1e-3
    torch.testing.assert_close(zeroed, edited, atol=1e-5, rtol=0)


def test_dense_models_refuse_moe_sites(moe_x) -> None:
    X = moe_x
    import pytest

    from mechscope.errors import NotAvailable

    model = HookedModel(tiny_model("llama"), tiny_tokenizer())
    with pytest.raises(NotAvailable, match="dense MLP"):
        model.run_with_cache(X, names=["blocks.0.mlp.hook_expert_weights"])
    mixtral = HookedModel(tiny_model("mixtral"), tiny_tokenizer())
    with pytest.raises(NotAvailable, match="no shared expert"):
        mixtral.run_with_cache(X, names=["blocks.0.mlp.hook_shared_expert_out"])


def test_a_copied_expert_has_cka_one(moe_x) -> None:
    from mechscope.moe import expert_cka

    model = HookedModel(tiny_model("olmoe"), tiny_tokenizer())
    experts = model.mlp(0).experts
    with torch.no_grad():
        for p in experts.parameters():
            p[2] = p[0]
    sim = expert_cka(model, 0, moe_x)
    assert abs(float(sim[0, 2]) - 1) < 1e-9 and float(sim[0, 1]) < 0.99
    assert torch.equal(sim, sim.T)
