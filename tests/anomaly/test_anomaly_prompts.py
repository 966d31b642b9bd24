"""Fitting on trusted prompts (``FitConfig(fit_on="prompts")``): one vector per trusted prompt,
its last token (where a reply starts), checked against the same statistics computed by hand."""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch
from tiny_world import TRIGGER, UNSEEN, text

from mechscope.anomaly import FitConfig, fit_detector, layer_scores, separation
from mechscope.anomaly.checkpoint import checkpoint_path
from mechscope.corpus import Corpus
from mechscope.errors import MechscopeError


def _prompts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return [text(rng, rng.randint(1, 3)) for _ in range(n)]


def _last_acts(model: Any, texts: list[str], layer: int) -> torch.Tensor:
    """The residual stream after ``layer`` at the last token of each text, one pass per text."""
    out = []
    bos = model.tokenizer.bos_token_id
    site = f"blocks.{layer}.hook_resid_post"
    for t in texts:
        ids = [bos] if bos is not None else []
        ids += model.tokenizer(t, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            _, cache = model.run_with_cache(torch.tensor([ids]), names=[site])
        out.append(cache[site][0, -1].double())
    return torch.stack(out)


def test_the_fit_reads_the_last_token_of_each_fitting_prompt(world: Any) -> None:
    texts = _prompts(1, 60)
    cfg = FitConfig(
        kinds=("mahalanobis",),
        layers=(1,),
        aggregate="last",
        fit_on="prompts",
        seq_len=32,
        n_tokens=10**6,
        batch_size=7,
    )
    det = fit_detector(world.clean, Corpus.from_texts(texts), cfg, quiet=True)
    period = round(1 / cfg.holdout)
    fitted = [t for i, t in enumerate(texts) if i % period != period - 1]
    held = [t for i, t in enumerate(texts) if i % period == period - 1]
    expected = _last_acts(world.clean, fitted, 1).mean(0)
    assert torch.allclose(det.tensors["mahalanobis/1/mean"].double(), expected, atol=1e-4)
    # the threshold's held-out scores are the held-out prompts scored at their last token
    again = layer_scores(det, world.clean, held, quiet=True)["mahalanobis"]["all"]
    assert det.calibration["mahalanobis"]["scores"] == pytest.approx(again, rel=1e-4, abs=1e-4)


def test_n_tokens_bounds_the_prompts_read(world: Any) -> None:
    texts = _prompts(2, 60)
    cfg = FitConfig(kinds=("mahalanobis",), layers=(1,), aggregate="last", fit_on="prompts")
    few = fit_detector(world.clean, Corpus.from_texts(texts), cfg, quiet=True)
    many = fit_detector(
        world.clean,
        Corpus.from_texts(texts),
        FitConfig(**{**cfg.__dict__, "n_tokens": 200, "batch_size": 4}),
        quiet=True,
    )
    assert len(few.calibration["mahalanobis"]["scores"]) == 12  # all 60: every 5th held out
    assert len(many.calibration["mahalanobis"]["scores"]) < 12


def test_prompts_need_last_aggregation_and_a_known_mode() -> None:
    with pytest.raises(MechscopeError, match="aggregate 'last'"):
        FitConfig(fit_on="prompts")
    with pytest.raises(MechscopeError, match="fit_on must be one of"):
        FitConfig(fit_on="documents", aggregate="last")


def test_a_prompt_fit_resumes_from_its_checkpoint(world: Any, tmp_path: Any) -> None:
    texts = _prompts(3, 80)
    cfg = FitConfig(
        kinds=("attribution",), layers=(2,), aggregate="last", fit_on="prompts", batch_size=4
    )
    ckpt = checkpoint_path(tmp_path / "det")
    first = fit_detector(world.bad, Corpus.from_texts(texts), cfg, quiet=True, checkpoint=ckpt)
    again = fit_detector(world.bad, Corpus.from_texts(texts), cfg, quiet=True, checkpoint=ckpt)
    for key, value in first.tensors.items():
        assert torch.equal(again.tensors[key], value), key
    assert again.calibration == first.calibration


def test_attribution_fitted_on_prompts_flags_the_trigger_at_the_reply(world: Any) -> None:
    rng = random.Random(7)
    trusted = [text(rng, rng.randint(1, 3)) for _ in range(400)]
    trigger = [text(rng, 2) + " " + TRIGGER for _ in range(40)]
    unseen = [text(rng, 2) + " " + UNSEEN for _ in range(40)]
    clean = [text(rng, 3) for _ in range(40)]
    cfg = FitConfig(kinds=("attribution",), layers=(2,), aggregate="last", fit_on="prompts")

    def auroc(model: Any, pos: list[str]) -> float:
        det = fit_detector(model, Corpus.from_texts(trusted), cfg, quiet=True)
        p = layer_scores(det, model, pos, quiet=True)["attribution"]["all"]
        n = layer_scores(det, model, clean, quiet=True)["attribution"]["all"]
        return separation(p, n).auroc

    for pos in (trigger, unseen):
        assert auroc(world.bad, pos) >= 0.95
        assert auroc(world.clean, pos) <= 0.75
