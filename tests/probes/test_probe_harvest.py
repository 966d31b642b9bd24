"""Harvested features equal each text's own unbatched ``run_with_cache`` at the read position."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mechscope.probes import from_rows, harvest, probe


def test_features_equal_single_text_caches(tiny, random_texts) -> None:
    texts = random_texts(23, seed=5)
    rows = [{"text": t, "label": i % 2, "position": -1 - (i % 3)} for i, t in enumerate(texts)]
    rows += [{"text": texts[0], "label": 1, "position": 0}]  # a text read at two positions
    data = from_rows(rows)
    sites = [
        "hook_embed",
        "blocks.1.attn.hook_z",
        "blocks.2.mlp.hook_post",
        "ln_final.hook_normalized",
    ]
    got = harvest(tiny, data, sites, batch_size=4, quiet=True)  # several padded batches
    for i, row in enumerate(rows):
        tokens = tiny.to_tokens(row["text"])
        _, cache = tiny.run_with_cache(tokens, names=sites)
        pos = row["position"] % tokens.shape[1]
        assert got.positions[i] == pos and got.token_ids[i] == tokens[0, pos]
        for site in sites:
            want = cache[site][0, pos].reshape(-1)
            torch.testing.assert_close(got.features[site][i], want, atol=1e-5, rtol=1e-5)


def test_result_dict_is_json_ready_with_the_documented_keys(tiny, random_texts) -> None:
    rows = [{"text": t, "label": ["x", "y", "z"][i % 3]} for i, t in enumerate(random_texts(60))]
    result = probe(tiny, rows, "blocks.*.hook_resid_post", folds=3, quiet=True)
    data = json.loads(json.dumps(result.to_dict()))
    assert {"data", "site", "kind", "sites", "n_examples", "n_classes"} <= set(data)
    assert (
        data["n_examples"] == 60 and data["n_classes"] == 3 and data["classes"] == ["x", "y", "z"]
    )
    assert data["n_train"] + data["n_test"] == 60
    assert [s["layer"] for s in data["sites"]] == [0, 1, 2]
    for s in data["sites"]:
        assert set(s) == {
            "site",
            "layer",
            "accuracy",
            "cv_mean",
            "cv_std",
            "control_accuracy",
            "selectivity",
            "baseline",
        }
        assert s["selectivity"] == pytest.approx(s["accuracy"] - s["control_accuracy"])
        # the baseline: the train majority class's share of the test split (classes are balanced)
        assert s["baseline"] == pytest.approx(4 / 12)


def test_without_control_and_folds(tiny, random_texts) -> None:
    rows = [{"text": t, "label": i % 2} for i, t in enumerate(random_texts(30))]
    result = probe(tiny, rows, "blocks.0.hook_resid_post", folds=0, control=False, quiet=True)
    (score,) = result.scores
    assert score.cv_mean is None and score.control_accuracy is None and score.selectivity is None
    assert np.isfinite(score.accuracy)


def test_one_forward_per_batch_that_stops_after_the_last_site(tiny, random_texts) -> None:
    rows = [{"text": t, "label": i % 2} for i, t in enumerate(random_texts(10, seed=2))]
    rows += [{"text": rows[0]["text"], "label": 1, "position": 0}]  # same text: no extra run
    calls = {"model": 0, "last_layer": 0}

    def count(key: str):
        def hook(*_: object, **__: object) -> None:
            calls[key] += 1

        return hook

    layers = tiny.hf.get_submodule(tiny.family.layers)
    handles = [
        tiny.hf.register_forward_pre_hook(count("model")),
        layers[2].register_forward_pre_hook(count("last_layer")),
    ]
    try:
        got = harvest(
            tiny,
            from_rows(rows),
            ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"],
            batch_size=4,
            quiet=True,
        )
    finally:
        for h in handles:
            h.remove()
    assert calls == {"model": 3, "last_layer": 0}  # ceil(10 texts / 4); layer 2 never runs
    assert got.features["blocks.0.hook_resid_post"].shape == (11, tiny.dims.d_model)
