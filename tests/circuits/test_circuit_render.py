"""Rendering: self-contained SVG/HTML with one path per drawn edge, laid out by layer, with a
legend, an edge slider and a labelled faithfulness plot."""

from __future__ import annotations

import re

from conftest import hooked, toy_batch
from mechscope.circuits import attribute, render
from mechscope.viz.circuit import circuit_svg, curve_points, faithfulness_figure


def test_svg_and_html_are_self_contained(tmp_path) -> None:
    c = attribute(hooked("llama"), toy_batch(), method="eap").top_n(12)
    svg = render.to_svg(c)
    assert svg.startswith("<svg") and svg.count('<path class="mscirc-edge') == 12
    assert "#2166ac" in svg or "#b2182b" in svg
    assert "mscirc-off" not in svg  # a .svg file has no script: every edge is drawn
    html = render.to_html(c)
    assert "http://" not in html and "https://" not in html and "<script src" not in html
    assert html.count('<path class="mscirc-edge') == 12 and 'type="range"' in html
    assert "<style>" in html and "font: 14px/1.45 system-ui" in html  # the shared stylesheet
    render.save(c, tmp_path / "c.html")
    render.save(c, tmp_path / "c.svg")
    assert (tmp_path / "c.svg").read_text() == svg


def _ys(svg: str, name: str) -> float:
    m = re.search(
        rf'data-node="{re.escape(name)}"><title>[^<]*</title><rect x="[^"]+" y="([^"]+)"', svg
    )
    assert m, name
    return float(m.group(1))


def test_layout_by_layer_strongest_edges_first_and_scores_on_hover() -> None:
    c = attribute(hooked("llama"), toy_batch(), method="eap").top_n(40)
    data = c.to_dict()
    svg = str(circuit_svg(data, shown=5, standalone=False))
    assert "xmlns" not in svg
    ys = {n: _ys(svg, n) for n in data["nodes"]}
    assert ys["logits"] < min(v for n, v in ys.items() if n != "logits")  # logits on top
    if "input" in ys:
        assert ys["input"] > max(v for n, v in ys.items() if n != "input")  # inputs at the bottom
    for n, y in ys.items():
        if n.startswith(("a", "m")):
            layer = int(n[1:].split(".")[0])
            for other, y2 in ys.items():
                if other.startswith(("a", "m")) and int(other[1:].split(".")[0]) < layer:
                    assert y < y2, (n, other)  # a later layer sits higher
    ranks = [int(r) for r in re.findall(r'data-rank="(\d+)"', svg)]
    off = [int(r) for r in re.findall(r'mscirc-edge mscirc-off" data-rank="(\d+)"', svg)]
    assert sorted(ranks) == list(range(40)) and sorted(off) == list(range(5, 40))
    strongest = max(data["edges"], key=lambda e: abs(e["score"]))
    title = f"{strongest['src']} → {strongest['dst']}: score {strongest['score']:+.4g} (rank 1)"
    assert title.replace(">", "&gt;").replace("<", "&lt;") in svg
    node = strongest["src"]
    assert re.search(rf'data-node="{re.escape(node)}"><title>{re.escape(node)}: \d+ edges in', svg)


def test_faithfulness_plot_labels_every_line_and_axis() -> None:
    curve = [{"edges": 10, "fraction": 0.01, "faithfulness": 0.3},
             {"n_edges": 100, "faithfulness": 0.9}, (50, 0.6)]  # fmt: skip
    points = curve_points(curve, total_edges=1000)
    assert [p["edges"] for p in points] == [10, 50, 100]
    assert [p["fraction"] for p in points] == [0.01, 0.05, 0.1]
    fig = faithfulness_figure(curve, 1000, chosen=50, method="eap")
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert "target faithfulness 0.8" in labels and "this circuit (50 edges)" in labels
    assert any(
        line.get_linestyle() == "--" and line.get_ydata()[0] == 0.8 for line in ax.get_lines()
    )
    assert "edges" in ax.get_xlabel() and "faithfulness" in ax.get_ylabel()
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if 10 <= t <= 100]
    assert len(ticks) >= 3  # 10, 20, 50, 100
    assert any("% of all 1,000 edges" in a.get_xlabel() for a in fig.axes + ax.child_axes)
