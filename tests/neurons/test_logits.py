"""Promoted and suppressed tokens equal the brute-force W_out @ W_U ranking."""

from __future__ import annotations

import pytest
import torch
from neuron_helpers import hooked

from mechscope.neurons import logit_effects, mlp_neurons


def down_rows(model, layer: int) -> torch.Tensor:
    """[d_mlp d_model]: what each neuron writes (GPT-2's Conv1D already stores [in out])."""
    f = model.family
    down = model.hf.get_submodule(f"{f.layers}.{layer}.{f.mlp_out}").weight.detach()
    return down if model.family.name == "gpt2" else down.T


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("through_norm", [False, True])
def test_neuron_logit_effects_equal_brute_force(kind: str, through_norm: bool) -> None:
    model = hooked(kind)
    rows = down_rows(model, 1)
    if through_norm:
        norm = model.hf.get_submodule(model.family.final_norm).weight.detach()
        if model.dims.norm == "layer":  # LayerNorm centres the residual before scaling
            rows = rows - rows.mean(-1, keepdim=True)
        rows = rows * norm
    logits = rows @ model.hf.lm_head.weight.detach().T  # [d_mlp d_vocab]
    readout = mlp_neurons(model, 1)
    assert torch.equal(readout.writes, down_rows(model, 1).float())
    effects = logit_effects(model, readout.writes, 7, through_norm=through_norm)
    up, down = logits.topk(7), logits.topk(7, largest=False)
    assert torch.equal(effects.promote_ids, up.indices)
    assert torch.equal(effects.suppress_ids, down.indices)
    assert torch.allclose(effects.promote_values, up.values, atol=1e-5)
    assert torch.allclose(effects.suppress_values, down.values, atol=1e-5)


def test_through_norm_equals_the_real_final_norm_on_a_large_residual() -> None:
    """Adding c * write to a residual moves the logits by ~c * effect / scale (RMSNorm)."""
    model = hooked("llama")
    write = mlp_neurons(model, 2, [3]).writes  # [1 d_model]
    norm, w_u = model.hf.model.norm, model.hf.lm_head.weight.detach()
    base = torch.randn(model.dims.d_model, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        delta = w_u @ (norm(base + 1e-3 * write[0]) - norm(base))
    scale = base.pow(2).mean().add(norm.variance_epsilon).sqrt()
    effects = logit_effects(model, write, model.dims.d_vocab)
    predicted = torch.zeros(model.dims.d_vocab)
    predicted[effects.promote_ids[0]] = effects.promote_values[0]
    # the norm's rescaling adds a term along the residual itself; remove it by projection
    along = w_u @ (norm.weight.detach() * base) / scale
    coef = torch.dot(delta - 1e-3 * predicted / scale, along) / along.dot(along)
    assert torch.allclose(delta - coef * along, 1e-3 * predicted / scale, atol=1e-5)
