"""Detection: given the explanation, can the judge tell activating windows from others?

The judge sees each held-out window (activating ones and negatives, unmarked) and gives P(yes)
that it contains what the explanation describes. The value is the AUROC of P(yes) for activating
against non-activating windows; ``balanced_accuracy`` thresholds P(yes) at 0.5 (Paulo et al. 2024,
"Automatically Interpreting Millions of Features in Large Language Models").
"""

from __future__ import annotations

from mechscope.autointerp.metrics import auroc, balanced_accuracy
from mechscope.autointerp.records import Split
from mechscope.autointerp.scorers.base import Score, ScoreContext, failed, need


def score(explanation: str, data: Split, ctx: ScoreContext) -> Score:
    windows = [e.tokens for e in data.activating] + [e.tokens for e in data.negative]
    labels = [True] * len(data.activating) + [False] * len(data.negative)
    missing = need(bool(data.activating and data.negative), "activating and negative windows")
    if missing:
        return missing
    replies = ctx.judge.detect(explanation, windows)
    bad = failed(replies)
    if bad:
        return bad
    p = [r.p_yes for r in replies]
    return Score(
        auroc(p, labels),
        details={
            "balanced_accuracy": balanced_accuracy([x > 0.5 for x in p], labels),
            "n": len(p),
        },
    )
