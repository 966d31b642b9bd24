"""The report's attention section on a tiny model: the view, the summary in report.json."""

from __future__ import annotations

import importlib
import json
import re

import numpy as np
import pytest

from mechscope.heads import attention_patterns, head_summary
from mechscope.report import build_report
from mechscope.report.attention_section import attention_section
from mechscope.report.context import ReportConfig, ReportContext, Section

# by path: the package may also export the section function under the module's name
section_module = importlib.import_module("mechscope.report.attention_section")
PROMPT = "When Mary and John went to the store , John gave a drink to"


def embedded(html: str) -> list[dict]:
    found = re.findall(r'<script type="application/json" class="msattn-data">(.*?)</script>', html)
    return [json.loads(x) for x in found]


def test_section_view_and_summary(tiny_llama, tmp_path) -> None:
    ctx = ReportContext(config=ReportConfig(lens_prompt=PROMPT), out_dir=tmp_path)
    html = attention_section(tiny_llama, ctx)
    [data] = embedded(html)
    view = attention_patterns(tiny_llama, PROMPT)
    record = ctx.data["attention"]
    assert record["prompt"] == PROMPT and record["layers"] == [0, 1, 2] == data["layers"]
    assert record["str_tokens"] == view.str_tokens and record["n_heads"] == 6
    summary = head_summary(view.patterns)
    for key in ("first_token", "previous_token", "self"):
        np.testing.assert_allclose(record[key], summary[key], atol=0.5e-3 + 1e-9)
    assert record["last_query_argmax"] == summary["last_query_argmax"].tolist()
    best = np.unravel_index(np.argmax(summary["previous_token"]), summary["previous_token"].shape)
    assert f"L{best[0]}H{best[1]}" in html
    assert data["initial"][:2] == [int(best[0]), int(best[1])]
    read = record["strongest_last_token_read"]
    weights = [
        (view.patterns[layer, head, -1, key], layer, head, key)
        for layer in range(3) for head in range(6) for key in range(1, len(view.str_tokens) - 2)
    ]  # fmt: skip
    top = max(weights)
    assert (read["layer"], read["head"], read["key_pos"]) == top[1:]
    assert read["weight"] == pytest.approx(top[0], abs=0.5e-3)
    json.dumps(record)  # JSON-ready


def test_long_prompt_keeps_the_layers_that_fit(tiny_llama, tmp_path, monkeypatch) -> None:
    n_pos = len(PROMPT.split())
    monkeypatch.setattr(section_module, "MAX_VALUES", 2 * 6 * n_pos * (n_pos + 1) // 2)
    ctx = ReportContext(config=ReportConfig(lens_prompt=PROMPT), out_dir=tmp_path)
    html = attention_section(tiny_llama, ctx)
    assert embedded(html)[0]["layers"] == [0, 2] == ctx.data["attention"]["layers"]
    assert "only layers 0, 2 are shown" in html


def test_in_a_report(tiny_llama, tmp_path) -> None:
    config = ReportConfig(prompts=(PROMPT,), lens_prompt=PROMPT)
    path = build_report(
        tiny_llama, tmp_path, config=config, sections=[Section("Attention", attention_section)],
        quiet=True,
    )  # fmt: skip
    page = path.read_text()
    assert len(embedded(page)) == 1 and "http" not in page
    assert json.loads((tmp_path / "report.json").read_text())["attention"]["n_heads"] == 6


@pytest.mark.slow
def test_smollm2_section(smollm2, tmp_path) -> None:
    ctx = ReportContext(config=ReportConfig(), out_dir=tmp_path)
    html = attention_section(smollm2, ctx)
    [data] = embedded(html)
    assert len(data["layers"]) == 30 and len(html) < 400_000
    record = ctx.data["attention"]
    # SmolLM2 heads dump most of their attention on the first token (an attention sink)
    assert np.mean(record["first_token"]) > 0.5
    read = record["strongest_last_token_read"]
    assert 1 <= read["key_pos"] <= 11 and read["weight"] > 0.5


@pytest.mark.parametrize(("prompt", "keys"), [("Mary", set()), ("Mary and John", {"self"})])
def test_short_prompts(tiny_llama, tmp_path, prompt: str, keys: set) -> None:
    ctx = ReportContext(config=ReportConfig(lens_prompt=prompt), out_dir=tmp_path)
    html = attention_section(tiny_llama, ctx)
    record = ctx.data["attention"]
    assert len(embedded(html)) == 1 and len(record["str_tokens"]) == len(prompt.split())
    assert keys <= set(record) and "strongest_last_token_read" not in record
    assert ("first_token" in record) == bool(keys)
