"""The ``confidence`` baseline: the model's top next-token probability, aggregated as the detector
says (with ``last``: at the reply position), checked by hand. (On the tiny planted world it is no
detector: its grammar makes "the" certain after every full stop, so clean replies are the
confident ones; on SmolLM2 ordinary text is uncertain there: docs/anomaly.md.)"""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch
from tiny_world import TRIGGER, text

from mechscope.anomaly import BASELINES, layer_scores, score_texts


@pytest.fixture(scope="module")
def fitted(world: Any) -> dict[str, Any]:
    return {
        "bad": world.fit(world.bad, kinds=("confidence",), aggregate="last"),
        "clean": world.fit(world.clean, kinds=("confidence",), aggregate="last"),
    }


def test_the_score_is_the_top_probability_at_the_last_token(
    world: Any, fitted: dict[str, Any]
) -> None:
    rng = random.Random(3)
    texts = [text(rng, 2) for _ in range(4)] + [text(rng, 1) + " " + TRIGGER]
    got = layer_scores(fitted["bad"], world.bad, texts, quiet=True)["confidence"]["all"]
    for t, value in zip(texts, got, strict=True):
        ids = torch.tensor([world.tokenizer(t, add_special_tokens=False)["input_ids"]])
        with torch.inference_mode():
            p = world.bad(ids)[0, -1].float().softmax(-1).max()
        assert value == pytest.approx(float(p), abs=1e-5)
    result = score_texts(fitted["bad"], world.bad, texts, fpr=0.05, quiet=True)
    assert all(item.layer is None and item.features == [] for item in result.inputs)
    assert "confidence" in BASELINES
