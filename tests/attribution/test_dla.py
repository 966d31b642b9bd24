"""Direct logit attribution: the components sum to the model's own logit difference.

Identities checked on a tiny model of every family (and on SmolLM2 with an IOI batch):
embeddings + attention layers + MLP layers + constant == logit difference; heads + output bias ==
attention layer; neurons + down-projection bias == MLP layer (experts == MLP layer for MoE).
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from mechscope import HookedModel
from mechscope.attribution import DLAResult, direct_logit_attribution
from mechscope.errors import MechscopeError
from mechscope.models.tiny import CONFIGS, VOCAB, tiny_model
from mechscope.tasks.base import TaskBatch

B, P = 3, 6
TOL = 1e-4  # tiny logit differences are ~0.1-1; the identities hold to float32 rounding


@pytest.fixture(scope="module", params=list(CONFIGS))
def tiny(request: pytest.FixtureRequest) -> HookedModel:
    return HookedModel(tiny_model(request.param))


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (B, P), generator=g)
    answer = torch.randint(0, VOCAB, (B,), generator=g)
    wrong = (answer + 1 + torch.randint(0, VOCAB - 1, (B,), generator=g)) % VOCAB
    return tokens, answer, wrong


def as_batch(
    tokens: torch.Tensor,
    answer: torch.Tensor,
    wrong: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> TaskBatch:
    """A TaskBatch of right-padded prompts (clean = corrupted: DLA reads the clean run)."""
    mask = torch.ones_like(tokens) if mask is None else mask
    last = mask.sum(-1) - 1
    return TaskBatch("toy", tokens, tokens, mask, mask, answer, wrong, last, last)


def padded() -> TaskBatch:
    tokens, answer, wrong = inputs()
    mask = torch.ones_like(tokens)
    mask[0, 4:] = 0
    mask[2, 3:] = 0
    return as_batch(tokens, answer, wrong, mask)


def check_identities(model: HookedModel, r: DLAResult, tol: float) -> None:
    n, b = model.dims.n_layers, r.logit_diff.shape[0]
    assert r.attn.shape == r.mlp.shape == (n, b)
    assert r.heads.shape == (n, model.dims.n_heads, b)
    assert r.logit_diff.abs().max() > 10 * tol  # the identity is not trivially 0 == 0
    torch.testing.assert_close(r.total(), r.logit_diff, atol=tol, rtol=0)
    torch.testing.assert_close(r.heads.sum(1) + r.attn_bias, r.attn, atol=tol, rtol=0)
    if model.family.moe is None:
        assert r.neurons is not None and r.neurons.shape == (n, model.dims.d_mlp, b)
        torch.testing.assert_close(r.neurons.sum(1) + r.mlp_bias, r.mlp, atol=tol, rtol=0)
    else:
        assert r.experts is not None and r.neurons is None
        torch.testing.assert_close(r.experts.sum(1) + r.mlp_bias, r.mlp, atol=tol, rtol=0)
    for name, axes in r.axes.items():
        value = getattr(r, name)
        assert value is None or value.ndim == len(axes), name


def test_components_sum_to_logit_diff(tiny: HookedModel) -> None:
    tokens, answer, wrong = inputs()
    r = direct_logit_attribution(tiny, as_batch(tokens, answer, wrong))
    check_identities(tiny, r, TOL)
    logits = tiny(tokens)[:, -1]
    cap = tiny.dims.logit_softcap
    if cap is not None:  # Gemma 2: DLA attributes the logits before the soft cap
        logits = cap * torch.atanh(logits.double() / cap)
        assert (logits.float() - tiny(tokens)[:, -1]).abs().max() > 1e-3  # the cap mattered
    rows = torch.arange(B)
    torch.testing.assert_close(
        r.logit_diff, (logits[rows, answer] - logits[rows, wrong]).float(), atol=1e-5, rtol=1e-4
    )


def test_padded_batch_reads_each_prompt_at_its_last_token() -> None:
    model = HookedModel(tiny_model("gpt2"))  # learned positions and LayerNorm: the hard case
    batch = padded()
    r = direct_logit_attribution(model, batch)
    assert r.pos.tolist() == [3, 5, 2]
    check_identities(model, r, TOL)
    tokens, answer, wrong = batch.clean_tokens, batch.answer_ids, batch.wrong_ids
    for i, length in enumerate((4, 6, 3)):
        one = as_batch(tokens[i : i + 1, :length], answer[i : i + 1], wrong[i : i + 1])
        alone = direct_logit_attribution(model, one)
        torch.testing.assert_close(r.heads[..., i], alone.heads[..., 0], atol=1e-5, rtol=0)
        torch.testing.assert_close(r.embed[i], alone.embed[0], atol=1e-5, rtol=0)


def test_explicit_positions_and_bad_inputs() -> None:
    model = HookedModel(tiny_model("llama"))
    tokens, answer, wrong = inputs()
    batch = as_batch(tokens, answer, wrong)
    r = direct_logit_attribution(model, batch, pos=torch.tensor([1, 2, 3]))
    assert r.pos.tolist() == [1, 2, 3]
    check_identities(model, r, TOL)
    with pytest.raises(MechscopeError, match="one position"):
        direct_logit_attribution(model, batch, pos=torch.tensor([1, 2, 9]))
    with pytest.raises(MechscopeError, match="answer ids"):
        direct_logit_attribution(model, as_batch(tokens, answer[:2], wrong[:2]))
    with pytest.raises(MechscopeError, match="carries its own"):
        direct_logit_attribution(model, batch, attention_mask=torch.ones_like(tokens))
    with pytest.raises(MechscopeError, match="takes a TaskBatch"):
        direct_logit_attribution(model, tokens.tolist())  # type: ignore[arg-type]
    assert direct_logit_attribution(model, batch, neurons=False).neurons is None
    d = json.loads(json.dumps(r.to_dict()))
    assert d["experts"] is None and len(d["heads"]) == model.dims.n_layers
    assert d["axes"]["heads"] == ["layer", "head", "batch"]


def test_token_form_warns_and_gives_the_same_numbers() -> None:
    """The deprecated form (tokens, answer ids, wrong ids, attention_mask=) still works; the
    TaskBatch form gives identical results without a warning."""
    model = HookedModel(tiny_model("gpt2"))
    batch = padded()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        new = direct_logit_attribution(model, batch)
    with pytest.warns(DeprecationWarning, match="pass a TaskBatch"):
        old = direct_logit_attribution(
            model, batch.clean_tokens, batch.answer_ids, batch.wrong_ids,
            attention_mask=batch.clean_mask,
        )  # fmt: skip
    for name in (*new.axes, "pos"):
        a, b = getattr(new, name), getattr(old, name)
        assert (a is None) == (b is None) and (a is None or torch.equal(a, b)), name
    with pytest.warns(DeprecationWarning), pytest.raises(MechscopeError, match="wrong_ids"):
        direct_logit_attribution(model, batch.clean_tokens, batch.answer_ids)


@pytest.mark.slow
def test_smollm2_ioi_identities(smollm2: HookedModel) -> None:
    from mechscope.tasks import load_task

    batch = load_task("ioi", smollm2, n=8).tokenize(smollm2)
    r = direct_logit_attribution(smollm2, batch)
    assert r.pos.tolist() == batch.last_pos.tolist()
    check_identities(smollm2, r, 1e-3)
    assert r.logit_diff.mean() > 0  # SmolLM2 prefers the indirect object
