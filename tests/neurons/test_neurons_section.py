"""The report's neuron section on a tiny model and an in-memory corpus."""

from __future__ import annotations

from pathlib import Path

from neuron_helpers import hooked, make_corpus

from mechscope.report.context import ReportConfig, ReportContext
from mechscope.report.neurons_section import SHOW, neurons_section


def test_section_records_the_strongest_neurons(tmp_path: Path) -> None:
    model = hooked("llama")
    ctx = ReportContext(config=ReportConfig(), out_dir=tmp_path)
    html = neurons_section(model, ctx, corpus=make_corpus(n_docs=20))
    data = ctx.data["neurons"]
    assert data["layer"] == model.dims.n_layers // 2 and len(data["neurons"]) == SHOW
    maxima = [n["max"] for n in data["neurons"]]
    assert maxima == sorted(maxima, reverse=True) and maxima[0] == data["summary"][0]["max"]
    assert html.count("<svg") == SHOW and 'class="peak"' in html


def test_section_skips_models_without_dense_neurons(tmp_path: Path) -> None:
    ctx = ReportContext(config=ReportConfig(), out_dir=tmp_path)
    html = neurons_section(hooked("mixtral"), ctx, corpus=make_corpus())
    assert "Skipped" in html and "mixture of experts" in ctx.data["neurons"]["skipped"]
