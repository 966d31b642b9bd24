"""Logit effects: the brute-force W_out @ W_U ranking, and through the final norm the real norm's
mean change per unit of activation (finite differences in float64)."""

from __future__ import annotations

import copy

import pytest
import torch
from neuron_helpers import hooked

from mechscope.corpus import windows
from mechscope.neurons import (
    final_residuals,
    logit_effects,
    mlp_neurons,
    norm_jacobian,
    residual_directions,
    scan,
)
from mechscope.neurons.scan import JACOBIAN_WINDOWS


def down_rows(model, layer: int) -> torch.Tensor:
    """[d_mlp d_model]: what each neuron writes (GPT-2's Conv1D already stores [in out])."""
    f = model.family
    down = model.hf.get_submodule(f"{f.layers}.{layer}.{f.mlp_out}").weight.detach()
    return down if model.family.name == "gpt2" else down.T


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_neuron_logit_effects_without_norm_equal_brute_force(kind: str) -> None:
    model = hooked(kind)
    logits = down_rows(model, 1) @ model.hf.lm_head.weight.detach().T  # [d_mlp d_vocab]
    readout = mlp_neurons(model, 1)
    assert torch.equal(readout.writes, down_rows(model, 1).float())
    effects = logit_effects(model, readout.writes, 7)
    up, down = logits.topk(7), logits.topk(7, largest=False)
    assert torch.equal(effects.promote_ids, up.indices)
    assert torch.equal(effects.suppress_ids, down.indices)
    assert torch.allclose(effects.promote_values, up.values, atol=1e-5)
    assert torch.allclose(effects.suppress_values, down.values, atol=1e-5)


def mean_change(model, resid: torch.Tensor, write: torch.Tensor) -> torch.Tensor:
    """[d_vocab] mean over positions of d logits / d(activation), by central differences (float64
    outside the norm; Llama's RMSNorm computes in float32 inside, hence a step of 1e-3)."""
    norm = copy.deepcopy(model.hf.get_submodule(model.family.final_norm)).double()
    w_u = model.hf.lm_head.weight.detach().double()
    x, v = resid.double(), write.double()
    eps = 1e-3 * float(x.norm(dim=-1).mean() / v.norm())
    with torch.no_grad():
        delta = (norm(x + eps * v) - norm(x - eps * v)) / (2 * eps)  # [n d_model]
    return delta.mean(0) @ w_u.T


@pytest.mark.parametrize("kind", ["llama", "gpt2", "gpt_neox"])
def test_scan_effects_are_the_real_final_norms_change_per_unit(kind: str, corpus) -> None:
    """A scan's promote / suppress values are the mean logit change per unit of activation over
    the final residuals of its first batch (first positions left out), through the real norm."""
    model = hooked(kind)
    tokens = torch.stack(list(windows(corpus, model.tokenizer, seq_len=10, seed=0)))[:12]
    readout = mlp_neurons(model, 1, [0, 3, 5])
    vocab = model.dims.d_vocab
    result = scan(model, readout, [tokens[:10], tokens[10:]], k=2, n_logit_tokens=vocab)
    last = f"blocks.{model.dims.n_layers - 1}.hook_resid_post"  # the final norm's input
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens[:JACOBIAN_WINDOWS], names=[last])
    resid = cache[last][:, 1:].reshape(-1, model.dims.d_model)
    assert torch.allclose(final_residuals(model, tokens[:JACOBIAN_WINDOWS]), resid, atol=1e-5)
    assert result.through_norm
    for i, write in enumerate(readout.writes):
        expect = mean_change(model, resid, write)
        got = torch.zeros(vocab, dtype=torch.float64)
        got[result.effects.promote_ids[i]] = result.effects.promote_values[i].double()
        assert torch.allclose(got, expect, atol=1e-4 * float(expect.abs().max()))


def test_effect_times_activation_step_is_the_logit_change(llama) -> None:
    """For a direction d (not unit length), the write raises x . d by exactly one, so a step of
    size a along the write changes the logits by ~a * effect (one unit for every readout)."""
    d = 3 * torch.randn(llama.dims.d_model, generator=torch.Generator().manual_seed(0))
    readout = residual_directions(llama, "blocks.1.hook_resid_post", d)
    assert torch.dot(readout.writes[0], d).item() == pytest.approx(1.0, abs=1e-5)
    resid = torch.randn(40, llama.dims.d_model, generator=torch.Generator().manual_seed(1))
    effects = logit_effects(
        llama, readout.writes, llama.dims.d_vocab, jacobian=norm_jacobian(llama, resid)
    )
    got = torch.zeros(llama.dims.d_vocab, dtype=torch.float64)
    got[effects.promote_ids[0]] = effects.promote_values[0].double()
    expect = mean_change(llama, resid, readout.writes[0])
    assert torch.allclose(got, expect, atol=1e-4 * float(expect.abs().max()))


def test_no_final_norm_skips_the_jacobian(llama, corpus) -> None:
    tokens = torch.stack(list(windows(corpus, llama.tokenizer, seq_len=10, seed=0)))[:4]
    readout = mlp_neurons(llama, 1, [2])
    raw = scan(llama, readout, [tokens], k=1, through_norm=False)
    assert not raw.through_norm
    assert torch.equal(raw.effects.promote_ids, logit_effects(llama, readout.writes).promote_ids)
