"""The circuit view: the graph of a circuit laid out by layer, and its faithfulness curve.

Takes the circuit's JSON (:meth:`mechscope.circuits.Circuit.to_dict`), never a model. Layout: one
row per layer, the input embeddings at the bottom and the logits at the top; a layer's heads left
to right and its MLP at the right end. An edge runs from its writer up to the node it feeds (a
grouped key/value port to the middle of its query heads) as a curve; colour is the sign of its
score (blue positive, red negative), width its |score| (relative to the largest), dash the port
(q solid, k dashed, v dotted). Nodes of the circuit are labelled boxes; the rest of the graph is
grey dots. The page shows the ``shown`` strongest edges at first, with a slider for more
(``templates/assets/circuit.js``); hovering an edge or a node gives its score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mechscope.circuits.graph import Graph
from mechscope.viz.html import Markup, figure_uri, page, render

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["circuit_page", "circuit_svg", "circuit_view", "curve_points", "faithfulness_figure"]

DX, DY, LEFT, TOP = 62, 40, 56, 16  # column and row pitch, left gutter, top margin
BOX_W, BOX_H = 50, 18  # a labelled node
POSITIVE, NEGATIVE = "#2166ac", "#b2182b"
DASH = {"q": "", "k": "6,3", "v": "1.5,3"}
SHOWN = 30  # edges drawn at first on a page
FILL = {"head": "#d1e5f0", "mlp": "#fdb863", "end": "#e6e6e6"}


def _positions(g: Graph) -> dict[str, tuple[float, float]]:
    mid = LEFT + (g.n_heads + 1) * DX / 2
    pos = {"logits": (mid, TOP + DY / 2), "input": (mid, TOP + (g.n_layers + 1.5) * DY)}
    for layer in range(g.n_layers):
        y = TOP + (g.n_layers - layer + 0.5) * DY
        for h in range(g.n_heads):
            pos[f"a{layer}.h{h}"] = (LEFT + (h + 0.5) * DX, y)
        pos[f"m{layer}"] = (LEFT + (g.n_heads + 0.5) * DX + 8, y)
    return pos


def _path(a: tuple[float, float], b: tuple[float, float]) -> str:
    """A curve from the top of writer ``a`` up to the bottom of reader ``b`` (same row: an arc)."""
    (x1, y1), (x2, y2) = a, b
    if abs(y1 - y2) < 1:  # a head feeding its own layer's MLP
        y = y1 - BOX_H / 2
        return f"M{x1:.1f},{y:.1f} C{x1:.1f},{y - 26:.1f} {x2:.1f},{y - 26:.1f} {x2:.1f},{y:.1f}"
    y1, y2 = y1 - BOX_H / 2, y2 + BOX_H / 2
    k = (y1 - y2) * 0.45
    return f"M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 - k:.1f} {x2:.1f},{y2 + k:.1f} {x2:.1f},{y2:.1f}"


def _edges(data: Mapping[str, Any], g: Graph, pos: dict, max_edges: int) -> list[dict]:
    edges = sorted(data["edges"], key=lambda e: -abs(e["score"]))[:max_edges]
    top = max((abs(e["score"]) for e in edges), default=1.0) or 1.0
    out = []
    for rank, e in enumerate(edges):
        dst = e["dst"]
        readers = (dst,) if dst == "logits" else g.port_nodes(dst)
        target = pos[readers[0]]
        if len(readers) > 1:
            target = (sum(pos[r][0] for r in readers) / len(readers), target[1])
        port = dst[-2] if dst.endswith(">") else "q"
        out.append(
            {
                **e,
                "rank": rank,
                "readers": " ".join(readers),
                "path": _path(pos[e["src"]], target),
                "color": POSITIVE if e["score"] >= 0 else NEGATIVE,
                "width": round(0.8 + 5.2 * abs(e["score"]) / top, 2),
                "dash": DASH[port],
            }
        )
    return out


def _node_tips(edges: list[dict]) -> dict[str, str]:
    """Per node: its drawn edges in and out, with their summed scores."""
    ins: dict[str, list[float]] = {}
    outs: dict[str, list[float]] = {}
    for e in edges:
        outs.setdefault(e["src"], []).append(e["score"])
        for r in e["readers"].split():
            ins.setdefault(r, []).append(e["score"])
    return {
        n: f"{n}: {len(ins.get(n, []))} edges in (sum {sum(ins.get(n, [])):+.4g}), "
        f"{len(outs.get(n, []))} out (sum {sum(outs.get(n, [])):+.4g})"
        for n in ins.keys() | outs.keys()
    }


def _layout(data: Mapping[str, Any], max_edges: int, shown: int | None) -> dict[str, Any]:
    g = Graph(**data["graph"])
    pos = _positions(g)
    edges = _edges(data, g, pos, max_edges)
    shown = len(edges) if shown is None else min(shown, len(edges))
    visible = {e["src"] for e in edges[:shown]}
    visible.update(r for e in edges[:shown] for r in e["readers"].split())
    tips = _node_tips(edges)  # the nodes the drawn edges touch
    nodes = []
    for name, (x, y) in pos.items():
        kind = "mlp" if name.startswith("m") else "end" if name in ("input", "logits") else "head"
        wide = kind == "end"
        nodes.append({
            "name": name, "x": x, "y": y, "kind": kind, "used": name in tips,
            "on": name in visible, "w": BOX_W + 14 * wide, "fill": FILL[kind],
            "tip": tips.get(name, name),
        })  # fmt: skip
    rows = [(f"L{layer}", TOP + (g.n_layers - layer + 0.5) * DY) for layer in range(g.n_layers)]
    columns = [(f"h{h}", LEFT + (h + 0.5) * DX) for h in range(g.n_heads)]
    columns.append(("MLP", LEFT + (g.n_heads + 0.5) * DX + 8))
    return {
        "edges": edges, "nodes": nodes, "rows": rows, "columns": columns, "shown": shown,
        "width": LEFT + (g.n_heads + 1) * DX + 24, "height": TOP + (g.n_layers + 2) * DY + 30,
        "box_h": BOX_H, "max_score": max((abs(e["score"]) for e in edges), default=0.0),
    }  # fmt: skip


def circuit_svg(
    data: Mapping[str, Any],
    max_edges: int = 2000,
    *,
    shown: int | None = None,
    standalone: bool = True,
) -> Markup:
    """The circuit graph as SVG (the ``max_edges`` of largest |score|; the first ``shown`` on).

    ``standalone`` adds the SVG namespace a ``.svg`` file needs (HTML5 needs none, so an inline
    graph names no URL at all).
    """
    return render("circuit.svg.j2", standalone=standalone, data=data,
                  **_layout(data, max_edges, shown))  # fmt: skip


def circuit_view(data: Mapping[str, Any], max_edges: int = 2000, shown: int = SHOWN) -> Markup:
    """The interactive view (an HTML fragment): legend, edge slider, graph and hover readout."""
    layout = _layout(data, max_edges, shown)
    svg = render("circuit.svg.j2", standalone=False, data=data, **layout)
    return render("circuit_view.html.j2", data=data, svg=svg, **layout)


def curve_points(curve: Sequence[Any], total_edges: int | None = None) -> list[dict[str, float]]:
    """``[{"edges", "fraction", "faithfulness", "ci"}]`` from curve entries: dicts carrying
    ``edges`` or ``n_edges`` (and ``fraction``, else computed from ``total_edges``; ``ci``, else
    None) or ``(edges, value)``."""
    points = []
    for p in curve:
        ci = None
        if isinstance(p, Mapping):
            n = p["edges"] if "edges" in p else p["n_edges"]
            fraction, value, ci = p.get("fraction"), p["faithfulness"], p.get("ci")
        else:
            (n, value), fraction = p, None
        if fraction is None and total_edges:
            fraction = n / total_edges
        points.append({"edges": int(n), "fraction": fraction, "faithfulness": float(value),
                       "ci": None if ci is None else [float(ci[0]), float(ci[1])]})  # fmt: skip
    return sorted(points, key=lambda p: p["edges"])


def faithfulness_figure(
    curve: Sequence[Any],
    total_edges: int | None = None,
    *,
    chosen: int | None = None,
    chosen_value: float | None = None,
    method: str = "",
    target: float = 0.8,
    chosen_ci: Sequence[float] | None = None,
) -> Figure:
    """Faithfulness against the number of edges kept (log x) with the ``target`` line labelled,
    the circuit of ``chosen`` edges marked (at ``chosen_value``, else at its curve point; with
    its interval ``chosen_ci``), the points' 95% intervals as a band when every point has one and,
    when ``total_edges`` is known, the share of all edges on the top axis."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    points = curve_points(curve, total_edges)
    xs, ys = [p["edges"] for p in points], [p["faithfulness"] for p in points]
    fig = Figure(figsize=(9.5, 4))
    ax = fig.add_subplot()
    label = f"top-n {method} circuit".replace("  ", " ")
    ax.plot(xs, ys, marker="o", color="#2166ac", label=f"faithfulness of the {label}")
    if points and all(p["ci"] is not None for p in points):
        lows, highs = [p["ci"][0] for p in points], [p["ci"][1] for p in points]
        ax.fill_between(xs, lows, highs, color="#2166ac", alpha=0.18, lw=0,
                        label="95% interval over prompts")  # fmt: skip
        ys_span = [*lows, *highs]
    else:
        ys_span = []
    ax.axhline(target, color="#57606a", ls="--", lw=1, label=f"target faithfulness {target:g}")
    ax.axhline(1.0, color="#bbbbbb", ls=":", lw=1, label="full model (1)")
    if chosen is not None:
        y = [chosen_value] if chosen_value is not None else []
        y = y or [v for x, v in zip(xs, ys, strict=True) if x == chosen]
        if y:
            ax.plot([chosen], y, marker="*", ms=14, color="#d1242f", ls="",
                    label=f"this circuit ({chosen} edges)")  # fmt: skip
            if chosen_ci is not None:
                ax.errorbar([chosen], y, yerr=[[y[0] - chosen_ci[0]], [chosen_ci[1] - y[0]]],
                            color="#d1242f", capsize=4, ls="")  # fmt: skip
                ys_span += list(chosen_ci)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("edges kept (number, log scale)")
    ax.set_ylabel("faithfulness (0 = corrupted run, 1 = full model)")
    ax.set_title("Faithfulness versus circuit size")
    ax.grid(alpha=0.3, which="both")
    if total_edges:
        top = ax.secondary_xaxis(
            "top", functions=(lambda n: 100 * n / total_edges, lambda p: p * total_edges / 100)
        )
        top.set_xlabel(f"% of all {total_edges:,} edges")
        top.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}%"))
    ax.text(1.0, target, f" target {target:g}", transform=ax.get_yaxis_transform(),
            va="center", ha="left", fontsize=8, color="#57606a")  # fmt: skip
    span = [*ys, *ys_span]
    ax.set_ylim(min(0.0, min(span) - 0.05), max(1.05, max(span) + 0.05))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.12, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def circuit_page(
    data: Mapping[str, Any],
    *,
    curve: Sequence[Any] | None = None,
    title: str | None = None,
    max_edges: int = 2000,
) -> str:
    """A self-contained page: the summary, the interactive graph and (with ``curve``) the plot."""
    title = title or f"{data.get('method') or 'circuit'} circuit"
    summary = render("circuit_summary.html.j2", data=data)
    sections = [("Circuit", summary + circuit_view(data, max_edges))]
    if curve:
        fig = faithfulness_figure(
            curve,
            data["total_edges"],
            chosen=data["n_edges"],
            chosen_value=data["faithfulness"],
            method=data.get("method", ""),
        )
        sections.append(
            ("Faithfulness", render("figure.html.j2", uri=figure_uri(fig), alt="faithfulness"))
        )
    subtitle = f"model {data.get('model')}, task {data.get('task')}"
    return page(title, sections, subtitle=subtitle)
