"""Pictures of a circuit as self-contained SVG or HTML (plain strings: no CDN, no external URL).

Layout: one row per layer (input at the bottom, logits at the top), the layer's heads left to
right and its MLP at the right end. An edge runs from its writer to the node it feeds (a grouped
key/value port to the middle of its query heads); colour gives the sign of its score (blue
positive, red negative), width its |score|, dash the port (q solid, k dashed, v dotted).
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from mechscope.circuits.circuit import Circuit

DX, DY, PAD = 46, 38, 40
DASH = {"q": "", "k": "5,3", "v": "1,3"}


def _positions(circuit: Circuit) -> dict[str, tuple[float, float]]:
    g = circuit.graph
    width = (g.n_heads + 1) * DX
    top = PAD + DY
    rows = g.n_layers + 2
    pos = {"logits": (PAD + width / 2, top - DY / 2)}
    pos["input"] = (PAD + width / 2, top + (rows - 1.5) * DY)
    for layer in range(g.n_layers):
        y = top + (g.n_layers - layer - 0.5) * DY
        for h in range(g.n_heads):
            pos[f"a{layer}.h{h}"] = (PAD + (h + 0.5) * DX, y)
        pos[f"m{layer}"] = (PAD + (g.n_heads + 0.5) * DX, y)
    return pos


def _target(
    circuit: Circuit, port: str, pos: dict[str, tuple[float, float]]
) -> tuple[float, float]:
    if port == "logits":
        return pos["logits"]
    heads = circuit.graph.port_nodes(port)
    xs = [pos[h][0] for h in heads]
    return sum(xs) / len(xs), pos[heads[0]][1]


def to_svg(circuit: Circuit, max_edges: int = 2000) -> str:
    """The circuit as an SVG document (the ``max_edges`` of largest |score| are drawn)."""
    g = circuit.graph
    pos = _positions(circuit)
    w = 2 * PAD + (g.n_heads + 1) * DX
    h = 2 * PAD + (g.n_layers + 2) * DY
    edges = circuit.edges()[:max_edges]
    top = max((abs(s) for _, _, s in edges), default=1.0) or 1.0
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="9">',
        f"<title>{escape(circuit.method)} circuit: {circuit.n_edges} of "
        f"{circuit.total_edges} edges</title>",
    ]
    for src, dst, score in reversed(edges):  # largest drawn last, on top
        (x1, y1), (x2, y2) = pos[src], _target(circuit, dst, pos)
        colour = "#2166ac" if score >= 0 else "#b2182b"
        width = 0.4 + 4.0 * abs(score) / top
        port = dst[-2] if dst.endswith(">") else "q"
        dash = f' stroke-dasharray="{DASH[port]}"' if DASH[port] else ""
        out.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}" '
            f'stroke-width="{width:.2f}" stroke-opacity="0.7"{dash}>'
            f"<title>{escape(src)} -&gt; {escape(dst)}: {score:.4g}</title></line>"
        )
    used = set(circuit.nodes())
    for name, (x, y) in pos.items():
        on = name in used
        fill = "#fdb863" if on and name.startswith("m") else "#ffffff" if not on else "#d1e5f0"
        out.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{9 if on else 4}" fill="{fill}" '
            f'stroke="{"#333" if on else "#bbb"}"><title>{escape(name)}</title></circle>'
        )
        if on:
            out.append(
                f'<text x="{x:.1f}" y="{y + 3:.1f}" text-anchor="middle">{escape(name)}</text>'
            )
    out.append("</svg>")
    return "\n".join(out)


def to_html(circuit: Circuit, title: str | None = None, max_edges: int = 2000) -> str:
    """A standalone HTML page with the SVG and the circuit's summary."""
    title = title or f"{circuit.method} circuit"
    faith = "n/a" if circuit.faithfulness is None else f"{circuit.faithfulness:.3f}"
    summary = (
        f"{circuit.n_edges} of {circuit.total_edges} edges, {len(circuit.nodes())} nodes, "
        f"faithfulness {faith}; model {circuit.meta.get('model')}, task {circuit.meta.get('task')}"
    )
    return (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{escape(title)}</title></head>"
        f"<body><h1>{escape(title)}</h1><p>{escape(summary)}</p>\n"
        f"{to_svg(circuit, max_edges)}\n</body></html>\n"
    )


def save(circuit: Circuit, path: str | Path, max_edges: int = 2000) -> None:
    """Write ``.svg`` or ``.html`` (chosen by the suffix)."""
    path = Path(path)
    text = (
        to_svg(circuit, max_edges) if path.suffix == ".svg" else to_html(circuit, None, max_edges)
    )
    path.write_text(text)
