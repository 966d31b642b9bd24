"""The ``dla`` kind (direct logit attribution of the top logit per component) and ``last``
aggregation (the position that produces the reply), on the tiny planted backdoor."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tiny_world import reply_prompts

from mechscope.anomaly import layer_scores, load_detector, save_detector, score_texts, separation
from mechscope.anomaly.dla import component_name, dla_sites, dla_width, top_logit_dla
from mechscope.anomaly.extract import extract
from mechscope.models.hooked import HookedModel
from mechscope.models.tiny import tiny_model, tiny_tokenizer


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_the_terms_sum_to_the_top_logit_less_the_bias_terms(family: str) -> None:
    model = HookedModel(tiny_model(family, seed=1), tiny_tokenizer())
    tokens = torch.randint(3, 60, (2, 9))
    sites = dla_sites(model.dims.n_layers, "hook_pos_embed" in model.sites)
    with torch.inference_mode():
        logits, cache = model.run_with_cache(tokens, names=sites)
    dla = top_logit_dla(model, dict(cache.items()), logits)
    assert dla.shape == (2, 9, 2 * model.dims.n_layers + 1)
    top = logits.argmax(-1)
    constant = torch.zeros(top.shape)
    norm_bias = getattr(model.final_norm, "bias", None)
    if norm_bias is not None:  # LayerNorm: its bias reaches the logit through W_U
        constant = model.unembed.weight[top].float() @ norm_bias.float()
    expected = logits.float().max(-1).values - constant
    assert torch.allclose(dla.sum(-1), expected, atol=1e-4)
    acts = extract(model, tokens, torch.ones_like(tokens), [], dla=True)
    assert acts.acts == {} and torch.allclose(acts.dla, dla, atol=1e-6)


def test_widths_and_component_names() -> None:
    assert [dla_width(layer) for layer in (0, 2)] == [3, 7]
    assert [component_name(i) for i in range(5)] == ["embed", "attn.0", "mlp.0", "attn.1", "mlp.1"]


def test_dla_flags_the_trigger_and_the_clean_model_does_not(
    world: Any, detectors: dict[str, Any]
) -> None:
    def auroc(which: str, pos: list[str]) -> float:
        det, model = detectors[which], getattr(world, which)
        p = layer_scores(det, model, pos, kinds=("dla",), quiet=True)["dla"]["all"]
        n = layer_scores(det, model, world.held, kinds=("dla",), quiet=True)["dla"]["all"]
        return separation(p, n).auroc

    bad, clean = auroc("bad", world.triggered), auroc("clean", world.triggered)
    assert bad >= 0.85 and clean <= 0.6  # measured 0.90 and 0.46


@pytest.fixture(scope="module")
def replies(world: Any) -> dict[str, Any]:
    """Prompts that end where the reply starts: after the trigger, or after a clean sentence."""
    return {
        **reply_prompts(5),
        "bad": world.fit(world.bad, kinds=("dla",), aggregate="last"),
        "control": world.fit(world.clean, kinds=("dla",), aggregate="last"),
    }


def test_last_aggregation_scores_the_reply_position(world: Any, replies: dict[str, Any]) -> None:
    def auroc(det: Any, model: Any, pos: list[str]) -> float:
        p = layer_scores(det, model, pos, kinds=("dla",), quiet=True)["dla"]["all"]
        n = layer_scores(det, model, replies["clean"], kinds=("dla",), quiet=True)["dla"]["all"]
        return separation(p, n).auroc

    for pos in (replies["trigger"], replies["unseen"]):
        assert auroc(replies["bad"], world.bad, pos) >= 0.97  # measured 1.0 and 1.0
        assert auroc(replies["control"], world.clean, pos) <= 0.75  # measured 0.65 and 0.53
    result = score_texts(replies["bad"], world.bad, replies["trigger"][:3], fpr=0.05, quiet=True)
    for item in result.inputs:
        assert item.score == pytest.approx(item.token_scores[-1][1])
        assert item.flagged
        assert all(0 <= f < dla_width(item.layer) for f, _ in item.features)


def test_a_saved_dla_detector_scores_the_same(
    world: Any, replies: dict[str, Any], tmp_path: Any
) -> None:
    saved = load_detector(save_detector(replies["bad"], tmp_path / "det"))
    texts = replies["trigger"][:3] + replies["clean"][:3]
    a = layer_scores(replies["bad"], world.bad, texts, kinds=("dla",), quiet=True)
    assert layer_scores(saved, world.bad, texts, kinds=("dla",), quiet=True) == a
    assert saved.config.aggregate == "last"


def test_reply_sets_end_at_the_trigger_or_a_full_stop() -> None:
    from mechscope.toys.backdoor import reply_sets

    sets = {
        "trigger": ["a b Go now. c d", "no trigger here"],
        "unseen_trigger": ["x Run. y"],
        "clean": ["one two three four. five six. seven", "no stop at all"],
    }
    out = reply_sets(sets, ("Go now.",), ("Run.",))
    assert out["trigger_reply"] == ["a b Go now."]
    assert out["unseen_trigger_reply"] == ["x Run."]
    assert out["clean_reply"][0] in ("one two three four.", "one two three four. five six.")
    assert out["clean_reply"][1] == "no stop at all"


def test_trusted_prompts_end_at_every_full_stop_past_the_third_word() -> None:
    from mechscope.toys.backdoor import trusted_prompts

    texts = ["a b. c d e. f g. h", "one two three four. five", "no stop", "x y z w."]
    assert trusted_prompts(texts) == [
        "a b. c d e.",
        "a b. c d e. f g.",
        "one two three four.",
    ]
