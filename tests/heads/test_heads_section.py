"""The report's head-detector section on a tiny Llama with a tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch

from mechscope import HookedModel
from mechscope.heads import head_scores
from mechscope.models.tiny import tiny_model, tiny_tokenizer
from mechscope.report.context import ReportConfig, ReportContext
from mechscope.report.heads_section import HEADS_SEQS, heads_section

KEYS = ["induction", "previous_token", "duplicate_token", "attention_sink", "copy_suppression"]


def test_heads_section_records_the_scores(tmp_path: Path) -> None:
    model = HookedModel(tiny_model("llama"), tiny_tokenizer())
    ctx = ReportContext(ReportConfig(), tmp_path)
    html = heads_section(model, ctx)
    data = ctx.data["heads"]
    expected = head_scores(model, n_seqs=HEADS_SEQS, seq_len=data["settings"]["seq_len"])
    for key in KEYS:
        torch.testing.assert_close(torch.tensor(data[key]), expected.scores[key])
    top = data["classification"]["induction"][0]
    assert f"L{top['layer']}H{top['head']}" in html
    assert "<img" in html and "http" not in html
    assert (tmp_path / "heads.png").read_bytes()[:4] == b"\x89PNG"
