"""Fuzzing: do the tokens marked in a window fit the explanation?

Every held-out activating window is shown twice: once with its activating tokens marked, once
with as many tokens marked at random among its non-activating ones. The judge gives P(yes) that
the marks fit; the value is the AUROC of right markings against wrong ones, ``balanced_accuracy``
thresholds at 0.5 (Paulo et al. 2024). The markings are asked in a seeded random order (as in
detection), so a call of several windows does not hold a window's two markings side by side
more often than chance.
"""

from __future__ import annotations

from mechscope.autointerp.records import Split
from mechscope.autointerp.scorers.base import Score, ScoreContext, ask_yes_no, need


def score(explanation: str, data: Split, ctx: ScoreContext) -> Score:
    rng = ctx.rng(1)
    items: list[tuple[tuple[str, ...], list[bool]]] = []
    labels: list[bool] = []
    for example in data.activating:
        right = [v > 0 for v in example.values]
        others = [i for i, on in enumerate(right) if not on]
        n = min(sum(right), len(others))
        if n == 0:
            continue
        wrong = [False] * len(right)
        for i in rng.choice(others, size=n, replace=False):
            wrong[int(i)] = True
        items += [(example.tokens, right), (example.tokens, wrong)]
        labels += [True, False]
    missing = need(bool(items), "activating windows with non-activating tokens")
    if missing:
        return missing
    return ask_yes_no(lambda i: ctx.judge.fuzz(explanation, i), items, labels, ctx, 2)
