"""Presentation: every page and report section, rendered from the Jinja2 templates in
``viz/templates/`` (autoescaped, one inlined stylesheet), and matplotlib figures; built from
result arrays and ``to_dict()`` data, never a model."""

from __future__ import annotations

from mechscope.viz.html import (
    Cell,
    Markup,
    escape,
    figure_img,
    heat_color,
    page,
    render,
    save_png,
    show_token,
    table,
)
from mechscope.viz.lens import lens_table, lens_target_figure

__all__ = [
    "Cell",
    "Markup",
    "escape",
    "figure_img",
    "heat_color",
    "lens_table",
    "lens_target_figure",
    "page",
    "render",
    "save_png",
    "show_token",
    "table",
]
