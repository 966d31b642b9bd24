"""Rendering: self-contained SVG/HTML with one line per drawn edge."""

from __future__ import annotations

from conftest import hooked, toy_batch
from mechscope.circuits import attribute, render


def test_svg_and_html_are_self_contained(tmp_path) -> None:
    c = attribute(hooked("llama"), toy_batch(), method="eap").top_n(12)
    svg = render.to_svg(c)
    assert svg.startswith("<svg") and svg.count("<line") == 12
    assert "#2166ac" in svg or "#b2182b" in svg
    html = render.to_html(c)
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html and "<script" not in html
    render.save(c, tmp_path / "c.html")
    render.save(c, tmp_path / "c.svg")
    assert (tmp_path / "c.svg").read_text() == svg
