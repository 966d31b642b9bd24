"""Automated interpretability: explain the features of a feature database and score the
explanations (detection, fuzzing, embedding, simulation) beside a shuffled control.

See docs/autointerp.md. The pieces: :mod:`.records` (plain example windows and the explain/score
split), :mod:`.explainers` (``tokens``, LLM), :mod:`.backend` (``local:MODEL``, ``openai:URL``),
:mod:`.judges` (LLM or lexical answers to the scorers' questions), :mod:`.scorers` (one file
each), :mod:`.run` (resumable runs over a database), :mod:`.planted` (ground truth).
"""

from __future__ import annotations

from mechscope.autointerp.explainers import make_explainer
from mechscope.autointerp.judges import LexicalJudge, LLMJudge
from mechscope.autointerp.records import Example, FeatureExamples, split
from mechscope.autointerp.run import explain_features, score_features
from mechscope.autointerp.scorers import SCORERS, Score, ScoreContext

__all__ = [
    "SCORERS",
    "Example",
    "FeatureExamples",
    "LLMJudge",
    "LexicalJudge",
    "Score",
    "ScoreContext",
    "explain_features",
    "make_explainer",
    "score_features",
    "split",
]
