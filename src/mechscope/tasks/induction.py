"""Induction: continue a repeated sequence of random tokens (Olsson et al. 2022).

A sequence ``s`` of ``seq_len`` distinct random tokens is followed by its first ``seq_len - 1``
tokens again. At the last position an induction head finds the earlier occurrence of the current
token and copies what followed it, so the answer is ``s[-1]``; the wrong token is a random token
that appears nowhere in the prompt. The corrupted prompt keeps ``s`` but replaces the repeat with
other random tokens, so there is nothing to copy. All prompts are ``2 * seq_len - 1`` tokens.

The task is built from token ids, so it needs no text: pass a tokenizer (tokens are drawn from its
ordinary word tokens, " word") or ``vocab=`` (any sequence of token ids, e.g. ``range(101)`` for a
tiny model without a tokenizer).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

from mechscope.errors import MechscopeError
from mechscope.tasks.base import Task
from mechscope.tasks.vocab import check_n, tokenizer_of

_WORD = re.compile(r" [A-Za-z]{3,}")


def make_induction(
    tokenizer: Any,
    n: int,
    seed: int = 0,
    *,
    seq_len: int = 20,
    vocab: Sequence[int] | None = None,
) -> Task:
    """``n`` repeated random-token prompts of ``2 * seq_len - 1`` tokens; answer = ``s[-1]``."""
    check_n(n, "induction")
    if seq_len < 2:
        raise MechscopeError(f"induction needs seq_len >= 2, got {seq_len}")
    pool = list(vocab) if vocab is not None else word_tokens(tokenizer)
    if len(set(pool)) < 2 * seq_len + 1:
        raise MechscopeError(
            f"induction needs at least {2 * seq_len + 1} distinct tokens to draw from, got "
            f"{len(set(pool))}; pass a larger vocab or a smaller seq_len"
        )
    pool = sorted(set(pool))
    rng = random.Random(seed)
    clean, corrupt, answer, wrong = [], [], [], []
    for _ in range(n):
        drawn = rng.sample(pool, 2 * seq_len + 1)
        seq, other, extra = drawn[:seq_len], drawn[seq_len : 2 * seq_len], drawn[-1]
        clean.append((*seq, *seq[:-1]))
        corrupt.append((*seq, *other[:-1]))
        answer.append(seq[-1])
        wrong.append(extra)
    meta = {"generator": "induction", "seed": seed, "seq_len": seq_len}
    return Task("induction", clean, corrupt, answer, wrong, meta=meta)


def word_tokens(tokenizer: Any) -> list[int]:
    """Ids of the tokenizer's ordinary word tokens: a space and three or more ASCII letters."""
    tok = tokenizer_of(tokenizer)
    if tok is None:
        raise MechscopeError("induction needs a tokenizer or vocab= (a list of token ids)")
    ids = list(range(len(tok)))
    texts = tok.batch_decode([[i] for i in ids])
    return [i for i, text in zip(ids, texts) if _WORD.fullmatch(text)]
