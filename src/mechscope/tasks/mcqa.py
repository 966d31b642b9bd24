"""Multiple-choice answer selection (MCQA) in MIB's form, with mechscope's own items.

MIB's MCQA task (after Wiegreffe et al. 2025, "Answer, assemble, ace") states a fact and asks for
it back among four lettered choices: "Question: The ball is red. What color is the ball?\\nA. blue
\\nB. red\\nC. green\\nD. pink\\nAnswer:" -> " B". As in MIB's symbol counterfactual, the corrupted
prompt is the same question with the choices in another order, so the right colour sits under
another letter: the wrong token is that letter, and a circuit must carry *which letter*, not the
colour. Objects and colours are mechscope's lists, kept if one token after a space. One solved
example comes first; ``meta`` records the object, colour and both answer positions.
"""

from __future__ import annotations

import random
from typing import Any

from mechscope.errors import MechscopeError
from mechscope.tasks.base import Task
from mechscope.tasks.vocab import check_n, check_pool, encode, need_tokenizer, one_token, words

LETTERS = ("A", "B", "C", "D")
SHOT = "Question: The tree is green. What color is the tree?\nA. red\nB. green\nC. blue\nD. white\nAnswer: B\n\n"  # fmt: skip
OBJECTS = words("ball car hat cup book box pen shirt door chair bag lamp kite bike boat shoe")
COLORS = words("red blue green yellow black white brown pink purple orange gray")


def _prompt(obj: str, color: str, choices: list[str]) -> str:
    lines = "".join(f"\n{letter}. {c}" for letter, c in zip(LETTERS, choices))
    return f"{SHOT}Question: The {obj} is {color}. What color is the {obj}?{lines}\nAnswer:"


def make_mcqa(tokenizer: Any, n: int, seed: int = 0) -> Task:
    """``n`` four-choice questions (see the module docstring)."""
    check_n(n, "mcqa")
    tok = need_tokenizer(tokenizer, "mcqa")
    if any(len(encode(tok, " " + x)) != 1 for x in LETTERS):
        raise MechscopeError("mcqa needs ' A' .. ' D' to be one token each for this tokenizer")
    objects, colors = one_token(tok, OBJECTS), one_token(tok, COLORS)
    check_pool(objects, 1, "mcqa", "objects")
    check_pool(colors, 4, "mcqa", "colours")
    rng = random.Random(seed)
    rows: dict[str, list[Any]] = {k: [] for k in ("clean", "corrupt", "answer", "wrong")}
    meta: dict[str, list[Any]] = {"object": [], "color": [], "answer_pos": [], "corrupt_pos": []}
    for _ in range(n):
        obj, choices = rng.choice(objects), rng.sample(colors, 4)
        pos, cpos = rng.sample(range(4), 2)
        moved = list(choices)
        moved[pos], moved[cpos] = moved[cpos], moved[pos]  # the right colour moves to cpos
        rows["clean"].append(_prompt(obj, choices[pos], choices))
        rows["corrupt"].append(_prompt(obj, choices[pos], moved))
        rows["answer"].append(" " + LETTERS[pos])
        rows["wrong"].append(" " + LETTERS[cpos])
        for key, value in zip(meta, (obj, choices[pos], pos, cpos)):
            meta[key].append(value)
    task = Task(name="mcqa", **rows, meta={"generator": "mcqa", "seed": seed, **meta})
    task.tokenize(tok)  # fail here (an unequal pair names itself), not in a later sweep
    return task
