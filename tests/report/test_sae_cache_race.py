"""Two reports that train the cached SAE at once: neither fails, both use the one published copy."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

import mechscope.sae as sae_package
from conftest import word_tokenizer
from mechscope import HookedModel
from mechscope.models.tiny import tiny_model
from mechscope.report import sae_section
from mechscope.sae import load_sae


def test_racing_reports_share_the_winners_sae(
    small_corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))
    monkeypatch.setattr(sae_section, "HARVEST_TOKENS", 1024)
    monkeypatch.setattr(sae_section, "STEPS", 3)
    monkeypatch.setattr(sae_section, "BATCH", 64)
    barrier, fit = threading.Barrier(2, timeout=120), sae_package.fit

    def fit_then_wait(*args, **kwargs):
        out = fit(*args, **kwargs)
        barrier.wait()  # both have trained before either publishes
        return out

    monkeypatch.setattr(sae_package, "fit", fit_then_wait)
    models = [  # one model per thread: harvesting hooks the model it reads
        HookedModel(tiny_model("llama"), word_tokenizer(), provenance={"name": "tiny-llama"})
        for _ in range(2)
    ]
    results: list = []
    errors: list[BaseException] = []

    def report(model: HookedModel) -> None:
        try:
            results.append(sae_section.cached_sae(model, "blocks.0.hook_resid_post", small_corpus))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=report, args=(m,)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    (entry,) = (tmp_path / "sae").iterdir()  # one entry, no temporaries left behind
    published = load_sae(entry)
    for sae in results:
        torch.testing.assert_close(sae.W_enc, published.W_enc, rtol=0, atol=0)
