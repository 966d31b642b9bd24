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


def test_scan_to_dict_is_what_the_page_renders(tmp_path: Path) -> None:
    from mechscope.neurons import mlp_neurons, scan_corpus, scan_to_dict
    from mechscope.viz.neurons import neurons_page

    model = hooked("llama")
    found = scan_corpus(model, mlp_neurons(model, 0), make_corpus(n_docs=8), n_tokens=256,
                        seq_len=16, k=2)  # fmt: skip
    data = found.to_dict(model.tokenizer, show=found.ranked(2), model="tiny")
    assert data == scan_to_dict(found, model.tokenizer, show=found.ranked(2), model="tiny")
    html = neurons_page(data, "neurons")
    assert (
        html.count("<h3>neuron ") == 2 and f"<h3>neuron {data['neurons'][0]['index']}</h3>" in html
    )
    assert html.count('class="nwin"') == sum(len(n["top"]) for n in data["neurons"])
