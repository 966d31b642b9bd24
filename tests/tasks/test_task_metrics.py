"""Metric identities on hand-made logits, gradients, and the metric registry."""

from __future__ import annotations

import pytest
import torch

from mechscope import HookedModel, MechscopeError
from mechscope.models.tiny import VOCAB, tiny_model
from mechscope.tasks import (
    METRICS,
    Task,
    answer_logprob,
    answer_prob,
    evaluate,
    get_metric,
    kl_to_clean,
    logit_diff,
    normalized,
    prob_diff,
)
from mechscope.tasks.induction import make_induction

V = 8


@pytest.fixture
def batch():
    """Two prompts of lengths 3 and 2 (right-padded), answers 1 and 2, wrong 3 and 4."""
    task = Task(
        "toy",
        clean=[(0, 1, 2), (3, 4)],
        corrupt=[(0, 5, 2), (3, 6)],
        answer=[1, 2],
        wrong=[3, 4],
        answer_set=[[1, 5], [2]],
        wrong_set=[[3], [4, 6]],
    )
    return task.tokenize()


def logits_with(values: dict[tuple[int, int, int], float]) -> torch.Tensor:
    logits = torch.zeros(2, 3, V)
    for index, value in values.items():
        logits[index] = value
    return logits


def test_logit_diff_reads_each_prompts_last_position(batch) -> None:
    logits = logits_with({(0, 2, 1): 5.0, (0, 2, 3): 1.5, (1, 1, 2): -1.0, (1, 1, 4): 2.0})
    logits[1, 2] = 100.0  # padding: must be ignored
    logits[0, 0, 1] = 100.0  # an earlier position: must be ignored
    assert logit_diff(logits, batch).tolist() == [3.5, -3.0]


def test_probabilities(batch) -> None:
    logits = torch.randn(2, 3, V, generator=torch.Generator().manual_seed(0))
    last = torch.stack([logits[0, 2], logits[1, 1]]).softmax(-1)
    expected = last[[0, 1], [1, 2]]
    torch.testing.assert_close(answer_prob(logits, batch), expected)
    torch.testing.assert_close(answer_logprob(logits, batch), expected.log())
    diff = torch.stack([last[0, 1] + last[0, 5] - last[0, 3], last[1, 2] - last[1, 4] - last[1, 6]])
    torch.testing.assert_close(prob_diff(logits, batch), diff)


def test_kl(batch) -> None:
    gen = torch.Generator().manual_seed(1)
    clean, other = torch.randn(2, 3, V, generator=gen), torch.randn(2, 3, V, generator=gen)
    torch.testing.assert_close(kl_to_clean(clean, clean, batch), torch.zeros(2))
    p, q = clean[[0, 1], [2, 1]].log_softmax(-1), other[[0, 1], [2, 1]].log_softmax(-1)
    expected = torch.nn.functional.kl_div(q, p, log_target=True, reduction="none").sum(-1)
    torch.testing.assert_close(kl_to_clean(other, clean, batch), expected)
    assert (expected > 0).all()
    kl = get_metric("kl", clean)
    torch.testing.assert_close(kl(other, batch), expected)


def test_normalized() -> None:
    assert normalized(3.0, 3.0, -1.0) == 1.0 and normalized(-1.0, 3.0, -1.0) == 0.0
    assert normalized(1.0, 3.0, -1.0) == 0.5
    clean, corrupt = torch.tensor([2.0, 4.0]), torch.tensor([0.0, 1.0])
    torch.testing.assert_close(normalized(clean, clean, corrupt), torch.ones(2))
    torch.testing.assert_close(normalized(corrupt, clean, corrupt), torch.zeros(2))
    tie = torch.tensor([2.0, 1.0])  # prompt 0 scores the same clean and corrupted
    for args, match in (
        ((1.0, 2.0, 2.0), "equal \\("),
        ((clean, clean, tie), "equal for prompt 0"),
    ):
        with pytest.raises(MechscopeError, match=match) as exc:
            normalized(*args)
        assert "\n" not in str(exc.value)


def test_metrics_are_differentiable(batch) -> None:
    logits = torch.randn(2, 3, V, requires_grad=True)
    clean = torch.randn(2, 3, V)
    for name in ("logit_diff", "prob", "logprob", "prob_diff"):
        (grad,) = torch.autograd.grad(get_metric(name)(logits, batch).mean(), logits)
        assert grad[1, 2].abs().sum() == 0 and grad[0, 2].abs().sum() > 0, name
    (grad,) = torch.autograd.grad(get_metric("kl", clean)(logits, batch).sum(), logits)
    assert grad[0, 2].abs().sum() > 0
    (grad,) = torch.autograd.grad(logit_diff(logits, batch).sum(), logits)
    assert grad[0, 2, 1] == 1 and grad[0, 2, 3] == -1 and grad.abs().sum() == 4


def test_gradient_reaches_the_model_through_logit_diff() -> None:
    model = HookedModel(tiny_model("llama"))
    batch = make_induction(None, 3, seq_len=5, vocab=range(VOCAB)).tokenize(model)
    logits = model(batch.clean_tokens, attention_mask=batch.clean_mask)
    logit_diff(logits, batch).mean().backward()
    grads = [p.grad for p in model.hf.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    model.hf.zero_grad(set_to_none=True)
    scores = evaluate(model, batch, "kl")
    assert scores.clean.abs().max() < 1e-5 and (scores.corrupt >= 0).all()


def test_metric_errors(batch) -> None:
    logits = torch.zeros(2, 3, V)
    messages = []
    for call in (
        lambda: get_metric("logitdiff"),
        lambda: get_metric("kl"),
        lambda: get_metric("prob", logits),
        lambda: logit_diff(torch.zeros(3, 3, V), batch),
        lambda: logit_diff(torch.zeros(2, 2, V), batch),
        lambda: kl_to_clean(logits, torch.zeros(2, 2, V), batch),
        lambda: prob_diff(logits, Task("t", [(1,)], [(2,)], [1], [2]).tokenize()),
    ):
        with pytest.raises(MechscopeError) as exc:
            call()
        messages.append(str(exc.value))
    assert all("\n" not in m for m in messages)
    assert all(name in messages[0] for name in METRICS)
