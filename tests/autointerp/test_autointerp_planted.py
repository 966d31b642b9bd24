"""Planted features of known meaning: the ``tokens`` explainer names each class, and every scorer
gives the true explanation a high score and another feature's explanation (the shuffled control)
a score near chance."""

from __future__ import annotations

import numpy as np
import pytest

from mechscope.autointerp import SCORERS, LexicalJudge, ScoreContext, split
from mechscope.autointerp.explain_tokens import explain_tokens
from mechscope.autointerp.planted import planted_examples, planted_windows

SEEDS = (0, 1)


@pytest.fixture(scope="module")
def planted() -> dict[int, list]:
    return {s: planted_examples(planted_windows(seed=s), seed=s) for s in SEEDS}


@pytest.mark.parametrize("seed", SEEDS)
def test_tokens_explainer_names_the_planted_class(planted: dict, seed: int) -> None:
    for feature in planted[seed]:
        text = explain_tokens(split(feature).explain)
        assert text.startswith(feature.meta["truth"]), (text, feature.meta["truth"])


def _table(features: list, scorer: str, texts: list[str], ctx: ScoreContext) -> list[float]:
    out = []
    for feature, text in zip(features, texts, strict=True):
        score = SCORERS[scorer](text, split(feature), ctx)
        assert score.error is None, score.error
        out.append(score.value)
    return out


@pytest.mark.parametrize("scorer", ["detection", "fuzzing", "simulation"])
def test_lexical_scorers_true_high_shuffled_at_chance(planted: dict, scorer: str) -> None:
    ctx = ScoreContext(LexicalJudge())
    for features in planted.values():
        truths = [f.meta["truth"] for f in features]
        true = _table(features, scorer, truths, ctx)
        shuffled = _table(features, scorer, truths[2:] + truths[:2], ctx)
        assert min(true) > 0.85, true
        chance = 0.0 if scorer == "simulation" else 0.5  # correlation vs AUROC
        assert abs(np.mean(shuffled) - chance) < 0.12, shuffled


def test_embedding_scorer_prefers_the_true_explanation(planted: dict) -> None:
    """MiniLM knows what the words mean: the true explanation beats the shuffled one on average
    and the shuffled one sits near 0.5."""
    ctx = ScoreContext(LexicalJudge())
    true, shuffled = [], []
    for features in planted.values():
        explained = [explain_tokens(split(f).explain) for f in features]
        true += _table(features, "embedding", explained, ctx)
        shuffled += _table(features, "embedding", explained[2:] + explained[:2], ctx)
    assert np.mean(true) > 0.75 and np.mean(true) - np.mean(shuffled) > 0.2, (true, shuffled)
    assert abs(np.mean(shuffled) - 0.5) < 0.15, shuffled
