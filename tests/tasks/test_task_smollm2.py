"""SmolLM2-135M-Instruct does the built-in tasks: clean logit differences against corrupted ones.

Mean logit differences, clean / corrupted, on 16 prompts (seed 0, float32, CPU) when written:
IOI 5.8 / -0.5 (ABC), -6.0 (swap); induction 10.8 / 0.4; greater-than 3.9 / -0.9 (prob_diff
0.52 / -0.72); SVA 2.9 / -2.7; capitals 9.9 / -10.3.
"""

from __future__ import annotations

import pytest

from mechscope.tasks import TASKS, evaluate, logit_diff, prob_diff, run_logits

pytestmark = pytest.mark.slow
N = 16


def test_smollm2_solves_ioi(smollm2) -> None:
    batch = TASKS["ioi"](smollm2, N, seed=0).tokenize(smollm2, require_uniform=True)
    scores = evaluate(smollm2, batch)
    print(f"ioi: clean {scores.clean_mean:.2f}, abc-corrupted {scores.corrupt_mean:.2f}")
    assert scores.clean_mean > 2 and (scores.clean > 0).float().mean() >= 0.9
    assert abs(scores.corrupt_mean) < 1
    swap = TASKS["ioi"](smollm2, N, seed=0, corruption="swap").tokenize(smollm2)
    assert evaluate(smollm2, swap).corrupt_mean < -2  # the answer flips with the subject


@pytest.mark.parametrize("name", ["induction", "sva", "capitals"])
def test_smollm2_prefers_the_answer_on_clean_prompts(name: str, smollm2) -> None:
    batch = TASKS[name](smollm2, N, seed=0).tokenize(smollm2, require_uniform=True)
    scores = evaluate(smollm2, batch)
    print(f"{name}: clean {scores.clean_mean:.2f}, corrupted {scores.corrupt_mean:.2f}")
    assert scores.clean_mean > 0 and scores.clean_mean > scores.corrupt_mean + 1


def test_smollm2_greater_than(smollm2) -> None:
    batch = TASKS["greater_than"](smollm2, N, seed=0).tokenize(smollm2, require_uniform=True)
    clean, corrupt = run_logits(smollm2, batch)
    assert logit_diff(clean, batch).mean() > logit_diff(corrupt, batch).mean() + 1
    clean_value, corrupt_value = prob_diff(clean, batch).mean(), prob_diff(corrupt, batch).mean()
    print(f"greater_than prob_diff: clean {clean_value:.2f}, corrupted {corrupt_value:.2f}")
    assert clean_value > 0 > corrupt_value
