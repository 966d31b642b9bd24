"""Two-digit arithmetic in MIB's form (Mueller et al. 2025; after Stolfo et al. 2023):
"12+35=47\\n21+14=35\\n23+45=" -> the first token of "68".

As in MIB's arithmetic task, each clean prompt has one answer token and its corrupted twin is a
random other problem of the same form (MIB's ``random_counterfactual``) whose own answer is the
wrong token, so the logit difference measures whether the model computes *this* sum. Operands are
two-digit and results two-digit (10..99), so with digit-by-digit tokenizers (SmolLM2, Llama 2)
the answer token is the tens digit, which depends on the carry (addition) or borrow
(subtraction); ``meta`` records ``a``, ``b``, ``result`` and ``carry`` per prompt. Two solved
examples come first (the small built-in model needs them to answer at all). A corrupted problem is
redrawn until its answer token differs and its prompt has the clean prompt's token length.
"""

from __future__ import annotations

import random
from typing import Any

from mechscope.errors import MechscopeError
from mechscope.tasks.base import Task
from mechscope.tasks.vocab import check_n, encode, need_tokenizer

SHOTS = {"+": "12+35=47\n21+14=35\n", "-": "47-12=35\n68-21=47\n"}


def _problem(rng: random.Random, op: str) -> tuple[int, int, int]:
    while True:
        a, b = rng.randrange(10, 100), rng.randrange(10, 100)
        r = a + b if op == "+" else a - b
        if 10 <= r <= 99:
            return a, b, r


def make_arithmetic(
    tokenizer: Any, n: int, seed: int = 0, *, operator: str = "+", shots: bool = True
) -> Task:
    """``n`` two-digit problems with ``operator`` ``"+"`` or ``"-"`` (see the module doc)."""
    if operator not in SHOTS:
        raise MechscopeError(f"operator must be '+' or '-', not {operator!r}")
    check_n(n, "arithmetic")
    tok = need_tokenizer(tokenizer, "arithmetic")
    prefix = SHOTS[operator] if shots else ""
    rng = random.Random(seed)
    rows: dict[str, list[Any]] = {k: [] for k in ("clean", "corrupt", "answer", "wrong")}
    meta: dict[str, list[int]] = {"a": [], "b": [], "result": [], "carry": []}
    for _ in range(n):
        a, b, r = _problem(rng, operator)
        clean = f"{prefix}{a}{operator}{b}="
        answer = encode(tok, str(r))[0]
        for _try in range(200):
            c, d, s = _problem(rng, operator)
            corrupt = f"{prefix}{c}{operator}{d}="
            wrong = encode(tok, str(s))[0]
            if wrong != answer and len(encode(tok, corrupt)) == len(encode(tok, clean)):
                break
        else:
            raise MechscopeError(
                "arithmetic: no corrupted problem of the clean prompt's token length with another "
                "answer token for this tokenizer; write the task as a .jsonl user task"
            )
        for key, value in zip(rows, (clean, corrupt, answer, wrong)):
            rows[key].append(value)
        carry = (a % 10 + b % 10 >= 10) if operator == "+" else (a % 10 < b % 10)
        for key, value in zip(meta, (a, b, r, int(carry))):
            meta[key].append(value)
    name = "arithmetic" if operator == "+" else "arithmetic-sub"
    task = Task(name=name, **rows, meta={"generator": name, "seed": seed, **meta})
    task.tokenize(tok)  # fail here, not in a later sweep
    return task
