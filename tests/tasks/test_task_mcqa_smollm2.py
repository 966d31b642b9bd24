"""SmolLM2-135M-Instruct does not do MCQA in any form tried (docs/causal.md), though it reads the
fact: the finding the docs report, pinned on 16 held-out items of MIB's form and of the form
chosen on dev items (chat template, one solved item, four choices, bare letters).

Measured when written: MIB's form, letter logit difference -0.01, choice accuracy 0.25, one
letter for 16 of 16 items; the chat form -0.13 / 0.19 / 15 of 16; the question without choices
puts the right colour 1.85 logits above the mean of the other three options.
"""

from __future__ import annotations

import pytest
import torch

from mechscope.tasks.mcqa import make_mcqa
from mechscope.tasks.metrics import last_logits

pytestmark = pytest.mark.slow
N = 16
FORMS = {
    "mib": {"shots": 1, "choices": 4, "letters": "space", "chat": False},
    "chat": {"shots": 1, "choices": 4, "letters": "bare", "chat": True},
}


def _letters(model, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per item: logit difference (right letter - mean of the others), picked and right letter."""
    task = make_mcqa(model.tokenizer, N, seed=1, split="test", **FORMS[name])
    batch = task.tokenize(model)
    with torch.no_grad():
        last = last_logits(model(batch.clean_tokens, batch.clean_mask), batch)
    space = " " if FORMS[name]["letters"] == "space" else ""
    ids = torch.tensor([model.tokenizer(space + x)["input_ids"][0] for x in "ABCD"])
    among = last[:, ids]
    right = torch.tensor(task.meta["answer_pos"])
    ld = among[torch.arange(N), right] - (among.sum(1) - among[torch.arange(N), right]) / 3
    return ld, among.argmax(1), right


@pytest.mark.parametrize("name", list(FORMS))
def test_smollm2_answers_one_letter_whatever_the_question(smollm2, name: str) -> None:
    ld, picked, right = _letters(smollm2, name)
    accuracy = float((picked == right).float().mean())
    favourite = int(picked.bincount().max())
    print(f"mcqa {name}: letter logit diff {ld.mean():.2f}, choice accuracy {accuracy:.2f}, "
          f"favourite letter {'ABCD'[int(picked.mode().values)]} {favourite} of {N}")  # fmt: skip
    assert abs(float(ld.mean())) < 0.5  # the letters are balanced: no preference for the right one
    assert accuracy <= 0.4 and favourite >= 0.85 * N


def test_smollm2_reads_the_fact(smollm2) -> None:
    task = make_mcqa(smollm2.tokenizer, N, seed=1, split="test", chat=False)
    diffs = []
    for subject, right, options in zip(*(task.meta[k] for k in ("subject", "right", "options"))):
        prompt = f"Question: The {subject} is {right}. What color is the {subject}?\nAnswer:"
        with torch.no_grad():
            logits = smollm2(torch.tensor([smollm2.tokenizer(prompt)["input_ids"]]))[0, -1]
        values = logits[[smollm2.tokenizer(" " + o)["input_ids"][0] for o in options]]
        r = values[options.index(right)]
        diffs.append(float(r - (values.sum() - r) / 3))
    print(f"cloze: right colour - other options {sum(diffs) / N:.2f}")
    assert sum(diffs) / N > 1.0
