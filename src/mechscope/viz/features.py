"""The web UI's pages (``mechscope serve``), rendered from feature-database JSON.

Templates: ``templates/features/*.html.j2``; the pages link ``/assets/style.css``,
``/assets/features.css`` and ``/assets/features.js`` (served by the app: the pages' CSP allows no
inline script or style). Tokens carry their activation in ``data-v``; the script shades them
(orange positive, blue negative, relative to the feature's largest |activation|, as the neuron
pages do) and shows the value on hover.
"""

from __future__ import annotations

import math
from typing import Any

from mechscope.viz.html import Markup, render
from mechscope.viz.neurons import histogram_svg

__all__ = [
    "error_page",
    "feature_page",
    "index_page",
    "infer_page",
    "scatter_svg",
    "search_page",
    "source_page",
]

MAX_QUERY = 500


def _page(template: str, title: str, **context: Any) -> str:
    return str(render(f"features/{template}", title=title, max_query=MAX_QUERY, **context))


def index_page(meta: dict[str, str], sources: list[dict[str, Any]]) -> str:
    return _page("index.html.j2", "Sources", meta=meta, sources=sources)


def search_page(q: str, mode: str, results: list[dict[str, Any]], error: str = "") -> str:
    title = f"Search: {q}" if q else "Search"
    return _page("search.html.j2", title, q=q, mode=mode, results=results, error=error)


def _intervals(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[float, float], list[dict[str, Any]]] = {}
    for e in examples:
        groups.setdefault((e["lo"], e["hi"]), []).append(e)
    return [{"lo": lo, "hi": hi, "examples": exs} for (lo, hi), exs in sorted(groups.items())]


def feature_page(f: dict[str, Any], n_features: int) -> str:
    """A feature's dashboard: explanations and scores, histogram, logit table, neighbours, top /
    interval / non-activating examples."""
    scale = max(abs(f["max"]), abs(f["min"]), 1e-12)
    hist = histogram_svg(f["histogram"]["edges"], f["histogram"]["counts"])
    return _page("feature.html.j2", f"{f['source']} / {f['index']}", f=f, scale=scale,
                 histogram=hist, quantiles=_intervals(f["quantile_examples"]),
                 n_features=n_features)  # fmt: skip


def scatter_svg(source: str, stats: list[dict[str, Any]], width: int = 640, height: int = 300) -> Markup:  # fmt: skip
    """Every feature as a dot: log density (x) against maximum (y); each links to its page."""
    floor = 1e-6
    dens = [math.log10(max(s["density"], floor)) for s in stats]
    maxs = [s["max"] for s in stats]
    if not stats:
        return Markup("")
    dlo, dhi = min(dens), max(dens)
    mlo, mhi = min(maxs), max(maxs)
    dspan, mspan = (dhi - dlo) or 1.0, (mhi - mlo) or 1.0
    dots = [
        {"index": s["index"], "max": s["max"], "density": s["density"],
         "x": 44 + (width - 50) * (d - dlo) / dspan, "y": 6 + (height - 30) * (1 - (s["max"] - mlo) / mspan)}
        for s, d in zip(stats, dens, strict=True)
    ]  # fmt: skip
    return render("features/scatter.svg.j2", width=width, height=height, dots=dots,
                  source=source, dlo=10**dlo, dhi=10**dhi, mlo=mlo, mhi=mhi)  # fmt: skip


def source_page(
    src: dict[str, Any],
    stats: list[dict[str, Any]],
    n: int = 25,
    scores: list[dict[str, Any]] | None = None,
) -> str:
    """A source overview: the density-max scatter of every feature, the top tables and, when
    explanations were scored, each scorer's histogram against the shuffled control."""
    from mechscope.viz.autointerp import score_histograms_svg

    by_max = sorted(stats, key=lambda s: -s["max"])[:n]
    by_density = sorted(stats, key=lambda s: -s["density"])[:n]
    rarest = sorted((s for s in stats if s["density"] > 0), key=lambda s: s["density"])[:n]
    tables = [("Largest maximum", by_max), ("Densest", by_density), ("Rarest (density > 0)", rarest)]  # fmt: skip
    return _page("source.html.j2", f"Source {src['source']}", src=src,
                 scatter=scatter_svg(src["source"], stats), tables=tables,
                 score_hist=score_histograms_svg(scores) if scores else None)  # fmt: skip


def infer_page(sources: list[dict[str, Any]], max_text: int, max_limit: int) -> str:
    return _page("infer.html.j2", "Try a text", sources=sources, max_text=max_text, max_limit=max_limit)  # fmt: skip


def error_page(message: str) -> str:
    return _page("error.html.j2", "Not found" if "no " in message else "Error", message=message)
