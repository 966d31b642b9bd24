"""Views: self-contained HTML and matplotlib figures built from result arrays, never a model."""

from __future__ import annotations

from mechscope.viz.html import (
    Cell,
    Markup,
    escape,
    figure_img,
    heat_color,
    page,
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
    "save_png",
    "show_token",
    "table",
]
