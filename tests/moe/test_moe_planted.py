"""Planted ground truth: a small MoE trained with experts forced to serve known token classes;
the analyses must recover the plan, and the causal check must point at the same experts."""

from __future__ import annotations

import pytest
import torch

from mechscope.moe import linear_cka, moe_analysis
from mechscope.moe.planted import chain_batch


def test_the_planted_model_learned_its_task(planted) -> None:
    assert planted.final_loss < 0.05


@pytest.mark.parametrize("case", ["planted", "planted_three"])
def test_specialisation_recovers_the_plan(case: str, request: pytest.FixtureRequest) -> None:
    planted = request.getfixturevalue(case)
    ids = torch.tensor(sorted(planted.classes))
    starts = ids[torch.randint(len(ids), (16,), generator=torch.Generator().manual_seed(7))]
    windows = chain_batch(planted.successor, starts, 12)  # fresh start tokens (seed 7)
    r = moe_analysis(planted.model, windows, classes=planted.classes,
                     class_names=planted.class_names, cka_windows=0, causal_windows=0)  # fmt: skip
    d = r.to_dict()
    n, k = d["n_experts"], d["top_k"]
    for layer in d["layers"]:
        spec = layer["specialisation"]["token_class"]
        assert spec["labels"] == planted.class_names
        for name, ratio in zip(spec["labels"], spec["ratio"], strict=True):
            assert max(range(n), key=ratio.__getitem__) == planted.plan[name]
            assert ratio[planted.plan[name]] == n / k  # every token of the class goes there
    heat = r.class_load()  # [layer class expert]
    plan = torch.tensor([planted.plan[c] for c in planted.class_names])
    assert torch.equal(heat.argmax(-1), plan.expand(heat.shape[0], -1))


def test_ablation_hurts_the_class_its_expert_serves(planted, planted_windows) -> None:
    r = moe_analysis(planted.model, planted_windows, classes=planted.classes,
                     class_names=planted.class_names, cka_windows=0, causal_windows=16)  # fmt: skip
    by_class = r.effects.ablate_by_label  # [layer expert class]
    served = {planted.plan[c]: i for i, c in enumerate(planted.class_names)}
    hits = 0
    for layer in range(by_class.shape[0]):
        for e in range(by_class.shape[1]):
            if by_class[layer, e].max() > 0.02:  # an expert the model needs
                assert int(by_class[layer, e].argmax()) == served[e]
                hits += 1
    assert hits >= 4


def test_linear_cka_identities() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=g)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g))
    assert abs(linear_cka(x, 3 * x @ q + 1) - 1) < 1e-9  # rotation, scale and shift invariant
    assert linear_cka(x, torch.randn(200, 6, generator=g)) < 0.2
