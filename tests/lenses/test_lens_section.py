"""The report's tuned-lens section on a tiny model: trains once into the cache, records the curves."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from mechscope import HookedModel
from mechscope.corpus import Corpus
from mechscope.lenses import TunedLens, held_out_kl, tuned_lens_path
from mechscope.report import ReportConfig, ReportContext
from mechscope.report.lens_section import tuned_lens_section


@dataclasses.dataclass(frozen=True)
class LensReportConfig(ReportConfig):
    corpus: Corpus | None = None
    tuned_lens_tokens: int = 1024
    tuned_lens_eval_tokens: int = 256


def test_section_records_the_held_out_curves(
    tmp_path: Path, monkeypatch, tiny_lm: HookedModel, tiny_corpus: Corpus
) -> None:
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path / "cache"))
    ctx = ReportContext(LensReportConfig(corpus=tiny_corpus), tmp_path)
    html = tuned_lens_section(tiny_lm, ctx)
    record = ctx.data["tuned_lens"]
    path = tuned_lens_path(tiny_lm, 1024, tiny_corpus)
    assert path.is_file() and (tmp_path / "tuned_lens_kl.png").stat().st_size > 1000
    lens = TunedLens.load(path, tiny_lm)
    expected = held_out_kl(tiny_lm, tiny_corpus, lens=lens, tokens=256, seq_len=64)
    np.testing.assert_allclose(record["held_out"]["logit"], expected.logit)
    np.testing.assert_allclose(record["held_out"]["tuned"], expected.tuned)
    verdict = bool((expected.tuned[:-1] < expected.logit[:-1]).all())
    assert record["tuned_better_at_every_layer_but_last"] == verdict
    assert record["lens"]["tokens_trained"] == 1024 and record["held_out"]["tokens"] == 256
    assert "data:image/png;base64," in html and html.count("<tr>") == 1 + tiny_lm.dims.n_layers
