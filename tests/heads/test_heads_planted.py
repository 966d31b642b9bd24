"""Planted ground truth: the detectors on a toy attention-only model trained to do induction.

The truth is measured by intervention (:func:`mechscope.ablation.ablate`, zero ablation of one
head's ``hook_z``): the in-context loss drop is the loss on the first copy of a repeated random
sequence minus the loss on the second copy. Measured (seed 0, one thread): 800 steps,
~65 s of training, so the file is marked slow; in-context drop 11.4 nats; single-head ablation
removes 7.4 (previous-token head L0H3), 3.9 (L1H0, induction score 0.94), 1.4 (L1H3, 0.89), < 0.1
(the others); ablating all of layer 1 removes all of it.
"""

from __future__ import annotations

import pytest
import torch

from mechscope.ablation import ablate
from mechscope.heads import composition_scores, head_scores, ov_copying_scores, repeated_tokens

pytestmark = pytest.mark.slow
SEQ = 12


def in_context_drop(logits: torch.Tensor, tokens: torch.Tensor) -> float:
    """Mean loss on the first copy minus the mean loss on the second copy (excluding its first)."""
    logp = logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]
    return float(-logp[:, : SEQ - 1].mean() + logp[:, SEQ:].mean())


@pytest.fixture(scope="module")
def measured(toy_induction):
    toy = toy_induction
    model, steps, ema = toy["model"], toy["steps"], toy["loss"]
    tokens = repeated_tokens(model, 32, SEQ, seed=1, pool=range(toy["vocab"]))
    scores = head_scores(model, ["induction", "previous_token", "duplicate_token"], tokens=tokens)
    with torch.no_grad():
        clean = in_context_drop(model(tokens), tokens)
        effect = torch.zeros(2, 4)
        for layer in range(2):
            for head in range(4):
                logits = ablate(model, tokens, f"L{layer}H{head}")
                effect[layer, head] = clean - in_context_drop(logits, tokens)
        all_l1 = in_context_drop(ablate(model, tokens, "L1H*"), tokens)
    return model, steps, ema, toy["stop"], scores, clean, effect, all_l1


def test_toy_learned_induction(measured) -> None:
    _, steps, ema, stop, _, clean, _, _ = measured
    assert ema < stop, f"did not learn in {steps} steps"
    assert clean > 3.0  # the second copy is predicted far better than the (random) first


def test_induction_detector_ranks_the_ablation_head_first(measured) -> None:
    _, _, _, _, scores, clean, effect, all_l1 = measured
    (layer, head, score), *_ = scores.top("induction", 8)
    assert layer == 1 and score > 0.8
    # The ground truth: of the heads that write the copied token (layer 1), the top-ranked
    # induction head is the one whose ablation removes the most of the in-context drop ...
    assert int(effect[1].argmax()) == head
    assert effect[1, head] > 2 * effect[1].sort().values[-2]
    # ... and together the layer-1 heads carry all of it.
    assert all_l1 < 0.1 * clean


def test_previous_token_head_is_the_one_induction_needs(measured) -> None:
    model, _, _, _, scores, clean, effect, _ = measured
    (layer, head, score), *_ = scores.top("previous_token", 8)
    assert layer == 0 and score > 0.5
    # Ablating the previous-token head alone destroys induction (K-composition, Olsson et al.)
    assert effect[0, head] > 0.5 * clean
    assert int(effect[0].argmax()) == head
    # and the weights show it: it K-composes most with the top induction head.
    _, ind_head, _ = scores.top("induction", 1)[0]
    k_comp = composition_scores(model, "k")[0, :, 1, ind_head]
    assert int(k_comp.argmax()) == head
    assert float(ov_copying_scores(model)[1, ind_head]) > 0.9  # it copies what it attends to


def test_duplicate_token_is_not_induction(measured) -> None:
    _, _, _, _, scores, *_ = measured
    assert float(scores.scores["duplicate_token"].max()) < 0.3
