"""Detection: given the explanation, can the judge tell activating windows from others?

The judge sees each held-out window (activating ones and negatives, unmarked) and gives P(yes)
that it contains what the explanation describes. The value is the AUROC of P(yes) for activating
against non-activating windows; ``balanced_accuracy`` thresholds P(yes) at 0.5 (Paulo et al. 2024,
"Automatically Interpreting Millions of Features in Large Language Models"). The windows are
asked in a seeded random order, so that a judge call of several windows (``per_call``) mixes the
two kinds; the order does not change a one-window-per-call score.
"""

from __future__ import annotations

from mechscope.autointerp.records import Split
from mechscope.autointerp.scorers.base import Score, ScoreContext, ask_yes_no, need


def score(explanation: str, data: Split, ctx: ScoreContext) -> Score:
    windows = [e.tokens for e in data.activating] + [e.tokens for e in data.negative]
    labels = [True] * len(data.activating) + [False] * len(data.negative)
    missing = need(bool(data.activating and data.negative), "activating and negative windows")
    if missing:
        return missing
    return ask_yes_no(lambda w: ctx.judge.detect(explanation, w), windows, labels, ctx, 3)
