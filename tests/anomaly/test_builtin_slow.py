"""On the built-in model, with a small budget: German text is far from the English trusted docs."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.mark.slow
def test_builtin_model_flags_another_language(smollm2: Any) -> None:
    from mechscope.anomaly import FitConfig, fit_detector, layer_scores, separation
    from mechscope.corpus import load_corpus
    from mechscope.toys.backdoor import german_passages, passages

    corpus = load_corpus()
    cfg = FitConfig(kinds=("mahalanobis",), layers=(20,), seq_len=32, n_tokens=1280)
    detector = fit_detector(smollm2, corpus, cfg, quiet=True)
    clean = passages(smollm2, corpus, "test", 8, 32, seed=1)
    german = german_passages(8, words=20)
    pos = layer_scores(detector, smollm2, german, quiet=True)["mahalanobis"]["all"]
    neg = layer_scores(detector, smollm2, clean, quiet=True)["mahalanobis"]["all"]
    assert separation(pos, neg).auroc >= 0.9
