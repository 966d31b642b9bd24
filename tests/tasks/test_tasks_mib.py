"""The MIB-form tasks: arithmetic (addition, subtraction) and MCQA, on a word-level tokenizer."""

from __future__ import annotations

import pytest

from mechscope.errors import MechscopeError
from mechscope.models.tiny import tiny_tokenizer
from mechscope.tasks import load_task
from mechscope.tasks.mcqa import ITEMS, LETTERS

OBJECTS, COLORS, _ = ITEMS["color"]
WORDS = [str(i) for i in range(100)] + list(LETTERS) + list(COLORS) + list(OBJECTS)
WORDS += ["Question", "The", "is", "What", "color", "the", "Answer", "tree"]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer(WORDS, n_vocab=200)


@pytest.mark.parametrize("name", ["arithmetic", "arithmetic-sub"])
def test_arithmetic(tok, name: str) -> None:
    task = load_task(name, tok, n=20, seed=3)
    batch = task.tokenize(tok)
    op = "+" if name == "arithmetic" else "-"
    for i in range(20):
        a, b, r = (task.meta[k][i] for k in ("a", "b", "result"))
        assert r == (a + b if op == "+" else a - b) and 10 <= r <= 99
        assert task.clean[i].endswith(f"{a}{op}{b}=")
        assert tok.decode([int(batch.answer_ids[i])]) == str(r)
        c, d = (int(x) for x in task.corrupt[i].split("\n")[-1].rstrip("=").split(op))
        assert tok.decode([int(batch.wrong_ids[i])]) == str(c + d if op == "+" else c - d)
        carry = (a % 10 + b % 10 >= 10) if op == "+" else (a % 10 < b % 10)
        assert task.meta["carry"][i] == int(carry)
    assert bool((batch.answer_ids != batch.wrong_ids).all())
    batch.require_aligned()


def test_mcqa(tok) -> None:
    task = load_task("mcqa", tok, n=12, seed=1)
    batch = task.tokenize(tok)
    batch.require_aligned()
    for i in range(12):
        color, pos, cpos = (task.meta[k][i] for k in ("right", "answer_pos", "corrupt_pos"))
        assert pos != cpos
        assert f"\n{LETTERS[pos]}. {color}\n" in task.clean[i] + "\n"
        assert f"\n{LETTERS[cpos]}. {color}\n" in task.corrupt[i] + "\n"
        assert task.answer[i] == " " + LETTERS[pos] and task.wrong[i] == " " + LETTERS[cpos]


def test_arithmetic_bad_operator(tok) -> None:
    from mechscope.tasks.arithmetic import make_arithmetic

    with pytest.raises(MechscopeError, match="operator must be"):
        make_arithmetic(tok, 4, operator="*")
