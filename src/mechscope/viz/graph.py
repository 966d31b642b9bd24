"""The interactive attribution-graph view: one self-contained page from a graph's JSON
(circuit-tracer's format), and the web UI's graph pages (``mechscope serve --graphs DIR``); the
layout and interaction live in ``assets/graph.js``, the style in ``assets/graph.css``."""

from __future__ import annotations

from typing import Any

from mechscope.viz.html import Markup, page, render

__all__ = ["graph_index_page", "graph_page", "graph_server_page", "graph_view"]

MAX_QUERY = 500  # the web UI's search box (as in mechscope.viz.features)


def graph_view(
    payload: dict[str, Any],
    auto_groups: list[list[str]] | None = None,
    examples: dict[str, Any] | None = None,
    external: bool = False,
) -> Markup:
    """The view of ``payload`` (nodes, links, metadata); ``auto_groups`` offered as supernodes;
    ``examples`` (:func:`mechscope.graphs.examples.node_examples`) shown on hover; ``external``
    links the style and script (``/assets/graph.*``) instead of inlining them."""
    return render("graph_view.html.j2", payload=payload, auto_groups=auto_groups or [],
                  examples=examples or {}, external=external)  # fmt: skip


def _subtitle(payload: dict[str, Any]) -> str:
    info = payload["metadata"].get("info", {})
    return (
        f"{info.get('model', '')} · {len(payload['nodes'])} nodes, {len(payload['links'])} links"
        f" · replacement score {info.get('replacement_score', float('nan')):.3f}"
        f" · completeness {info.get('completeness_score', float('nan')):.3f}"
    )


def graph_page(payload: dict[str, Any], examples: dict[str, Any] | None = None) -> str:
    """A whole page: the view, with supernodes from :func:`mechscope.graphs.groups.auto_supernodes`
    and, when given, the feature database's examples."""
    from mechscope.graphs.groups import auto_supernodes

    view = graph_view(payload, auto_supernodes(payload), examples)
    title = f"Attribution graph: {payload['metadata'].get('prompt', '')}"
    return page(title, [("Graph", view)], subtitle=_subtitle(payload))


def graph_server_page(
    name: str, payload: dict[str, Any], examples: dict[str, Any], note: str = ""
) -> str:
    """The web UI's page of the stored graph ``name`` (style and script linked, not inlined)."""
    from mechscope.graphs.groups import auto_supernodes

    view = graph_view(payload, auto_supernodes(payload), examples, external=True)
    return str(render("features/graph.html.j2", title=f"Graph {name}", name=name, view=view,
                      subtitle=_subtitle(payload), note=note, max_query=MAX_QUERY))  # fmt: skip


def graph_index_page(graphs: list[dict[str, Any]], folder: str | None) -> str:
    """The web UI's list of stored graphs (``[{"name", "prompt", "model", "nodes", ...}]``)."""
    return str(render("features/graphs.html.j2", title="Attribution graphs", graphs=graphs,
                      folder=folder, max_query=MAX_QUERY))  # fmt: skip
