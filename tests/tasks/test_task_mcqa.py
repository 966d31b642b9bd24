"""MCQA's forms on SmolLM2's tokenizer: the prompts, the answers and the symbol counterfactual."""

from __future__ import annotations

import itertools
import re
from collections import Counter

import pytest

from mechscope.errors import MechscopeError
from mechscope.tasks.mcqa import ITEMS, LETTERS, make_mcqa

FORMS = [
    dict(zip(("chat", "letters", "choices", "shots", "items"), v))
    for v in itertools.product(
        (False, True), ("space", "bare", "paren"), (2, 4), (0, 8), ("color", "place")
    )
]


def _line(letter: str, option: str, letters: str) -> str:
    return f"\n({letter}) {option}" if letters == "paren" else f"\n{letter}. {option}"


def _question(prompt: str) -> str:
    """The asked question: the text after the last 'Question: '."""
    return prompt.rsplit("Question: ", 1)[1]


@pytest.mark.parametrize("form", FORMS, ids=lambda f: "-".join(str(v) for v in f.values()))
def test_mcqa_form(smol_tokenizer, form: dict) -> None:
    n = 8
    task = make_mcqa(smol_tokenizer, n, seed=2, **form)
    batch = task.tokenize(smol_tokenizer)
    batch.require_aligned()  # clean and corrupted prompts align token by token
    space = " " if form["letters"] == "space" else ""
    for i in range(n):
        right, pos, cpos = (task.meta[k][i] for k in ("right", "answer_pos", "corrupt_pos"))
        assert pos != cpos
        assert task.answer[i] == space + LETTERS[pos] and task.wrong[i] == space + LETTERS[cpos]
        clean, corrupt = _question(task.clean[i]), _question(task.corrupt[i])
        assert _line(LETTERS[pos], right, form["letters"]) in clean
        assert _line(LETTERS[cpos], right, form["letters"]) in corrupt
        assert len(re.findall(r"\n\(?[A-D][.)] ", clean)) == form["choices"]
        # only the two swapped options differ
        prefix = task.clean[i][: -len(clean)]
        assert task.corrupt[i].startswith(prefix)
        assert task.clean[i].count("Question: ") == form["shots"] + 1
        assert (task.clean[i].startswith("<|im_start|>")) == form["chat"]
    assert bool((batch.answer_ids != batch.wrong_ids).all())
    assert {len(smol_tokenizer(a, add_special_tokens=False)["input_ids"]) for a in task.answer} == {
        1
    }


def test_mcqa_balances_the_answer_letters(smol_tokenizer) -> None:
    task = make_mcqa(smol_tokenizer, 12, seed=0, chat=False, choices=4)
    assert Counter(task.meta["answer_pos"]) == {0: 3, 1: 3, 2: 3, 3: 3}


def test_mcqa_splits_subjects(smol_tokenizer) -> None:
    dev = make_mcqa(smol_tokenizer, 40, seed=0, split="dev", chat=False)
    test = make_mcqa(smol_tokenizer, 40, seed=0, split="test", chat=False)
    assert set(dev.meta["subject"]).isdisjoint(test.meta["subject"])
    assert set(dev.meta["subject"]) | set(test.meta["subject"]) <= set(ITEMS["color"][0])


def test_mcqa_chat_form_ends_at_the_reply(smol_tokenizer) -> None:
    task = make_mcqa(smol_tokenizer, 2, chat=True, letters="paren", shots=1)
    assert task.clean[0].endswith("<|im_start|>assistant\n(")
    assert "<|im_start|>assistant\n(B)<|im_end|>" in task.clean[0]  # the solved item's reply


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"shots": 9}, "shots must be 0-8"),
        ({"choices": 5}, "choices must be 2-4"),
        ({"letters": "A"}, "letters must be one of space, bare, paren"),
        ({"items": "capital"}, "items must be one of color, place"),
        ({"split": "train"}, "split must be 'dev', 'test' or None"),
    ],
)
def test_mcqa_bad_options(smol_tokenizer, options: dict, match: str) -> None:
    with pytest.raises(MechscopeError, match=match):
        make_mcqa(smol_tokenizer, 4, **options)
