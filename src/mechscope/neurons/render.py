"""HTML for neuron scans, from the JSON of :func:`~mechscope.neurons.scan_to_dict` (no model).

Each shown unit gets its top windows with every token shaded by the unit's activation (orange for
positive, blue for negative, relative to the unit's maximum; hover shows the value; the maximum is
outlined), an inline SVG histogram (log-scaled counts) and its promoted and suppressed tokens.
"""

from __future__ import annotations

import math
from typing import Any

from mechscope.viz.html import Markup, escape, page, show_token, table

__all__ = ["histogram_svg", "layer_summary", "neuron_block", "neurons_page", "window_html"]

STYLE = """<style>
.nwin { font: 12px/1.9 ui-monospace, SFMono-Regular, Menlo, monospace; margin: 0.2em 0;
        white-space: pre-wrap; word-break: break-all; }
.nwin span { border-radius: 2px; }
.nwin span.peak { outline: 1.5px solid #1b1f24; }
.nval { color: #57606a; display: inline-block; min-width: 5em; }
.ntoks span { margin-right: 0.6em; display: inline-block; }
</style>"""


def _shade(value: float, scale: float) -> str:
    x = 0.0 if scale <= 0 else max(-1.0, min(1.0, value / scale))
    if x >= 0:  # white -> orange
        r, g, b = 255, round(255 - 120 * x), round(255 - 230 * x)
    else:  # white -> blue
        r, g, b = round(255 + 190 * x), round(255 + 120 * x), 255
    return f"#{r:02x}{g:02x}{b:02x}"


def window_html(tokens: list[str], acts: list[float], position: int, scale: float) -> Markup:
    """One window: each token shaded by its activation, hover for the value, peak outlined."""
    spans = []
    for i, (tok, act) in enumerate(zip(tokens, acts, strict=True)):
        cls = ' class="peak"' if i == position else ""
        text = escape(tok.replace("\n", "↵"))  # one window stays one paragraph
        spans.append(
            f'<span{cls} style="background:{_shade(act, scale)}" '
            f'title="{escape(show_token(tok))}: {act:.4g}">{text}</span>'
        )
    return Markup("".join(spans))


def histogram_svg(
    edges: list[float], counts: list[int], width: int = 360, height: int = 110
) -> Markup:
    """Bars of ``counts`` over ``edges`` (counts on a log scale), with the range on the axis."""
    if not counts:
        return Markup("")
    top = math.log1p(max(counts))
    bar = width / len(counts)
    rects = []
    for i, c in enumerate(counts):
        h = 0 if c == 0 else max(1.0, (height - 16) * math.log1p(c) / top)
        rects.append(
            f'<rect x="{i * bar:.1f}" y="{height - 16 - h:.1f}" width="{max(bar - 0.5, 0.5):.1f}" '
            f'height="{h:.1f}" fill="#e8710a"><title>[{edges[i]:.4g}, {edges[i + 1]:.4g}): '
            f"{c}</title></rect>"
        )
    zero = ""
    if edges[0] < 0 < edges[-1]:
        x = width * (0 - edges[0]) / (edges[-1] - edges[0])
        zero = f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{height - 16}" stroke="#57606a"/>'
    labels = (
        f'<text x="0" y="{height - 2}" font-size="10">{edges[0]:.3g}</text>'
        f'<text x="{width}" y="{height - 2}" font-size="10" text-anchor="end">{edges[-1]:.3g}</text>'
    )
    return Markup(
        f'<svg width="{width}" height="{height}" '
        f'role="img" aria-label="activation histogram">{"".join(rects)}{zero}{labels}</svg>'
    )


def _token_list(entries: list[dict[str, Any]]) -> str:
    return "".join(
        f'<span class="tok" title="id {e["id"]}">{escape(show_token(e["token"]))} '
        f"<small>{e['value']:+.3g}</small></span>"
        for e in entries
    )


def neuron_block(entry: dict[str, Any], label: str = "neuron") -> Markup:
    """One unit: statistics, histogram, promoted/suppressed tokens, top windows."""
    scale = max(abs(entry["max"]), abs(entry.get("min", 0.0)), 1e-12)
    head = (
        f"<h3>{escape(label)} {entry['index']}</h3><p>max {entry['max']:.4g}, "
        f"mean {entry['mean']:.3g}, std {entry['std']:.3g}, "
        f"{100 * entry['density']:.1f}% of tokens &gt; 0</p>"
    )
    hist = histogram_svg(entry["histogram"]["edges"], entry["histogram"]["counts"])
    tokens = ""
    if entry["promotes"]:
        tokens = (
            f'<p class="ntoks">promotes: {_token_list(entry["promotes"])}</p>'
            f'<p class="ntoks">suppresses: {_token_list(entry["suppresses"])}</p>'
        )
    rows = "".join(
        f'<div class="nwin"><span class="nval">{w["value"]:.3g}</span>'
        f"{window_html(w['tokens'], w['acts'], w['position'], scale)}</div>"
        for w in entry["top"]
    )
    return Markup(head + hist + tokens + rows)


def layer_summary(data: dict[str, Any], n: int = 30) -> Markup:
    """The ``n`` units of the layer with the largest maxima, as a table."""
    rows = sorted(data["summary"], key=lambda s: -s["max"])[:n]
    body = [
        (s["index"], round(s["max"], 3), round(s["mean"], 4), round(s["std"], 4),
         f"{100 * s['density']:.1f}%")
        for s in rows
    ]  # fmt: skip
    return table(body, ["unit", "max", "mean", "std", "> 0"])


def neurons_page(data: dict[str, Any], title: str) -> str:
    """A self-contained page: the layer summary and every shown unit."""
    label = {"neuron": "neuron", "head": "head", "direction": "direction"}[data["kind"]]
    intro = Markup(
        f'{STYLE}<p class="note">{escape(data["site"])}: {data["tokens"]:,} corpus tokens in '
        f"{data['windows']:,} windows of {data['seq_len']}; top {data['k']} windows per unit by "
        "their maximum activation (hover a token for its value; the maximum is outlined).</p>"
    )
    blocks = "".join(neuron_block(e, label) for e in data["neurons"])
    sections = [
        ("Layer summary", intro + layer_summary(data)),
        (f"Top {label}s", Markup(blocks)),
    ]
    return page(title, sections, subtitle=f"{data['model']} - {data['site']}")
