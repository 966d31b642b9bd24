"""Neuron, latent and direction examples, from the JSON of :func:`~mechscope.neurons.scan_to_dict`.

Each shown unit gets its top windows with every token shaded by the unit's activation (orange for
positive, blue for negative, relative to the unit's maximum; hover shows the value; the maximum is
outlined), an inline SVG histogram (log-scaled counts) and its promoted and suppressed tokens.
Templates: ``neuron_block.html.j2``, ``histogram.svg.j2``, ``neurons_summary.html.j2``.
"""

from __future__ import annotations

import math
from typing import Any

from mechscope.viz.html import Markup, page, render

__all__ = ["histogram_svg", "layer_summary", "neuron_block", "neurons_page", "shade"]


def shade(value: float, scale: float) -> str:
    """White to orange for ``value / scale`` in (0, 1], white to blue below 0, as ``#rrggbb``."""
    x = 0.0 if scale <= 0 else max(-1.0, min(1.0, value / scale))
    if x >= 0:  # white -> orange
        r, g, b = 255, round(255 - 120 * x), round(255 - 230 * x)
    else:  # white -> blue
        r, g, b = round(255 + 190 * x), round(255 + 120 * x), 255
    return f"#{r:02x}{g:02x}{b:02x}"


def histogram_svg(
    edges: list[float], counts: list[int], width: int = 360, height: int = 110
) -> Markup:
    """Bars of ``counts`` over ``edges`` (counts on a log scale), with the range on the axis."""
    if not counts:
        return Markup("")
    top = math.log1p(max(counts))
    step = width / len(counts)
    bars = []
    for i, c in enumerate(counts):
        h = 0 if c == 0 else max(1.0, (height - 16) * math.log1p(c) / top)
        bars.append({"x": i * step, "y": height - 16 - h, "w": max(step - 0.5, 0.5), "h": h,
                     "lo": edges[i], "hi": edges[i + 1], "count": c})  # fmt: skip
    zero = None
    if edges[0] < 0 < edges[-1]:
        zero = width * (0 - edges[0]) / (edges[-1] - edges[0])
    return render("histogram.svg.j2", width=width, height=height, bars=bars, zero=zero,
                  lo=edges[0], hi=edges[-1])  # fmt: skip


def _windows(entry: dict[str, Any], scale: float) -> list[dict[str, Any]]:
    return [
        {
            "value": w["value"],
            "tokens": [
                {"token": t, "act": a, "color": shade(a, scale), "peak": i == w["position"]}
                for i, (t, a) in enumerate(zip(w["tokens"], w["acts"], strict=True))
            ],
        }
        for w in entry["top"]
    ]


def neuron_block(entry: dict[str, Any], label: str = "neuron") -> Markup:
    """One unit: statistics, histogram, promoted/suppressed tokens, top windows."""
    scale = max(abs(entry["max"]), abs(entry.get("min", 0.0)), 1e-12)
    hist = histogram_svg(entry["histogram"]["edges"], entry["histogram"]["counts"])
    return render("neuron_block.html.j2", entry=entry, label=label, histogram=hist,
                  windows=_windows(entry, scale))  # fmt: skip


def layer_summary(data: dict[str, Any], n: int = 30) -> Markup:
    """The ``n`` units of the layer with the largest maxima, as a table."""
    rows = sorted(data["summary"], key=lambda s: -s["max"])[:n]
    return render("neurons_summary.html.j2", rows=rows)


def neurons_page(data: dict[str, Any], title: str) -> str:
    """A self-contained page: the layer summary and every shown unit."""
    label = {"neuron": "neuron", "head": "head", "direction": "direction"}[data["kind"]]
    intro = render("neurons_intro.html.j2", data=data)
    blocks = Markup("").join(neuron_block(e, label) for e in data["neurons"])
    sections = [
        ("Layer summary", intro + layer_summary(data)),
        (f"Top {label}s", blocks),
    ]
    return page(title, sections, subtitle=f"{data['model']} - {data['site']}")
