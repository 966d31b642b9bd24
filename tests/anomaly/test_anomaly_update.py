"""The ``update`` kind (what a block writes) and the ``mean`` combination of layers."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tiny_world import reply_prompts

from mechscope.anomaly import FitConfig
from mechscope.anomaly.batch import LOG_EPS, batch_scores, combine, kind_input
from mechscope.anomaly.extract import extract
from mechscope.anomaly.metrics import separation
from mechscope.anomaly.score import _batches, _tokenize, layer_scores
from mechscope.errors import MechscopeError


@pytest.fixture(scope="module")
def update(world: Any) -> dict[str, Any]:
    kw = {"kinds": ("update",), "aggregate": "last", "combine": "mean", "layers": (0, 1, 2)}
    return {
        **reply_prompts(7),
        "bad": world.fit(world.bad, **kw),
        "control": world.fit(world.clean, **kw),
    }


def test_update_reads_the_attention_plus_mlp_output_of_the_block(
    world: Any, update: dict[str, Any]
) -> None:
    det, model = update["bad"], world.bad
    (_, tokens, mask), *_ = _batches(_tokenize(model, update["clean"][:4], 64), 4, 0)
    names = [f"blocks.1.{s}" for s in ("hook_attn_out", "hook_mlp_out")]
    with torch.inference_mode():
        _, cache = model.run_with_cache(tokens, names=names, attention_mask=mask)
    written = cache[names[0]] + cache[names[1]]  # an identity of the (sequential) Llama block
    acts = extract(model, tokens, mask, ["blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"])
    got = kind_input(det, "update", 1, acts, None)
    torch.testing.assert_close(got, written, atol=1e-5, rtol=1e-4)


def test_mean_combination_is_the_mean_of_the_standardised_layer_scores(
    world: Any, update: dict[str, Any]
) -> None:
    det, model = update["bad"], world.bad
    (_, tokens, mask), *_ = _batches(_tokenize(model, update["trigger"][:4], 64), 4, 0)
    raw, _ = batch_scores(det, model, tokens, mask, ("update",))
    layers = det.calibration["update"]["layers"]
    z = [
        (torch.log(raw["update"][L].clamp(min=0) + LOG_EPS) - layers[str(L)][0]) / layers[str(L)][1]
        for L in (0, 1, 2)
    ]
    got, which = combine(det, "update", raw["update"])
    torch.testing.assert_close(got, torch.stack(z).mean(0))
    assert not torch.allclose(got, torch.stack(z).max(0).values)
    assert (which == torch.stack(z).argmax(0)).all()  # the layer reported: the largest z


def test_update_flags_the_reply_position_and_not_on_the_clean_model(
    world: Any, update: dict[str, Any]
) -> None:
    def auroc(det: Any, model: Any, pos: list[str]) -> float:
        p = layer_scores(det, model, pos, quiet=True)["update"]["all"]
        n = layer_scores(det, model, update["clean"], quiet=True)["update"]["all"]
        return separation(p, n).auroc

    for pos in (update["trigger"], update["unseen"]):
        assert auroc(update["bad"], world.bad, pos) >= 0.97  # measured 1.0 and 1.0
        assert auroc(update["control"], world.clean, pos) <= 0.7  # measured 0.46 and 0.49


def test_combine_is_validated() -> None:
    with pytest.raises(MechscopeError, match="combine must be one of max, mean"):
        FitConfig(combine="sum")
