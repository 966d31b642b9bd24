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
    html_no_ns = html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # a name, not a fetch
    assert not EXTERNAL.search(html) and "http://" not in html_no_ns and "https://" not in html
    assert not re.search(r"<script[^>]*\bsrc\s*=", html, re.I) and "<link" not in html
    assert (path.parent / "logit_lens_target.png").stat().st_size > 1000
    data = json.loads((path.parent / "report.json").read_text("utf-8"))
    assert data["model"]["hook_points"] == len(tiny.sites)
    assert [p["prompt"] for p in data["predictions"]] == list(ReportConfig().prompts)
    assert data["logit_lens"]["target"] == tiny.tokenizer("Mary")["input_ids"][0]


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
    assert "the model&#x27;s own top prediction" in html


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
