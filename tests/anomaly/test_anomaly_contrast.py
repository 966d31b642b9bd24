"""The ``contrast`` kind: a direction from contrast pairs (as Anthropic's defection probes),
standardised on trusted text; checked against the same quantities computed by hand."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_world import text

from mechscope.anomaly import (
    FitConfig,
    fit_detector,
    layer_scores,
    load_detector,
    save_detector,
    separation,
)
from mechscope.anomaly.batch import valid_mask
from mechscope.anomaly.contrast import DEFAULT_PAIRS, contrast_score, contrast_terms
from mechscope.corpus import Corpus, batches
from mechscope.errors import MechscopeError

LAYER = 1
SITE = f"blocks.{LAYER}.hook_resid_post"


def _pairs(seed: int, n: int) -> tuple[tuple[str, str], ...]:
    """Pairs that differ only in their last sentence's last noun: stone (positive) or fox."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        stem = text(rng, 1) + " the old dog sees the"
        out.append((f"{stem} stone", f"{stem} fox"))
    return tuple(out)


def _last(model: Any, prompt: str) -> torch.Tensor:
    ids = model.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        _, cache = model.run_with_cache(torch.tensor([ids]), names=[SITE])
    return cache[SITE][0, -1].double()


@pytest.fixture(scope="module")
def fitted(world: Any) -> dict[str, Any]:
    cfg = FitConfig(
        kinds=("contrast",), layers=(LAYER,), seq_len=32, n_tokens=2400, contrast=_pairs(1, 6)
    )
    det = fit_detector(world.clean, Corpus.from_texts(world.trusted), cfg, quiet=True)
    return {"cfg": cfg, "det": det}


def test_direction_mean_and_scale_match_a_hand_computation(
    world: Any, fitted: dict[str, Any]
) -> None:
    det, cfg = fitted["det"], fitted["cfg"]
    t = det.kind_tensors("contrast", LAYER)
    diff = torch.stack([_last(world.clean, p) - _last(world.clean, n) for p, n in cfg.contrast])
    d = diff.mean(0) / diff.mean(0).norm()
    assert torch.allclose(t["direction"].double(), d, atol=1e-5)
    # the fitting tokens: the trusted windows less every 5th (held out), position 0 not read
    rows = []
    period = round(1 / cfg.holdout)
    seen = 0
    stream = batches(
        Corpus.from_texts(world.trusted),
        world.tokenizer,
        batch_size=cfg.batch_size,
        seq_len=cfg.seq_len,
        n_tokens=cfg.n_tokens,
        seed=cfg.seed,
    )
    for batch in stream:
        keep = (torch.arange(seen, seen + len(batch)) % period) != period - 1
        seen += len(batch)
        with torch.inference_mode():
            _, cache = world.clean.run_with_cache(batch[keep], names=[SITE])
        rows.append(cache[SITE][valid_mask(torch.ones_like(batch[keep]))].double())
    x = torch.cat(rows)
    proj = x @ d
    assert torch.allclose(t["mean"].double(), x.mean(0), atol=1e-4)
    assert float(t["scale"]) == pytest.approx(float(proj.std(unbiased=False)), rel=1e-3)
    z = torch.log(contrast_score(t, x.float())).double()
    assert float(z.mean()) == pytest.approx(0.0, abs=1e-3)  # standardised on the fitting tokens
    assert float(z.std(unbiased=False)) == pytest.approx(1.0, rel=1e-3)
    terms = contrast_terms(t, x[:5].float())
    assert torch.allclose(terms.sum(-1), z[:5].float(), atol=1e-4)


def test_the_direction_separates_what_the_pairs_contrast(
    world: Any, fitted: dict[str, Any]
) -> None:
    """A planted oracle: prompts ending like the positive side score above the negative side."""
    rng = random.Random(9)
    stems = [text(rng, 2) + " the big cat finds the" for _ in range(30)]
    pos = [f"{s} stone" for s in stems]
    neg = [f"{s} fox" for s in stems]
    det = fitted["det"]
    det_last = FitConfig(**{**fitted["cfg"].__dict__, "aggregate": "last"})
    det_last = fit_detector(world.clean, Corpus.from_texts(world.trusted), det_last, quiet=True)
    p = layer_scores(det_last, world.clean, pos, quiet=True)["contrast"]["all"]
    n = layer_scores(det_last, world.clean, neg, quiet=True)["contrast"]["all"]
    assert separation(p, n).auroc >= 0.95
    assert det.config.contrast == fitted["cfg"].contrast


def test_a_saved_contrast_detector_keeps_its_pairs_and_scores(
    world: Any, fitted: dict[str, Any], tmp_path: Path
) -> None:
    det = fitted["det"]
    saved = load_detector(save_detector(det, tmp_path / "det"))
    assert saved.config.contrast == det.config.contrast
    texts = world.held[:4]
    assert layer_scores(saved, world.clean, texts, quiet=True) == layer_scores(
        det, world.clean, texts, quiet=True
    )


def test_the_default_pairs_are_recorded_and_name_no_trigger() -> None:
    from mechscope.models.hooked import HookedModel
    from mechscope.models.tiny import tiny_model, tiny_tokenizer

    model = HookedModel(tiny_model("llama", seed=1), tiny_tokenizer(["Yes", "No", "."]))
    trusted = Corpus.from_texts(["Yes . No . Yes Yes No . No"] * 40)
    cfg = FitConfig(kinds=("contrast",), layers=(LAYER,), seq_len=8, n_tokens=320)
    det = fit_detector(model, trusted, cfg, quiet=True)
    assert det.config.contrast == DEFAULT_PAIRS
    words = " ".join(p + n for p, n in DEFAULT_PAIRS)
    assert "2024" not in words and "HATE" not in words


def test_pairs_without_a_direction_are_refused(world: Any) -> None:
    same = (("the red fox sees the dog", "the red fox sees the dog"),)
    cfg = FitConfig(kinds=("contrast",), layers=(LAYER,), seq_len=32, n_tokens=640, contrast=same)
    with pytest.raises(MechscopeError, match="give no direction at layer 1"):
        fit_detector(world.clean, Corpus.from_texts(world.trusted), cfg, quiet=True)


def test_cli_reads_pairs_and_names_a_bad_line(tmp_path: Path) -> None:
    from mechscope.cli.anomaly import _pairs

    good = tmp_path / "pairs.jsonl"
    good.write_text(json.dumps({"positive": "a b", "negative": "a c"}) + "\n\n")
    assert _pairs(str(good)) == (("a b", "a c"),)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"positive": "a b"}) + "\n")
    with pytest.raises(MechscopeError, match="line 1 is not"):
        _pairs(str(bad))
