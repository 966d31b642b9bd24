"""Pictures of a circuit: ``to_svg``, ``to_html`` and ``save`` (the calls docs/circuits.md shows).

The drawing lives in the presentation layer, :mod:`mechscope.viz.circuit` (templates
``circuit.svg.j2`` and ``circuit_view.html.j2``), and reads only :meth:`Circuit.to_dict`; these
functions hand it the circuit's JSON. Pages are self-contained (no CDN, no external URL).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mechscope.circuits.circuit import Circuit

__all__ = ["save", "to_html", "to_svg"]


def to_svg(circuit: Circuit, max_edges: int = 2000) -> str:
    """The circuit as an SVG document (the ``max_edges`` of largest |score| are drawn)."""
    from mechscope.viz.circuit import circuit_svg

    return str(circuit_svg(circuit.to_dict(), max_edges))


def to_html(
    circuit: Circuit,
    title: str | None = None,
    max_edges: int = 2000,
    *,
    curve: Sequence[Any] | None = None,
) -> str:
    """A standalone HTML page: the summary, the interactive graph and, with ``curve``
    (faithfulness by number of edges), the faithfulness plot."""
    from mechscope.viz.circuit import circuit_page

    return circuit_page(circuit.to_dict(), curve=curve, title=title, max_edges=max_edges)


def save(
    circuit: Circuit,
    path: str | Path,
    max_edges: int = 2000,
    *,
    curve: Sequence[Any] | None = None,
) -> None:
    """Write ``.svg`` or ``.html`` (chosen by the suffix); ``curve`` adds the plot to a page."""
    path = Path(path)
    if path.suffix == ".svg":
        text = to_svg(circuit, max_edges)
    else:
        text = to_html(circuit, None, max_edges, curve=curve)
    path.write_text(text, "utf-8")
