"""The ``attention`` kind: an input's profile of every head's attention on each token itself,
checked by hand against the attention patterns, on shuffled words of the tiny world, and for the
exact split of the input score into token scores and head terms."""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch
from tiny_world import text

from mechscope.anomaly import layer_scores, score_texts
from mechscope.anomaly.metrics import separation
from mechscope.anomaly.score import _batches, _tokenize


@pytest.fixture(scope="module")
def att(world: Any) -> dict[str, Any]:
    rng = random.Random(21)
    clean = [text(rng, 4) for _ in range(40)]

    def shuffled(t: str) -> str:
        words = t.split()
        rng.shuffle(words)
        return " ".join(words)

    return {
        "clean": clean,
        "shuffled": [shuffled(text(rng, 4)) for _ in range(40)],
        "det": world.fit(world.clean, kinds=("attention", "perplexity")),
    }


def _profile_by_hand(model: Any, text_: str | list[int]) -> torch.Tensor:
    if isinstance(text_, str):
        text_ = model.tokenizer(text_, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([text_])
    names = [f"blocks.{L}.attn.hook_pattern" for L in range(model.dims.n_layers)]
    with torch.inference_mode():
        _, cache = model.run_with_cache(ids, names=names)
    # [positions, layers * heads]: head h of layer L at L * n_heads + h
    diag = torch.cat([cache[n][0].diagonal(dim1=-2, dim2=-1).T for n in names], -1)
    return diag[1:].float().mean(0)  # positions >= 1


def test_the_score_is_the_distance_of_the_mean_self_attention(
    world: Any, att: dict[str, Any]
) -> None:
    det = att["det"]
    t = det.kind_tensors("attention", -1)
    assert t["mean"].shape == (world.clean.dims.n_layers * world.clean.dims.n_heads,)
    texts = att["shuffled"][:3] + att["clean"][:3]
    got = layer_scores(det, world.clean, texts, kinds=("attention",), quiet=True)
    for text_, value in zip(texts, got["attention"]["all"], strict=True):
        d = _profile_by_hand(world.clean, text_) - t["mean"]
        assert value == pytest.approx(float(d @ t["precision"] @ d), rel=1e-4)


def test_token_scores_and_head_terms_split_the_input_score(world: Any, att: dict[str, Any]) -> None:
    result = score_texts(att["det"], world.clean, att["shuffled"][:4], kind="attention", quiet=True)
    n_heads = world.clean.dims.n_heads * world.clean.dims.n_layers
    for item in result.inputs:
        mean = sum(s for _, s in item.token_scores) / len(item.token_scores)
        assert mean == pytest.approx(item.score, rel=1e-4)
        assert item.layer is None
        assert 0 < len(item.features) <= 5
        assert all(0 <= f < n_heads for f, _ in item.features)
        values = [v for _, v in item.features]
        assert values == sorted(values, reverse=True)


def test_the_same_scores_with_and_without_the_logits(world: Any, att: dict[str, Any]) -> None:
    # attention alone stops the forward after the last pattern; with perplexity it runs to the
    # logits: the two paths must read the same patterns
    texts = att["shuffled"][:4]
    alone = layer_scores(att["det"], world.clean, texts, kinds=("attention",), quiet=True)
    both = layer_scores(att["det"], world.clean, texts, quiet=True)
    assert alone["attention"]["all"] == pytest.approx(both["attention"]["all"], rel=1e-5)


def test_it_sees_shuffled_words(world: Any, att: dict[str, Any]) -> None:
    scores = layer_scores(att["det"], world.clean, att["clean"] + att["shuffled"], quiet=True)
    n = len(att["clean"])
    for kind in ("attention", "perplexity"):
        s = scores[kind]["all"]
        assert separation(s[n:], s[:n]).auroc >= 0.95  # measured 1.000 (perplexity 1.000)
    rng = random.Random(99)
    held = [text(rng, 4) for _ in range(40)]  # more clean text: not flagged
    more = layer_scores(att["det"], world.clean, held, kinds=("attention",), quiet=True)
    clean = scores["attention"]["all"][:n]
    assert 0.3 <= separation(more["attention"]["all"], clean).auroc <= 0.7  # measured 0.511


def test_padding_does_not_change_a_score(world: Any, att: dict[str, Any]) -> None:
    short, long_ = att["clean"][0], att["clean"][1] + " " + att["clean"][2]
    alone = layer_scores(att["det"], world.clean, [short], kinds=("attention",), quiet=True)
    ids = _tokenize(world.clean, [short, long_], 256)
    assert len(_batches(ids, 8, 0)) == 1  # batched together: the short one is padded
    both = layer_scores(att["det"], world.clean, [short, long_], kinds=("attention",), quiet=True)
    assert both["attention"]["all"][0] == pytest.approx(alone["attention"]["all"][0], rel=1e-4)


def test_a_long_input_is_read_over_the_fitted_window(world: Any, att: dict[str, Any]) -> None:
    # the profile covers the first seq_len positions (attention is causal: what the input cut to
    # that length gives), and the later tokens carry the input score
    det = att["det"]
    length = det.config.seq_len
    long_ = " ".join(att["clean"][:8])
    ids = _tokenize(world.clean, [long_], 256)[0]
    assert len(ids) > length + 8
    got = layer_scores(det, world.clean, [long_], kinds=("attention",), quiet=True)
    t = det.kind_tensors("attention", -1)
    d = _profile_by_hand(world.clean, ids[:length]) - t["mean"]
    assert got["attention"]["all"][0] == pytest.approx(float(d @ t["precision"] @ d), rel=1e-4)
    whole = _profile_by_hand(world.clean, ids) - t["mean"]  # the whole input would differ
    assert float(whole @ t["precision"] @ whole) != pytest.approx(got["attention"]["all"][0])
    item = score_texts(det, world.clean, [long_], kind="attention", quiet=True).inputs[0]
    scores = [s for _, s in item.token_scores]
    assert sum(scores) / len(scores) == pytest.approx(item.score, rel=1e-4)
    assert scores[length - 1 :] == pytest.approx(
        [item.score] * (len(scores) - length + 1), rel=1e-4
    )
