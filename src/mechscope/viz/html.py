"""The one way mechscope writes HTML: Jinja2 templates with autoescaping, and their helpers.

Every page and report section is a template in ``mechscope/viz/templates/`` rendered by
:func:`render`; autoescaping is on for every template, so any value from a result (a token, a
prompt, a site name) is escaped unless it is :class:`Markup` (HTML built by a template or by
these helpers). Pages extend ``page.html.j2``, which inlines the one stylesheet
(``templates/assets/style.css``); figures are base64 ``data:`` URIs. A page therefore opens
offline and never fetches anything: no CDN, no external URL. The CLI's pages, the report and the
web UI render the same templates, so a result looks the same everywhere.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from markupsafe import Markup, escape

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "Cell",
    "Markup",
    "asset",
    "escape",
    "figure_img",
    "figure_uri",
    "heat_color",
    "json_for_script",
    "page",
    "png_bytes",
    "render",
    "save_png",
    "section",
    "show_token",
    "table",
]

_INVISIBLE = {" ": "␣", "\xa0": "⍽", "\n": "↵", "\r": "␍", "\t": "→"}
_HEX = re.compile(r"#[0-9a-fA-F]{6}")


@dataclass(frozen=True)
class Cell:
    """A table cell: text (escaped), an optional background colour and tooltip, CSS classes."""

    text: Any
    background: str | None = None
    title: str | None = None
    cls: str | None = None


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


def text_color(background: str) -> str:
    """Black or white text, whichever reads on ``background`` (``#rrggbb``)."""
    r, g, b = (int(background[i : i + 2], 16) for i in (1, 3, 5))
    return "#ffffff" if 0.299 * r + 0.587 * g + 0.114 * b < 150 else "#1b1f24"


def json_for_script(payload: Any) -> Markup:
    """JSON safe inside ``<script>``: no ``<``, ``>`` or ``&`` can end or confuse the element."""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=True)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


@functools.cache
def asset(name: str) -> Markup:
    """A stylesheet or script of ``templates/assets/`` as text to inline (trusted: ours)."""
    text = resources.files("mechscope.viz").joinpath("templates", "assets", name).read_text("utf-8")
    if "</" in text and ("</script" in text.lower() or "</style" in text.lower()):
        raise ValueError(f"asset {name} would end its element early")
    return Markup(text)


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec)


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("mechscope.viz", "templates"),
        autoescape=True,  # every template, whatever its suffix
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        tok=show_token, heat=heat_color, text_color=text_color, fmt=_fmt, pyrepr=repr
    )
    env.filters["json_script"] = json_for_script
    env.tests["cell"] = lambda value: isinstance(value, Cell)
    env.tests["color"] = lambda value: isinstance(value, str) and bool(_HEX.fullmatch(value))
    env.globals.update(asset=asset, zip=zip)
    return env


def render(template: str, **context: Any) -> Markup:
    """Render ``templates/<template>`` with autoescaping; the result is :class:`Markup`."""
    return Markup(_environment().get_template(template).render(**context))


def table(rows: Iterable[Sequence[Any]], header: Sequence[Any] | None = None) -> Markup:
    """An HTML table; cells are plain values (escaped), :class:`Cell` or :class:`Markup`."""
    return render("table.html.j2", rows=[list(r) for r in rows], header=header)


def section(title: str, body: str, anchor: str) -> Markup:
    """A titled ``<section>``; ``body`` is an HTML fragment (a rendered template)."""
    return render("section.html.j2", title=title, body=Markup(body), anchor=anchor)


def page(title: str, sections: Iterable[tuple[str, str]], *, subtitle: str = "") -> str:
    """A complete HTML document: a title, a table of contents and the ``(title, html)`` sections.

    Each section's body is an HTML fragment (a rendered template), inserted as is.
    """
    parts = [
        {"title": t, "body": Markup(b), "anchor": f"s{i}"} for i, (t, b) in enumerate(sections)
    ]
    return str(render("page.html.j2", title=title, subtitle=subtitle, sections=parts))


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


def figure_uri(fig: Figure, dpi: int = 110) -> str:
    """The figure as a base64 PNG ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(fig, dpi)).decode("ascii")


def figure_img(fig: Figure, alt: str, dpi: int = 110) -> Markup:
    """The figure as an inline ``<img>`` with a base64 ``data:`` URI."""
    return render("figure.html.j2", uri=figure_uri(fig, dpi), alt=alt)
