"""Greater-than: "The war lasted from the year 1732 to the year 17" -> a year after 1732.

Hanna et al. 2023 ("How does GPT-2 compute greater-than?") score the probability the model puts
on end years YY' > YY minus that on YY' <= YY (``prob_diff``); the corrupted prompt starts in year
"01", which carries no information about the end year. How years split into tokens decides how
the next token can express the answer, so the generator checks the tokenizer:

- two-digit tokens ("17" "32", as in GPT-2): the next token is the end year's last two digits;
  answer = YY + 1, wrong = YY itself, answer set = years > YY, wrong set = years <= YY (as in the
  paper);
- single digits ("1" "7" "3" "2", as in SmolLM2, Llama 2, Qwen): the next token is the end year's
  tens digit d'. Only d' > d (YY's tens digit) is surely later and d' < d surely earlier; d' = d
  could go either way (1732 -> 1738 or 1731), so it counts for neither. Answer = d + 1,
  wrong = d - 1, answer set = {d+1..9}, wrong set = {0..d-1}; YY is drawn with d in 1..8.

The corrupted prompt "1701" has the same token length as "17YY" under both splits.
"""

from __future__ import annotations

import random
from typing import Any

from mechscope.errors import MechscopeError
from mechscope.tasks.base import Task
from mechscope.tasks.vocab import (
    check_n,
    check_pool,
    need_tokenizer,
    one_token,
    pieces,
    words,
)

TEMPLATE = "The {noun} lasted from the year {century}{yy:02d} to the year {century}"
NOUNS = words(  # Hanna et al.'s event nouns, kept if one token
    "war abduction accord acquisition affair agreement alliance attack blockade boycott campaign "
    "conflict contract crisis deal dispute drought effort embargo empire epidemic expedition "
    "famine flight journey marriage migration mission occupation operation partnership "
    "pilgrimage plague program project rebellion reign relationship riot siege strike tour trade "
    "voyage"
)
CENTURIES = tuple(range(11, 18))


def digit_mode(tokenizer: Any) -> str:
    """``"two"`` if the tokenizer splits " 1732" as 17|32, ``"one"`` if as 1|7|3|2."""
    split = [p.strip() for p in pieces(tokenizer, " 1732") if p.strip()]
    if split == ["17", "32"]:
        return "two"
    if split == ["1", "7", "3", "2"]:
        return "one"
    raise MechscopeError(
        f"greater-than needs years split as 17|32 or 1|7|3|2, but this tokenizer gives {split}; "
        "write the task as a .jsonl user task instead"
    )


def make_greater_than(
    tokenizer: Any,
    n: int,
    seed: int = 0,
    *,
    uniform: bool = True,
    centuries: tuple[int, ...] = CENTURIES,
) -> Task:
    """``n`` greater-than prompts; corrupted prompts start in year XX01 (see module doc)."""
    tok = need_tokenizer(tokenizer, "greater_than")
    mode = digit_mode(tok)
    nouns = one_token(tok, NOUNS)
    check_pool(nouns, 1, "greater_than", "event nouns")
    years = range(2, 99) if mode == "two" else range(10, 90)
    check_n(n, "greater_than", len(nouns) * len(centuries) * len(years), "prompts")
    rng = random.Random(seed)
    seen: set[tuple[str, int, int]] = set()
    rows: dict[str, list[Any]] = {k: [] for k in ("clean", "corrupt", "answer", "wrong")}
    sets: dict[str, list[list[str]]] = {"answer_set": [], "wrong_set": []}
    meta: dict[str, list[int]] = {"century": [], "yy": []}
    while len(seen) < n:
        key = (rng.choice(nouns), rng.choice(centuries), rng.choice(years))
        if key in seen:
            continue
        seen.add(key)
        noun, century, yy = key
        rows["clean"].append(TEMPLATE.format(noun=noun, century=century, yy=yy))
        rows["corrupt"].append(TEMPLATE.format(noun=noun, century=century, yy=1))
        answer, wrong, good, bad = _targets(mode, yy)
        rows["answer"].append(answer)
        rows["wrong"].append(wrong)
        sets["answer_set"].append(good)
        sets["wrong_set"].append(bad)
        meta["century"].append(century)
        meta["yy"].append(yy)
    task = Task(
        name="greater_than",
        **rows,
        **sets,
        meta={"generator": "greater_than", "seed": seed, "digits": mode, **meta},
    )
    task.tokenize(tok, require_uniform=uniform)  # fail here, not in a later sweep
    return task


def _targets(mode: str, yy: int) -> tuple[str, str, list[str], list[str]]:
    """(answer, wrong, answer set, wrong set) as next-token strings for start year YY."""
    if mode == "two":
        later = [f"{v:02d}" for v in range(yy + 1, 100)]
        return f"{yy + 1:02d}", f"{yy:02d}", later, [f"{v:02d}" for v in range(yy + 1)]
    d = yy // 10
    later, earlier = [str(v) for v in range(d + 1, 10)], [str(v) for v in range(d)]
    return str(d + 1), str(d - 1), later, earlier
