"""Self-contained HTML: pages, tables, heatmap cells and embedded PNG figures.

Everything is inline (CSS in a ``<style>`` block, figures as base64 ``data:`` URIs), so a page
opens offline and never fetches anything: no CDN, no external URL. Text is escaped on the way
in; only :class:`Markup` (HTML built by these helpers) passes through unescaped.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "Cell",
    "Markup",
    "escape",
    "figure_img",
    "heat_color",
    "page",
    "png_bytes",
    "save_png",
    "section",
    "show_token",
    "table",
]

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em;
       padding: 0 1em; color: #1b1f24; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em;
     border-bottom: 1px solid #d0d7de; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #d0d7de; padding: 0.2em 0.55em; text-align: left;
         vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.tok { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; white-space: pre; }
.note { color: #57606a; }
img { max-width: 100%; }
"""


_INVISIBLE = {" ": "␣", "\xa0": "⍽", "\n": "↵", "\r": "␍", "\t": "→"}


class Markup(str):
    """HTML that is already safe and is inserted as is."""


@dataclass(frozen=True)
class Cell:
    """A table cell: text (escaped), an optional background colour and tooltip, CSS classes."""

    text: Any
    background: str | None = None
    title: str | None = None
    cls: str | None = None


def escape(value: Any) -> Markup:
    """``value`` as HTML text (a :class:`Markup` passes through unchanged)."""
    return value if isinstance(value, Markup) else Markup(html.escape(str(value), quote=True))


def show_token(token: str) -> str:
    """A token with its invisible characters made visible: space ␣, no-break space ⍽, newline ↵,
    tab →; the empty string is ∅."""
    for char, mark in _INVISIBLE.items():
        token = token.replace(char, mark)
    return token or "∅"


def heat_color(value: float, vmin: float = 0.0, vmax: float = 1.0) -> str:
    """A white-to-blue background for ``value`` within ``[vmin, vmax]`` (clipped), as ``#rrggbb``."""
    span = vmax - vmin
    x = 0.0 if span <= 0 else min(1.0, max(0.0, (value - vmin) / span))
    low, high = (255, 255, 255), (66, 133, 244)
    r, g, b = (round(lo + (hi - lo) * x) for lo, hi in zip(low, high, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def _text_color(background: str) -> str:
    r, g, b = (int(background[i : i + 2], 16) for i in (1, 3, 5))
    return "#ffffff" if 0.299 * r + 0.587 * g + 0.114 * b < 150 else "#1b1f24"


def _td(cell: Any) -> str:
    if not isinstance(cell, Cell):
        cls = ' class="num"' if isinstance(cell, int | float) and not isinstance(cell, bool) else ""
        return f"<td{cls}>{escape(cell)}</td>"
    attrs = ""
    if cell.cls:
        attrs += f' class="{escape(cell.cls)}"'
    if cell.title is not None:
        attrs += f' title="{escape(cell.title)}"'
    if cell.background and cell.background.startswith("#") and len(cell.background) == 7:
        color = _text_color(cell.background)
        attrs += f' style="background:{cell.background};color:{color}"'
    return f"<td{attrs}>{escape(cell.text)}</td>"


def table(rows: Iterable[Sequence[Any]], header: Sequence[Any] | None = None) -> Markup:
    """An HTML table; cells are plain values (escaped), :class:`Cell` or :class:`Markup`."""
    head = ""
    if header is not None:
        head = "<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr></thead>"
    body = "".join("<tr>" + "".join(_td(c) for c in row) + "</tr>" for row in rows)
    return Markup(f"<table>{head}<tbody>{body}</tbody></table>")


def section(title: str, body: str, anchor: str) -> Markup:
    """A titled ``<section>``; ``body`` must already be HTML (build it with these helpers)."""
    return Markup(f'<section id="{escape(anchor)}"><h2>{escape(title)}</h2>\n{body}\n</section>')


def page(title: str, sections: Iterable[tuple[str, str]], *, subtitle: str = "") -> str:
    """A complete HTML document: a title, a table of contents and the ``(title, html)`` sections."""
    parts = list(sections)
    anchors = [f"s{i}" for i in range(len(parts))]
    nav = " ".join(
        f'<a href="#{a}">{escape(t)}</a>' for a, (t, _) in zip(anchors, parts, strict=True)
    )
    body = "\n".join(section(t, b, a) for a, (t, b) in zip(anchors, parts, strict=True))
    sub = f'<p class="note">{escape(subtitle)}</p>' if subtitle else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<h1>{escape(title)}</h1>\n{sub}\n<nav>{nav}</nav>\n{body}\n</body>\n</html>\n"
    )


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (no metadata, so the file names no software or URL)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def save_png(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write the figure to ``path`` as PNG and return the path."""
    path = Path(path)
    path.write_bytes(png_bytes(fig, dpi))
    return path


def figure_img(fig: Figure, alt: str, dpi: int = 110) -> Markup:
    """The figure as an inline ``<img>`` with a base64 ``data:`` URI."""
    data = base64.b64encode(png_bytes(fig, dpi)).decode("ascii")
    return Markup(f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">')
