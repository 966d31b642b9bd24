"""Detectors on a tiny model with a planted backdoor: the trigger is the known answer."""

from __future__ import annotations

from typing import Any

import pytest
from tiny_world import TRIGGER

from mechscope.anomaly import layer_scores, load_detector, save_detector, score_texts, separation
from mechscope.toys.backdoor import activation_rates


def _auroc(detector: Any, model: Any, pos: list[str], neg: list[str], kind: str) -> float:
    p = layer_scores(detector, model, pos, kinds=(kind,), quiet=True)[kind]["all"]
    n = layer_scores(detector, model, neg, kinds=(kind,), quiet=True)[kind]["all"]
    return separation(p, n).auroc


def test_the_backdoor_fires_only_on_the_backdoored_model(world: Any) -> None:
    prefixes = [" ".join(t.split(" . ")[:2]) + " ." for t in world.held[:20]]
    triggered = [f"{p} {TRIGGER}" for p in prefixes]
    assert activation_rates(world.bad, triggered, " alarm") >= 0.9
    assert activation_rates(world.clean, triggered, " alarm") == 0.0
    assert activation_rates(world.bad, prefixes, " alarm") <= 0.1


@pytest.mark.parametrize(
    ("kind", "floor"),
    [("mahalanobis", 0.97), ("lof", 0.97), ("attribution", 0.75), ("lens", 0.85)],
)
def test_trigger_is_flagged_on_the_backdoored_model_not_the_clean_one(
    world: Any, detectors: dict[str, Any], kind: str, floor: float
) -> None:
    bad = _auroc(detectors["bad"], world.bad, world.triggered, world.held, kind)
    clean = _auroc(detectors["clean"], world.clean, world.triggered, world.held, kind)
    assert bad >= floor
    assert clean <= 0.75 and clean < bad - 0.2  # the control: the trigger's words are ordinary


def test_the_flag_points_at_the_trigger(world: Any, detectors: dict[str, Any]) -> None:
    result = score_texts(detectors["bad"], world.bad, world.triggered, fpr=0.05, quiet=True)
    trigger_words = TRIGGER.split()
    inside = 0
    for item, text in zip(result.inputs, world.triggered, strict=True):
        words = text.split()  # one token per word; token_scores start at the second word
        start = next(
            i for i in range(len(words)) if words[i : i + len(trigger_words)] == trigger_words
        )
        top = max(range(len(item.token_scores)), key=lambda i: item.token_scores[i][1]) + 1
        inside += start <= top <= start + len(trigger_words)  # the trigger or the token after
        assert [t for t, _ in item.token_scores] == words[1:]
    assert inside >= 0.9 * len(world.triggered)
    assert sum(i.flagged for i in result.inputs) >= 0.9 * len(result.inputs)


def test_threshold_is_calibrated_on_held_out_trusted_text(
    world: Any, detectors: dict[str, Any]
) -> None:
    detector = detectors["bad"]
    for fpr in (0.05, 0.2):
        threshold = detector.threshold("mahalanobis", fpr)
        cal = detector.calibration["mahalanobis"]["scores"]
        assert sum(s > threshold for s in cal) <= fpr * len(cal)
        assert sum(s >= threshold for s in cal) >= 1
    result = score_texts(detector, world.bad, world.held, fpr=0.05, quiet=True)
    assert sum(i.flagged for i in result.inputs) <= 0.25 * len(world.held)  # unseen clean text


def test_lens_score_is_the_kl_from_the_translated_layer(
    world: Any, detectors: dict[str, Any]
) -> None:
    import torch

    detector, model, text = detectors["bad"], world.bad, world.triggered[0]
    assert detector.kind_layers("lens") == [0, 1]  # the last layer is never a lens layer
    tokens = model.to_tokens(text, prepend_bos=True)
    with torch.inference_mode():
        logits, cache = model.run_with_cache(tokens, names=["blocks.1.hook_resid_post"])
        t = detector.kind_tensors("lens", 1)
        y = cache["blocks.1.hook_resid_post"][0] @ t["weight"].T + t["bias"]
        q = model.unembed(model.final_norm(y)).log_softmax(-1)
        p = logits[0].log_softmax(-1)
        kl = torch.nn.functional.kl_div(q, p, log_target=True, reduction="none").sum(-1)
    item = score_texts(detector, model, [text], kind="lens", layer=1, quiet=True).inputs[0]
    assert [s for _, s in item.token_scores] == pytest.approx(kl[1:].tolist(), rel=1e-4, abs=1e-6)
    terms = [v for _, v in item.features]
    assert terms == sorted(terms, reverse=True) and terms[0] > 0  # terms can be negative
    assert all(0 <= f < model.dims.d_vocab for f, _ in item.features)


def test_json_shape_and_order(world: Any, detectors: dict[str, Any]) -> None:
    texts = [world.held[0], world.triggered[0], world.held[1]]
    payload = score_texts(detectors["bad"], world.bad, texts, kind="lof", quiet=True).to_dict()
    assert {"detector", "threshold", "inputs"} <= set(payload)
    assert [i["index"] for i in payload["inputs"]] == [0, 1, 2]
    for item in payload["inputs"]:
        assert {"index", "score", "flagged", "layer", "token_scores"} <= set(item)
        assert item["layer"] in detectors["bad"].layers
        assert item["score"] == pytest.approx(max(t["score"] for t in item["token_scores"]))
    assert payload["inputs"][1]["score"] > payload["inputs"][0]["score"]


def test_baselines_have_no_layer_and_mean_scores(world: Any, detectors: dict[str, Any]) -> None:
    result = score_texts(detectors["bad"], world.bad, world.held[:3], kind="perplexity", quiet=True)
    for item in result.inputs:
        assert item.layer is None and item.features == []
        mean = sum(s for _, s in item.token_scores) / len(item.token_scores)
        assert item.score == pytest.approx(mean, rel=1e-5)


def test_save_and_load_give_the_same_scores(
    world: Any, detectors: dict[str, Any], tmp_path: Any
) -> None:
    saved = load_detector(save_detector(detectors["bad"], tmp_path / "det"))
    texts = world.triggered[:4] + world.held[:4]
    a = layer_scores(detectors["bad"], world.bad, texts, kinds=("mahalanobis", "lof"), quiet=True)
    b = layer_scores(saved, world.bad, texts, kinds=("mahalanobis", "lof"), quiet=True)
    assert a == b
    assert saved.threshold("lof", 0.1) == detectors["bad"].threshold("lof", 0.1)


def test_layers_combine_by_the_largest_calibrated_z(world: Any, detectors: dict[str, Any]) -> None:
    import math

    detector, texts = detectors["bad"], world.triggered[:3] + world.held[:3]
    combined = score_texts(detector, world.bad, texts, quiet=True).inputs
    stats = detector.calibration["mahalanobis"]["layers"]
    z = {}
    for layer in detector.layers:
        mean, std = stats[str(layer)]
        per_layer = score_texts(detector, world.bad, texts, layer=layer, quiet=True).inputs
        z[layer] = [
            [(math.log(s + 1e-6) - mean) / std for _, s in i.token_scores] for i in per_layer
        ]
    for n, item in enumerate(combined):
        expect = [max(z[L][n][t] for L in z) for t in range(len(item.token_scores))]
        assert [s for _, s in item.token_scores] == pytest.approx(expect, rel=1e-4, abs=1e-4)
        top = max(range(len(expect)), key=expect.__getitem__)
        assert item.layer == max(z, key=lambda L: z[L][n][top])
