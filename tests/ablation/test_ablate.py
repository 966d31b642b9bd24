"""Ablations against edits of the HF weights themselves, and identities that must hold exactly."""

from __future__ import annotations

import copy

import pytest
import torch

from mechscope import HookedModel
from mechscope.ablation import (
    ABLATIONS,
    ablate,
    ablated,
    ablation_effect,
    ablation_hooks,
    all_components,
    keep_only,
    reference_cache,
)
from mechscope.ablation.resample import resample_rows
from mechscope.errors import MechscopeError
from mechscope.models.tiny import VOCAB, tiny_model
from mechscope.tasks import Task, logit_diff

G = torch.Generator().manual_seed(3)
X = torch.randint(0, VOCAB, (2, 6), generator=G)
REF = torch.randint(0, VOCAB, (3, 6), generator=G)
TOL = 1e-5


def close(a: torch.Tensor, b: torch.Tensor, atol: float = TOL) -> None:
    torch.testing.assert_close(a, b, atol=atol, rtol=0)


def edited_and_hooked(kind: str) -> tuple[torch.nn.Module, HookedModel]:
    hf = tiny_model(kind)
    return copy.deepcopy(hf), HookedModel(hf)


def layer_module(model: HookedModel, hf: torch.nn.Module, path: str, layer: int) -> torch.nn.Module:
    return hf.get_submodule(f"{model.family.layers}.{layer}.{path}")


@pytest.mark.parametrize("kind", ["gpt2", "llama", "gpt_neox", "mixtral"])
def test_zero_head_equals_zeroing_its_output_weights(kind: str) -> None:
    edited, model = edited_and_hooked(kind)
    layer, head, d = 1, 2, model.dims.d_head
    o = layer_module(model, edited, model.family.o, layer)
    with torch.no_grad():
        if isinstance(o, torch.nn.Linear):
            o.weight[:, head * d : (head + 1) * d] = 0
        else:  # GPT-2's Conv1D stores [in, out]
            o.weight[head * d : (head + 1) * d] = 0
        close(ablate(model, X, f"L{layer}H{head}"), edited(X).logits)


@pytest.mark.parametrize("kind", ["gpt2", "llama", "gpt_neox", "gpt_neox_sequential"])
def test_zero_mlp_equals_zeroing_its_down_projection_and_bias(kind: str) -> None:
    edited, model = edited_and_hooked(kind)
    down = layer_module(model, edited, model.family.mlp_out, 1)
    with torch.no_grad():
        down.weight.zero_()
        if getattr(down, "bias", None) is not None:
            down.bias.zero_()
        close(ablate(model, X, "MLP1"), edited(X).logits)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_zero_neuron_equals_zeroing_its_down_projection_column(kind: str) -> None:
    edited, model = edited_and_hooked(kind)
    down = layer_module(model, edited, model.family.mlp_out, 0)
    with torch.no_grad():
        if isinstance(down, torch.nn.Linear):
            down.weight[:, 7] = 0
        else:
            down.weight[7] = 0
        close(ablate(model, X, "L0N7"), edited(X).logits)


def z_under(model: HookedModel, hooks, tokens: torch.Tensor = X) -> torch.Tensor:
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, "blocks.1.attn.hook_z", fwd_hooks=hooks)
    return cache["blocks.1.attn.hook_z"]


def test_mean_of_the_input_itself_changes_nothing() -> None:
    model = HookedModel(tiny_model("llama"))
    one = X[:1]
    with torch.no_grad():
        close(ablate(model, one, "L0,L1,L2", "mean", reference=one), model(one))


def test_mean_values_per_position_all_positions_and_masked() -> None:
    model = HookedModel(tiny_model("llama"))
    ref = reference_cache(model, "L1H2", REF)["blocks.1.attn.hook_z"][:, :, 2]  # [ref pos d_head]
    got = z_under(model, ablation_hooks(model, "L1H2", "mean", reference_cache(model, "L1H2", REF)))
    close(got[:, :, 2], ref.mean(0).expand(2, -1, -1))
    short = REF[:, :4]  # other length: one mean over every reference position
    cache = reference_cache(model, "L1H2", short)
    got = z_under(model, ablation_hooks(model, "L1H2", "mean", cache))
    close(got[:, :, 2], cache["blocks.1.attn.hook_z"][:, :, 2].mean((0, 1)).expand(2, 6, -1))
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[1:, 4:] = 0  # only reference prompt 0 is real at positions 4, 5
    got = z_under(
        model, ablation_hooks(model, "L1H2", "mean", cache_full(model), reference_mask=mask)
    )
    close(got[:, 4:, 2], ref[0, 4:].expand(2, -1, -1))
    close(got[:, :4, 2], ref[:, :4].mean(0).expand(2, -1, -1))


def cache_full(model: HookedModel):
    return reference_cache(model, "L1H2", REF)


def test_resample_identity_changes_nothing_and_seeded_rows_match() -> None:
    model = HookedModel(tiny_model("llama"))
    with torch.no_grad():
        base = model(X)
        close(ablate(model, X, "L0,L1,L2", "resample", reference=X, seed=None), base)
    cache = reference_cache(model, "L1H2", REF)
    got = z_under(model, ablation_hooks(model, "L1H2", "resample", cache, seed=5))
    rows = resample_rows(2, 3, seed=5)
    close(got[:, :, 2], cache["blocks.1.attn.hook_z"][rows, :, 2])
    assert sorted(torch.randperm(3, generator=torch.Generator().manual_seed(5)).tolist()) == [
        0,
        1,
        2,
    ]
    with pytest.raises(MechscopeError, match="as long as the input"):
        ablate(model, X, "L1H2", "resample", reference=REF[:, :4])


@pytest.mark.parametrize("kind", list(ABLATIONS))
def test_keep_only_everything_changes_nothing(kind: str) -> None:
    model = HookedModel(tiny_model("llama"))
    with torch.no_grad():
        base = model(X)
        close(keep_only(model, X, all_components(model.dims), kind, reference=REF), base)
        close(keep_only(model, X, "L0,L1,L2", kind, reference=REF), base)


@pytest.mark.parametrize("kind", ["llama", "gpt2", "gpt_neox"])
def test_keep_only_nothing_leaves_embed_to_unembed(kind: str) -> None:
    """Only the direct path is left: embeddings plus the output biases that hook_z cannot zero."""
    model = HookedModel(tiny_model(kind))
    f = model.family
    names = ["hook_embed"] + (["hook_pos_embed"] if f.pos_embed else [])
    with torch.no_grad():
        _, cache = model.run_with_cache(X, names)
        resid = sum(cache[n] for n in names)
        for layer in range(model.dims.n_layers):
            bias = layer_module(model, model.hf, f.o, layer).bias
            resid = resid + (0 if bias is None else bias)
        want = model.hf.get_submodule(f.unembed)(model.hf.get_submodule(f.final_norm)(resid))
        close(keep_only(model, X, "", "zero"), want)


def test_context_manager_and_hooks_equal_ablate() -> None:
    model = HookedModel(tiny_model("qwen2"))
    cache = reference_cache(model, "L0H1,MLP2,L1N3", REF)
    with torch.no_grad():
        want = ablate(model, X, "L0H1,MLP2,L1N3", "mean", reference=REF)
        with ablated(model, "L0H1,MLP2,L1N3", "mean", cache):
            close(model(X), want, atol=0)


def test_ablation_effect_before_and_after() -> None:
    model = HookedModel(tiny_model("llama"))
    task = Task(
        "toy", [tuple(r) for r in X.tolist()], [tuple(r) for r in REF[:2].tolist()], [3, 4], [5, 6]
    )
    batch = task.tokenize(None)
    effect = ablation_effect(model, batch, "L2H*", "mean", reference="corrupt")
    with torch.no_grad():
        before = logit_diff(model(X), batch)
        after = logit_diff(ablate(model, X, "L2H*", "mean", reference=REF[:2]), batch)
    assert effect.before == pytest.approx(float(before.mean()), abs=TOL)
    assert effect.after == pytest.approx(float(after.mean()), abs=TOL)
    assert effect.nodes == "L2H*" and effect.change != 0
    # the change's interval and the exact sign-flip test of its per-prompt values (2 prompts: the
    # 4 patterns give p = 1/2 when both prompts move the same way, 1 otherwise)
    diff = (after - before).double().numpy()
    st = effect.stats()
    assert st["change_ci"][0] - TOL <= effect.change <= st["change_ci"][1] + TOL
    assert st["p"] == pytest.approx(0.5 if diff[0] * diff[1] > 0 else 1.0)


def test_errors() -> None:
    model = HookedModel(tiny_model("mixtral"))
    with pytest.raises(MechscopeError, match="unknown ablation"):
        ablate(model, X, "L0H0", "gaussian")
    with pytest.raises(MechscopeError, match="no site"):
        ablate(model, X, "L0N1")
    with pytest.raises(MechscopeError, match="reference cache"):
        ablation_hooks(model, "L0H0", "mean")


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_resample_rows_never_map_a_prompt_to_itself(n: int) -> None:
    """The seeded draw is a derangement: with the input as reference, every prompt is ablated."""
    for seed in range(40):
        rows = resample_rows(n, n, seed)
        assert sorted(rows.tolist()) == list(range(n))
        assert not bool((rows == torch.arange(n)).any()), (n, seed)
    assert resample_rows(3, 1, seed=0).tolist() == [0, 0, 0]  # one reference prompt: no choice
    assert resample_rows(4, 4, seed=None).tolist() == [0, 1, 2, 3]


def test_resample_against_the_input_itself_ablates_every_prompt() -> None:
    model = HookedModel(tiny_model("llama"))
    with torch.no_grad():
        base = model(X)
        got = ablate(model, X, "L0,L1,L2", "resample", seed=1)  # reference: the input
    for i in range(X.shape[0]):
        assert not torch.allclose(got[i], base[i]), i
