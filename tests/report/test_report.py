"""The HTML report on a tiny model: files, sections, self-containment, and the section registry."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from mechscope import HookedModel, MechscopeError
from mechscope.models.tiny import tiny_model
from mechscope.report import SECTIONS, ReportConfig, Section, build_report

EXTERNAL = re.compile(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", re.IGNORECASE)


def test_report_files_and_sections(tiny: HookedModel, small_corpus, tmp_path: Path) -> None:
    config = ReportConfig(corpus=small_corpus)
    path = build_report(tiny, tmp_path / "out", config=config, quiet=True)
    assert path == tmp_path / "out" / "report.html"
    html = path.read_text("utf-8")
    for section in SECTIONS:
        assert f"<h2>{section.name}</h2>" in html
    assert "tiny-llama" in html and "The capital of France is" in html
    assert "data:image/png;base64," in html
    assert html.count("<style>") == 1 and html.count('<div class="mscirc">') == 1  # one stylesheet
    assert 'type="range"' in html and "mscirc-legend" in html  # the circuit view and its legend
    html_no_ns = html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # a name, not a fetch
    assert not EXTERNAL.search(html) and "http://" not in html_no_ns and "https://" not in html
    assert not re.search(r"<script[^>]*\bsrc\s*=", html, re.I) and "<link" not in html
    assert (path.parent / "logit_lens_target.png").stat().st_size > 1000
    data = json.loads((path.parent / "report.json").read_text("utf-8"))
    assert data["model"]["hook_points"] == len(tiny.sites)
    assert [p["prompt"] for p in data["predictions"]] == list(ReportConfig().prompts)
    assert data["logit_lens"]["target"] == tiny.tokenizer("Mary")["input_ids"][0]
    # every circuit finding carries its uncertainty (issue 17)
    # (the random tiny model's IOI metric is 0 on most prompts, so a resample's normalised value
    # is often undefined and its interval null; where one is defined it brackets the value)
    c = data["circuit"]
    points = [(c["circuit"]["faithfulness"], c["faithfulness_ci"])]
    points += [(p["faithfulness"], p["ci"]) for p in c["curve"]]
    assert all(ci[0] - 1e-9 <= f <= ci[1] + 1e-9 for f, ci in points if ci is not None)
    st = c["stability"]
    assert st["n_boot"] == ReportConfig().circuit_stability
    assert 0 <= st["min_jaccard"] <= st["mean_jaccard"] <= st["max_jaccard"] <= 1
    lo, hi = st["mean_jaccard_ci"]
    assert lo - 1e-9 <= st["mean_jaccard"] <= hi + 1e-9
    cells = c["resid_pre_top_cells"]
    assert cells and all(0 < x["p"] <= x["q"] + 1e-12 <= 1 + 1e-12 for x in cells)
    assert all(x["ci"][0] - 1e-6 <= x["value"] <= x["ci"][1] + 1e-6 for x in cells
               if x["ci"] is not None)  # fmt: skip
    assert all(h["p"] is not None and h["ci"] is not None for h in c["dla_top_heads"])
    assert "Stability: the circuits of" in html and "Benjamini-Hochberg" in html


def test_sections_can_be_added(tiny: HookedModel, tmp_path: Path) -> None:
    def extra(model: HookedModel, ctx: object) -> str:
        return "<p>an <b>extra</b> section</p>"

    sections = [*SECTIONS[:1], Section("Extra", extra)]
    html = build_report(tiny, tmp_path, sections=sections, quiet=True).read_text("utf-8")
    assert "<h2>Extra</h2>" in html and "<b>extra</b>" in html and "Logit lens" not in html


def test_own_prompts_and_escaping(tiny: HookedModel, small_corpus, tmp_path: Path) -> None:
    config = ReportConfig.for_prompts(["John gave <b>", "Mary"])
    config = dataclasses.replace(config, corpus=small_corpus)
    html = build_report(tiny, tmp_path, config=config, quiet=True).read_text("utf-8")
    assert "John gave &lt;b&gt;" in html and "John gave <b>" not in html
    assert "the model&#39;s own top prediction" in html


def test_stability_needs_two_resamples() -> None:
    with pytest.raises(MechscopeError, match="circuit_stability"):
        ReportConfig(circuit_stability=1)


@pytest.mark.parametrize("prompts", [[""], ["ok", "  "]])
def test_empty_prompts_are_refused(prompts: list[str]) -> None:
    with pytest.raises(MechscopeError, match="empty prompt"):
        ReportConfig.for_prompts(prompts)


def test_needs_a_tokenizer_and_a_folder(tiny: HookedModel, tmp_path: Path) -> None:
    with pytest.raises(MechscopeError, match="tokenizer"):
        build_report(HookedModel(tiny_model("gpt2")), tmp_path, quiet=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(MechscopeError, match="is a file"):
        build_report(tiny, tmp_path / "file", quiet=True)
