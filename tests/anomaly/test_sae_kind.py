"""The SAE-latent Gaussian: its features are SAE latents, and its terms sum to the score."""

from __future__ import annotations

from typing import Any

import torch

from mechscope.anomaly import FitConfig, fit_detector, load_detector, save_detector, score_texts
from mechscope.anomaly.gaussian import diagonal_terms
from mechscope.corpus import Corpus
from mechscope.sae import SAE, SAEConfig, save_sae


def test_sae_latent_detector(world: Any, tmp_path: Any) -> None:
    site = "blocks.2.hook_resid_post"
    sae = SAE(SAEConfig(arch="topk", d_in=48, d_sae=96, k=8, hook_name=site), seed=0).eval()
    save_sae(sae, tmp_path / "sae")
    cfg = FitConfig(kinds=("sae",), seq_len=32, n_tokens=1600)
    corpus = Corpus.from_texts(world.trusted)
    detector = fit_detector(world.bad, corpus, cfg, sae=sae, sae_path=str(tmp_path / "sae"))
    detector = load_detector(save_detector(detector, tmp_path / "det"))
    assert detector.kind_layers("sae") == [2] and detector.sae["site"] == site
    result = score_texts(detector, world.bad, world.triggered[:3], sae=sae, quiet=True)
    _, cache = world.bad.run_with_cache(world.bad.to_tokens(world.triggered[0]), names=site)
    with torch.no_grad():
        latents = sae.encode(cache[site][0])
    item = result.inputs[0]
    pos = max(range(len(item.token_scores)), key=lambda i: item.token_scores[i][1]) + 1
    terms = diagonal_terms(detector.kind_tensors("sae", 2), latents[pos][None])[0]
    assert item.layer == 2
    assert [f for f, _ in item.features] == terms.topk(5).indices.tolist()
    stats = detector.calibration["sae"]["layers"]["2"]
    z = (torch.log(terms.sum() + 1e-6) - stats[0]) / stats[1]
    assert float(z) == pytest_approx(item.score)


def pytest_approx(value: float) -> Any:
    import pytest

    return pytest.approx(value, rel=1e-4, abs=1e-4)
