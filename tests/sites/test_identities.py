"""Exact identities of the residual stream, heads and attention."""

from __future__ import annotations

import pytest
import torch

from mechscope import HookedModel, stack
from mechscope.models.tiny import CONFIGS, VOCAB, tiny_model
from mechscope.sites import logit_head

KINDS = list(CONFIGS)
X = torch.randint(0, VOCAB, (2, 8), generator=torch.Generator().manual_seed(1))


def cached(kind: str, names=None):
    model = HookedModel(tiny_model(kind))
    with torch.no_grad():
        logits, cache = model.run_with_cache(X, names=names)
    return model, logits, cache


@pytest.mark.parametrize("kind", KINDS)
def test_embeddings_plus_every_write_equal_final_resid(kind: str) -> None:
    model, _, cache = cached(kind)
    total = cache["hook_embed"] + cache.get("hook_pos_embed", 0)
    total = total + stack(cache, "blocks.*.hook_attn_out").sum(0)
    total = total + stack(cache, "blocks.*.hook_mlp_out").sum(0)
    final = cache[f"blocks.{model.dims.n_layers - 1}.hook_resid_post"]
    torch.testing.assert_close(total, final, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        cache["blocks.0.hook_resid_pre"], cache["hook_embed"] + cache.get("hook_pos_embed", 0)
    )


@pytest.mark.parametrize("kind", KINDS)
def test_resid_chain(kind: str) -> None:
    model, _, cache = cached(kind)
    for layer in range(model.dims.n_layers):
        p = f"blocks.{layer}."
        pre, post = cache[p + "hook_resid_pre"], cache[p + "hook_resid_post"]
        if not model.dims.parallel:
            mid = cache[p + "hook_resid_mid"]
            torch.testing.assert_close(mid, pre + cache[p + "hook_attn_out"], atol=1e-6, rtol=0)
            torch.testing.assert_close(post, mid + cache[p + "hook_mlp_out"], atol=1e-6, rtol=0)
        else:
            assert p + "hook_resid_mid" not in model.sites
            want = pre + cache[p + "hook_attn_out"] + cache[p + "hook_mlp_out"]
            torch.testing.assert_close(post, want, atol=1e-5, rtol=0)
        if layer + 1 < model.dims.n_layers:
            assert torch.equal(post, cache[f"blocks.{layer + 1}.hook_resid_pre"])


def o_outputs(model: HookedModel) -> dict[int, torch.Tensor]:
    """Every layer's output-projection output, read with plain torch hooks."""
    outs: dict[int, torch.Tensor] = {}
    handles = [
        model.hf.get_submodule(f"{model.family.layers}.{i}.{model.family.o}").register_forward_hook(
            lambda _m, _a, out, i=i: outs.__setitem__(i, out.detach().clone())
        )
        for i in range(model.dims.n_layers)
    ]
    try:
        with torch.no_grad():
            model(X)
    finally:
        for h in handles:
            h.remove()
    return outs


@pytest.mark.parametrize("kind", KINDS)
def test_heads_sum_to_attn_out_and_patterns_are_distributions(kind: str) -> None:
    model, _, cache = cached(kind)
    o_out = o_outputs(model)
    sinks = hasattr(model.hf.get_submodule(f"{model.family.layers}.0.{model.family.attn}"), "sinks")
    plain = model.family.attn_write is None and model.dims.residual_scale == 1.0
    for layer in range(model.dims.n_layers):
        p = f"blocks.{layer}."
        o = model.hf.get_submodule(f"{model.family.layers}.{layer}.{model.family.o}")
        bias = o.bias if getattr(o, "bias", None) is not None else 0
        heads = cache[p + "attn.hook_result"].sum(-2) + bias
        torch.testing.assert_close(heads, o_out[layer], atol=1e-5, rtol=0)
        if plain:  # no post-norm or multiplier: the heads' sum is what attention adds
            torch.testing.assert_close(heads, cache[p + "hook_attn_out"], atol=1e-5, rtol=0)
        else:
            assert not torch.allclose(o_out[layer], cache[p + "hook_attn_out"])
        pattern = cache[p + "attn.hook_pattern"]
        if sinks:  # the sink takes the rest of each row
            assert (pattern.sum(-1) < 1).all() and (pattern.sum(-1) > 0).all()
        else:
            torch.testing.assert_close(pattern.sum(-1), torch.ones_like(pattern[..., 0]))
        assert torch.all(pattern.triu(1) == 0), "causal: no attention to later positions"


@pytest.mark.parametrize("kind", KINDS)
def test_final_norm_scale_and_normalized_rebuild_the_logits(kind: str) -> None:
    model, logits, cache = cached(kind)
    norm = model.hf.get_submodule(model.family.final_norm)
    normalized = cache["ln_final.hook_normalized"]
    x = cache[f"blocks.{model.dims.n_layers - 1}.hook_resid_post"]
    if model.dims.norm == "layer":
        x = x - x.mean(-1, keepdim=True)
    torch.testing.assert_close(normalized, x / cache["ln_final.hook_scale"])
    weight = norm.weight + model.family.norm_offset  # Gemma's norms scale by (1 + w)
    y = normalized * weight + (norm.bias if getattr(norm, "bias", None) is not None else 0)
    unembed = model.hf.get_submodule(model.family.unembed)
    torch.testing.assert_close(logit_head(model.dims, unembed(y)), logits, atol=1e-4, rtol=0)


def test_moe_expert_outputs_sum_to_mlp_out() -> None:
    model, _, cache = cached("mixtral")
    for layer in range(model.dims.n_layers):
        p = f"blocks.{layer}."
        experts = cache[p + "mlp.hook_expert_out"]
        assert experts.shape[-2] == model.dims.n_experts
        torch.testing.assert_close(experts.sum(-2), cache[p + "hook_mlp_out"], atol=1e-5, rtol=0)
        # exactly top_k experts write to each token
        assert ((experts.abs().sum(-1) > 0).sum(-1) == model.dims.top_k).all()
        router = cache[p + "mlp.hook_router_logits"]
        assert router.shape == (*X.shape, model.dims.n_experts)
