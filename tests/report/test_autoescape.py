"""Autoescaping is on in every page type: a ``<script>`` token in a prompt, a token, a site, a
model or a task name shows as text and never becomes markup."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from mechscope import HookedModel
from mechscope.circuits.circuit import Circuit
from mechscope.circuits.graph import Graph
from mechscope.lenses.logit_lens import LogitLensResult
from mechscope.probes.api import ProbeResult, SiteScore
from mechscope.report import ReportConfig, build_report
from mechscope.viz import page, render, table
from mechscope.viz.attention import attention_html
from mechscope.viz.circuit import circuit_page
from mechscope.viz.heatmap import heatmap_page
from mechscope.viz.lens import lens_page
from mechscope.viz.neurons import neurons_page
from mechscope.viz.probe import probe_page

EVIL = "<script>alert(1)</script>"
SAFE = "&lt;script&gt;alert(1)&lt;/script&gt;"


def check(html: str) -> None:
    assert "<script>alert" not in html and "alert(1)</script>" not in html
    assert SAFE in html


def test_generic_page_and_table() -> None:
    check(page(EVIL, [(EVIL, table([[EVIL]], [EVIL]))], subtitle=EVIL))
    check(render("skipped.html.j2", reason=EVIL))


def test_attention_page() -> None:
    p = np.tril(np.ones((1, 1, 3, 3)))
    p /= p.sum(-1, keepdims=True)
    check(attention_html([EVIL, "a", "b"], p, title=EVIL, subtitle=EVIL))


def test_circuit_page() -> None:
    g = Graph(1, 2, 2, False)
    scores = torch.zeros(len(g.nodes), len(g.ports))
    scores[0, -1], scores[1, -1] = 0.5, -0.25
    meta = {"model": EVIL, "task": EVIL, "selection": EVIL}
    data = Circuit(g, scores, scores != 0, method=EVIL, meta=meta).to_dict()
    check(circuit_page(data, curve=[(1, 0.5), (2, 0.9)], title=EVIL))


def _unit(token: str) -> dict:
    window = {"window": 0, "text": token, "tokens": [token, "x"], "acts": [1.0, 0.5],
              "position": 0, "value": 1.0}  # fmt: skip
    return {"index": 3, "max": 1.0, "min": 0.0, "mean": 0.1, "std": 0.2, "density": 0.5,
            "top": [window], "histogram": {"edges": [0.0, 0.5, 1.0], "counts": [2, 1]},
            "promotes": [{"token": token, "id": 1, "value": 0.3}],
            "suppresses": [{"token": token, "id": 2, "value": -0.3}]}  # fmt: skip


def test_neurons_page() -> None:
    data = {"model": EVIL, "layer": 0, "site": EVIL, "kind": "neuron", "tokens": 10,
            "windows": 1, "seq_len": 2, "k": 1, "summary": [_unit(EVIL)],
            "neurons": [_unit(EVIL)]}  # fmt: skip
    html = neurons_page(data, EVIL)
    check(html)
    assert html.count(SAFE) >= 5  # title, subtitle, site, window token, promoted token


def test_lens_page() -> None:
    result = LogitLensResult(
        site=EVIL, layers=np.arange(2), tokens=np.arange(3), positions=np.arange(3),
        top_ids=np.zeros((2, 3, 2), int), top_probs=np.full((2, 3, 2), 0.5), target=0,
        target_rank=np.zeros((2, 3), int), target_prob=np.full((2, 3), 0.5),
        kl=np.ones((2, 3)),
    )  # fmt: skip
    check(lens_page({"logit": result}, [EVIL, "a", "b"], lambda i: EVIL, prompt=EVIL, model=EVIL))


def test_probe_and_heatmap_pages() -> None:
    s = SiteScore(EVIL, 0, 0.9, None, None, None, None, 0.5)
    result = ProbeResult(EVIL, EVIL, "logistic", (EVIL, "b"), 10, 8, 2, (s,), {"seed": EVIL})
    check(probe_page(result, model=EVIL))
    check(heatmap_page(EVIL, np.ones((2, 3)), ("layer", "pos"), subtitle=EVIL))


def test_report(tiny: HookedModel, small_corpus, tmp_path: Path) -> None:
    config = dataclasses.replace(ReportConfig.for_prompts([f"Mary {EVIL}"]), corpus=small_corpus)
    html = build_report(tiny, tmp_path, config=config, quiet=True).read_text("utf-8")
    check(html)


@pytest.mark.parametrize("name", ["page.html.j2", "report/model_card.html.j2"])
def test_templates_are_autoescaped(name: str) -> None:
    from mechscope.viz.html import _environment

    env = _environment()
    assert env.is_async is False and env.autoescape is True
    assert env.get_template(name).environment is env


def test_no_python_module_writes_html() -> None:
    """HTML lives in viz/templates; Python builds the context (a docstring may name a tag)."""
    import ast
    import re

    import mechscope

    tag = re.compile(r"<(p|div|span|table|td|tr|th|svg|section|h[1-6]|code|strong|rect|path)[ >/]")
    found = []
    for path in Path(mechscope.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text("utf-8"))
        docs = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            text = node.value if isinstance(node, ast.Constant) else None
            if isinstance(text, str) and id(node) not in docs and tag.search(text):
                found.append(f"{path.name}:{node.lineno}")
    assert found == []
