"""The interactive attribution-graph view: one self-contained page from a graph's JSON
(circuit-tracer's format); the layout and interaction live in ``assets/graph.js``."""

from __future__ import annotations

from typing import Any

from mechscope.viz.html import Markup, page, render

__all__ = ["graph_page", "graph_view"]


def graph_view(payload: dict[str, Any], auto_groups: list[list[str]] | None = None) -> Markup:
    """The view of ``payload`` (nodes, links, metadata); ``auto_groups`` offered as supernodes."""
    return render("graph_view.html.j2", payload=payload, auto_groups=auto_groups or [])


def graph_page(payload: dict[str, Any]) -> str:
    """A whole page: the view, with supernodes from :func:`mechscope.graphs.groups.auto_supernodes`."""
    from mechscope.graphs.groups import auto_supernodes

    meta = payload["metadata"]
    info = meta.get("info", {})
    subtitle = (
        f"{info.get('model', '')} · {len(payload['nodes'])} nodes, {len(payload['links'])} links"
        f" · replacement score {info.get('replacement_score', float('nan')):.3f}"
        f" · completeness {info.get('completeness_score', float('nan')):.3f}"
    )
    view = graph_view(payload, auto_supernodes(payload))
    return page(
        f"Attribution graph: {meta.get('prompt', '')}", [("Graph", view)], subtitle=subtitle
    )
