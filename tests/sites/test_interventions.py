"""Writes propagate exactly as in the model: checked against edits of the HF weights themselves."""

from __future__ import annotations

import copy

import pytest
import torch

from mechscope import HookedModel
from mechscope.models.tiny import CONFIGS, VOCAB, tiny_model

KINDS = list(CONFIGS)
MOE = ("mixtral", "gpt_oss", "qwen2_moe", "olmoe")
DENSE = [k for k in KINDS if k not in MOE]
X = torch.randint(0, VOCAB, (2, 8), generator=torch.Generator().manual_seed(2))


def logits_with(model: HookedModel, hooks) -> torch.Tensor:
    with torch.no_grad():
        return model.run_with_hooks(X, fwd_hooks=hooks)


@pytest.mark.parametrize("kind", KINDS)
def test_writing_back_the_same_value_changes_nothing(kind: str) -> None:
    model = HookedModel(tiny_model(kind), attn="eager")
    with torch.no_grad():
        base = model(X)
    for name in model.sites:
        out = logits_with(model, [(name, lambda t, hook: t.clone())])
        torch.testing.assert_close(out, base, atol=2e-6, rtol=0, msg=name)


def o_columns(model: HookedModel, layer: int, head: int) -> slice:
    d = model.dims.d_head
    return slice(head * d, (head + 1) * d)


@pytest.mark.parametrize("kind", KINDS)
def test_zeroing_a_head_in_z_or_result_equals_zeroing_its_output_weights(kind: str) -> None:
    hf = tiny_model(kind)
    edited = copy.deepcopy(hf)
    model = HookedModel(hf)
    layer, head = 1, 2
    o = edited.get_submodule(f"{model.family.layers}.{layer}.{model.family.o}")
    with torch.no_grad():
        cols = o_columns(model, layer, head)
        if isinstance(o, torch.nn.Linear):
            o.weight[:, cols] = 0
        else:  # GPT-2 Conv1D stores [in, out]
            o.weight[cols, :] = 0
        want = edited(X).logits

    def zero_z(t, hook):
        t = t.clone()
        t[:, :, head] = 0
        return t

    got = logits_with(model, [(f"blocks.{layer}.attn.hook_z", zero_z)])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    got = logits_with(model, [(f"blocks.{layer}.attn.hook_result", zero_z)])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", DENSE)
def test_zeroing_a_neuron_equals_zeroing_its_output_weight(kind: str) -> None:
    hf = tiny_model(kind)
    edited = copy.deepcopy(hf)
    model = HookedModel(hf)
    layer, neuron = 0, 5
    down = edited.get_submodule(f"{model.family.layers}.{layer}.{model.family.mlp_out}")
    with torch.no_grad():
        if isinstance(down, torch.nn.Linear):
            down.weight[:, neuron] = 0
        else:
            down.weight[neuron, :] = 0
        want = edited(X).logits

    def zero(t, hook):
        t = t.clone()
        t[..., neuron] = 0
        return t

    got = logits_with(model, [(f"blocks.{layer}.mlp.hook_post", zero)])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def qkv_rows(model: HookedModel, which: int, head: int) -> slice:
    """The output rows of the (fused) projection that make head ``head``'s q, k or v."""
    f, dims, d = model.family, model.dims, model.dims.d_head
    n, n_kv = dims.n_heads, dims.n_kv_heads
    if f.qkv == "separate":
        start = head * d
    elif f.qkv in ("gpt2_fused", "concat"):  # [q | k | v], k and v n_kv heads wide
        start = (0, n * d, (n + n_kv) * d)[which] + head * d
    elif f.qkv == "falcon_grouped":  # per kv group [q * g | k | v]
        g = n // n_kv
        group, slot = (head // g, head % g) if which == 0 else (head, g + which - 1)
        start = (group * (g + 2) + slot) * d
    else:  # neox: per head [q k v]
        start = head * 3 * d + which * d
    return slice(start, start + d)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("which", [0, 1, 2])
def test_zeroing_q_k_or_v_of_a_head_equals_zeroing_its_projection(kind: str, which: int) -> None:
    hf = tiny_model(kind)
    edited = copy.deepcopy(hf)
    model = HookedModel(hf)
    f = model.family
    layer = 1
    head = 1 if which == 0 or model.dims.n_kv_heads > 1 else 0
    with torch.no_grad():
        path = (f.q, f.k, f.v)[which] if f.qkv == "separate" else f.q
        proj = edited.get_submodule(f"{f.layers}.{layer}.{path}")
        rows = qkv_rows(model, which, head)
        if isinstance(proj, torch.nn.Linear):
            proj.weight[rows] = 0
        else:
            proj.weight[:, rows] = 0
        if proj.bias is not None:
            proj.bias[rows] = 0
        want = edited(X).logits

    def zero(t, hook):
        t = t.clone()
        t[:, :, head] = 0
        return t

    name = f"blocks.{layer}.attn.hook_{'qkv'[which]}"
    torch.testing.assert_close(logits_with(model, [(name, zero)]), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_residual_writes_agree_across_equivalent_sites(kind: str) -> None:
    model = HookedModel(tiny_model(kind))
    v = torch.randn(model.dims.d_model, generator=torch.Generator().manual_seed(3))

    def add(t, hook):
        return t + v

    a = logits_with(model, [("blocks.0.hook_resid_post", add)])
    b = logits_with(model, [("blocks.1.hook_resid_pre", add)])
    c = logits_with(model, [("blocks.0.hook_mlp_out", add)])
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(a, c, atol=1e-5, rtol=0)
    assert (a - model(X)).abs().max() > 1e-3  # the write did something
    if not model.dims.parallel:
        m = logits_with(model, [("blocks.1.hook_resid_mid", add)])
        n = logits_with(model, [("blocks.1.hook_attn_out", add)])
        torch.testing.assert_close(m, n, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "gpt_oss"])  # sinks: rows sum < 1
def test_scores_and_pattern_writes(kind: str) -> None:
    model = HookedModel(tiny_model(kind))
    layer = 1

    def first_token_scores(t, hook):  # only key 0 is visible -> all attention on token 0
        t = torch.full_like(t, float("-inf"))
        t[..., 0] = 0.0
        return t

    def first_token_pattern(t, hook):
        t = torch.zeros_like(t)
        t[..., 0] = 1.0
        return t

    a = logits_with(model, [(f"blocks.{layer}.attn.hook_attn_scores", first_token_scores)])
    b = logits_with(model, [(f"blocks.{layer}.attn.hook_pattern", first_token_pattern)])
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert (a - model(X)).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["llama", "gemma"])
def test_final_norm_scale_write(kind: str) -> None:
    model = HookedModel(tiny_model(kind))
    a = logits_with(model, [("ln_final.hook_scale", lambda t, hook: t * 2)])
    b = logits_with(model, [("ln_final.hook_normalized", lambda t, hook: t / 2)])
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(a, model(X) / 2, atol=1e-5, rtol=0)  # no bias after RMSNorm


@pytest.mark.parametrize("kind", MOE)
def test_router_write_reroutes_tokens(kind: str) -> None:
    model = HookedModel(tiny_model(kind))
    layer = 0

    def force_experts_0_1(t, hook):
        t = torch.full_like(t, -10.0)
        t[..., 0] = 1.0
        t[..., 1] = 1.0
        return t

    with torch.no_grad():
        _, cache = model.run_with_cache(
            X,
            names=[f"blocks.{layer}.mlp.hook_expert_out"],
            fwd_hooks=[(f"blocks.{layer}.mlp.hook_router_logits", force_experts_0_1)],
        )
    written = cache[f"blocks.{layer}.mlp.hook_expert_out"].abs().sum(-1) > 0
    assert written[..., :2].all() and not written[..., 2:].any()
