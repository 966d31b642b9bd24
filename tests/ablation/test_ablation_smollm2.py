"""SmolLM2-135M on IOI (8 prompts): ablating late heads moves the logit difference, and path
patching to the logits finds its largest direct effects in late layers (the name movers')."""

from __future__ import annotations

import pytest
import torch

from mechscope.ablation import ablation_effect
from mechscope.patching.path import path_patch_heads
from mechscope.tasks import TaskBatch, load_task, logit_diff

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ioi(smollm2) -> TaskBatch:
    return load_task("ioi", smollm2, n=8).tokenize(smollm2)


def test_zero_ablating_the_last_three_layers_heads_changes_the_logit_diff(smollm2, ioi) -> None:
    effect = ablation_effect(smollm2, ioi, "L27H*,L28H*,L29H*", "zero")
    print(f"\nIOI logit diff {effect.before:.3f} -> {effect.after:.3f} (zero, L27-29 heads)")
    assert effect.before > 1
    assert abs(effect.change) > 0.1


def test_path_patching_heads_to_logits_top_heads_are_late(smollm2, ioi) -> None:
    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logit_diff(logits, ioi)

    result = path_patch_heads(
        smollm2,
        ioi.clean_tokens,
        ioi.corrupt_tokens,
        metric,
        "logits",
        attention_mask=ioi.clean_mask,
        quiet=True,
    )
    assert result.values.shape == (30, 9)
    effect = result.values - result.clean  # noising: the drop (or rise) each head's path causes
    top = effect.flatten().abs().argsort(descending=True)[:5]
    heads = [divmod(int(i), 9) for i in top]
    print(f"\nclean {result.clean:.3f}, corrupted {result.corrupt:.3f}; top 5 heads -> logits:")
    for layer, head in heads:
        print(
            f"  L{layer}H{head}: patched {float(result.values[layer, head]):.3f}, "
            f"effect {float(effect[layer, head]):+.3f}, "
            f"normalised {float(result.normalized()[layer, head]):.3f}"
        )
    assert all(layer >= 15 for layer, _ in heads)
    assert float(effect.min()) < -0.5  # some head's direct path carries the answer
