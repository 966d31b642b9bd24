"""Scoping, errors, backward hooks, padding and run_from."""

from __future__ import annotations

import pytest
import torch

from mechscope import HookedModel, MechscopeError
from mechscope.models.tiny import CONFIGS, VOCAB, tiny_model
from mechscope.sites import attention

X = torch.randint(0, VOCAB, (2, 8), generator=torch.Generator().manual_seed(4))


def n_torch_hooks(hf: torch.nn.Module) -> int:
    n = 0
    for m in hf.modules():
        n += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        n += sum(len(v) for v in m.__dict__.get(attention.HOOKS_ATTR, {}).values())
    return n


@pytest.fixture(scope="module")
def model() -> HookedModel:
    return HookedModel(tiny_model("llama"))


def test_hooks_are_removed_on_exit_and_on_error(model: HookedModel) -> None:
    before = n_torch_hooks(model.hf)
    with model.hooks([("blocks.*.hook_resid_post", lambda t, h: None)]):
        assert n_torch_hooks(model.hf) > before
    assert n_torch_hooks(model.hf) == before

    def boom(t, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        model.run_with_hooks(X, fwd_hooks=[("blocks.1.attn.hook_pattern", boom)])
    assert n_torch_hooks(model.hf) == before


def test_cache_holds_only_requested_sites(model: HookedModel) -> None:
    with torch.no_grad():
        _, cache = model.run_with_cache(X, names="blocks.*.hook_resid_post")
        assert sorted(cache) == sorted(f"blocks.{i}.hook_resid_post" for i in range(3))
        _, cache = model.run_with_cache(X, names=lambda n: n.endswith("hook_z"))
        assert len(cache) == 3
        _, cache = model.run_with_cache(X, names=["hook_embed", "blocks.2.mlp.hook_post"])
        assert list(cache) == ["hook_embed", "blocks.2.mlp.hook_post"]
    with pytest.raises(KeyError, match="was not cached"):
        cache["blocks.0.hook_resid_pre"]


def test_unknown_site_names_the_nearest(model: HookedModel) -> None:
    with pytest.raises(MechscopeError, match="nearest: blocks.1.hook_resid_post"):
        model.run_with_cache(X, names=["blocks.1.hook_resid_pots"])
    with pytest.raises(MechscopeError, match="matches no site"):
        model.run_with_cache(X, names="blocks.*.hook_nothing")


def test_bad_replacements_fail_loudly(model: HookedModel) -> None:
    with pytest.raises(MechscopeError, match=r"returned shape \(2, 8\), expected \(2, 8, 48\)"):
        model.run_with_hooks(X, fwd_hooks=[("hook_embed", lambda t, h: t[..., 0])])
    with pytest.raises(MechscopeError, match="NaN"):
        model.run_with_hooks(X, fwd_hooks=[("hook_embed", lambda t, h: t * float("nan"))])


def test_bad_tokens_fail_loudly(model: HookedModel) -> None:
    with pytest.raises(MechscopeError, match="longer than the model's context of 64"):
        model(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(MechscopeError, match=r"token ids must lie in \[0, 101\)"):
        model(torch.full((1, 3), 101))


def test_backward_hooks_see_the_true_gradient(model: HookedModel) -> None:
    site = "blocks.1.attn.hook_z"
    grads: dict[str, torch.Tensor] = {}
    acts: dict[str, torch.Tensor] = {}

    def keep(t, hook):
        t.retain_grad()
        acts[hook.name] = t

    def grab(g, hook):
        grads[hook.name] = g

    with model.hooks(fwd=[(site, keep)], bwd=[(site, grab)]):
        model(X)[:, -1, 7].sum().backward()
    assert grads[site].shape == (2, 8, 6, 8)
    torch.testing.assert_close(grads[site], acts[site].grad)
    # and it equals the gradient from finite differences along a random direction
    d = torch.randn_like(acts[site])

    def shifted(eps):
        with torch.no_grad():
            hook = (site, lambda t, h: t + eps * d)
            return model.run_with_hooks(X, fwd_hooks=[hook])[:, -1, 7].sum()

    fd = (shifted(1e-3) - shifted(-1e-3)) / 2e-3
    torch.testing.assert_close((grads[site] * d).sum(), fd, atol=1e-3, rtol=1e-2)


def test_backward_hook_without_grad_is_an_error(model: HookedModel) -> None:
    with torch.no_grad(), pytest.raises(MechscopeError, match="no gradient"):
        model.run_with_hooks(X, bwd_hooks=[("blocks.0.hook_resid_post", lambda g, h: None)])


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_padded_batch_equals_unpadded_runs(kind: str) -> None:
    model = HookedModel(tiny_model(kind))
    rows = [X[0, :8], X[1, :5]]
    tokens = torch.zeros(2, 8, dtype=torch.long)
    mask = torch.zeros(2, 8, dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)], mask[i, : len(r)] = r, 1
    names = ["blocks.1.attn.hook_pattern", "blocks.1.hook_resid_post"]
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names=names, attention_mask=mask)
        for i, r in enumerate(rows):
            one, one_cache = model.run_with_cache(r[None], names=names)
            n = len(r)
            torch.testing.assert_close(logits[i, :n], one[0], atol=1e-5, rtol=0)
            for name in names:
                got = cache[name][i]
                got = got[:, :n, :n] if "pattern" in name else got[:n]
                torch.testing.assert_close(got, one_cache[name][0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_run_from_any_layer_reproduces_the_logits(kind: str) -> None:
    model = HookedModel(tiny_model(kind))
    with torch.no_grad(), model.capture_inputs() as inputs:
        logits, cache = model.run_with_cache(X, names="blocks.*.hook_resid_pre")
    with torch.no_grad():
        for layer in range(model.dims.n_layers):
            resid = cache[f"blocks.{layer}.hook_resid_pre"]
            torch.testing.assert_close(model.run_from(resid, layer, inputs), logits)
            # a batch of three variants (the run's batch tiled) gives the same rows
            tiled = model.run_from(resid.repeat(3, 1, 1), layer, inputs)
            torch.testing.assert_close(tiled[2:4], logits)
