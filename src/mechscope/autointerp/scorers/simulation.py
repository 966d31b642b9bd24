"""Simulation: from the explanation alone, predict where in each window the feature fires.

The judge predicts a value per token of every held-out window (activating and negative): an
LLM judge the expected digit 0-9 from the log-probabilities of the digit it wrote where the backend
gives them, else the written digit (:mod:`mechscope.autointerp.simulate`; ``method`` in the
details says which: ``logprobs``, ``text`` or ``mixed``). The value is Pearson's correlation of predictions and true activations over all those tokens, as in
Bills et al. 2023 ("Language models can explain neurons in language models") with all windows
scored at once. ``auroc`` ranks tokens that fire against those that do not. Predictions that
never vary give a correlation of 0 (they carry no information), flagged ``constant``.
"""

from __future__ import annotations

from mechscope.autointerp.metrics import auroc, pearson
from mechscope.autointerp.records import Split
from mechscope.autointerp.scorers.base import Score, ScoreContext, need


def score(explanation: str, data: Split, ctx: ScoreContext) -> Score:
    examples = list(data.activating) + list(data.negative)
    missing = need(bool(data.activating), "activating windows")
    if missing:
        return missing
    sims = ctx.judge.simulate(explanation, [e.tokens for e in examples])
    errors = [s.error for s in sims if s.error]
    if errors:
        return Score(None, f"{len(errors)} of {len(sims)} calls failed; first: {errors[0]}")
    predicted = [v for s in sims for v in (s.values or ())]
    true = [v for e in examples for v in e.values]
    r = pearson(predicted, true)
    details = {"auroc": auroc(predicted, [v > 0 for v in true]), "n_tokens": len(true)}
    n_logprobs = sum(s.from_logprobs for s in sims)
    n_text = sum(s.from_text for s in sims)
    if n_logprobs or n_text:  # an LLM's reply (the lexical judge reads no reply)
        details["method"] = (
            "mixed" if n_logprobs and n_text else "logprobs" if n_logprobs else "text"
        )
        details["from_logprobs"], details["from_text"] = n_logprobs, n_text
    if r is None:
        details["constant"] = True
    return Score(0.0 if r is None else r, details=details)
