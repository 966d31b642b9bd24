"""Heatmaps of sweep results (layer x position, layer x head, ...) as figures and HTML pages.

Takes arrays and labels, never a model. Values are drawn with a diverging colour map centred on
zero, so positive and negative effects read at a glance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from mechscope.viz.html import figure_uri, page, render

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def heatmap_figure(
    values: np.ndarray,
    axes: Sequence[str],
    *,
    title: str = "",
    xlabels: Sequence[str] | None = None,
    cbar: str = "",
) -> Figure:
    """One heatmap [rows cols] (or bars for a 1-D array), diverging colours centred on 0."""
    from matplotlib.figure import Figure

    values = np.asarray(values, dtype=float)
    fig = Figure(figsize=(min(14, 3 + 0.35 * (values.shape[-1] if values.ndim > 1 else 20)), 4.5))
    ax = fig.add_subplot()
    if values.ndim == 1:
        ax.bar(np.arange(len(values)), values, color=np.where(values >= 0, "#b2182b", "#2166ac"))
        ax.set_xlabel(axes[0])
        ax.set_ylabel(cbar)
    else:
        bound = float(np.nanmax(np.abs(values))) or 1.0
        im = ax.imshow(values, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
        ax.set_ylabel(axes[0])
        ax.set_xlabel(axes[1])
        if xlabels is not None and len(xlabels) == values.shape[1]:
            ax.set_xticks(range(len(xlabels)), xlabels, rotation=70, fontsize=7)
        fig.colorbar(im, ax=ax, label=cbar)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def panels(values: np.ndarray, axes: Sequence[str]) -> list[tuple[np.ndarray, tuple[str, ...]]]:
    """2-D views of a result: itself if 1-D or 2-D; for 3-D, the sum over each trailing axis."""
    values = np.asarray(values)
    if values.ndim <= 2:
        return [(values, tuple(axes))]
    return [
        (values.sum(axis=2), (axes[0], axes[1])),
        (values.sum(axis=1), (axes[0], axes[2])),
    ]


def heatmap_page(
    title: str,
    values: np.ndarray,
    axes: Sequence[str],
    *,
    subtitle: str = "",
    pos_labels: Sequence[str] | None = None,
    cbar: str = "",
) -> str:
    """A self-contained HTML page with the heatmap panels of one result."""
    figures = []
    for view, names in panels(values, axes):
        xlabels = pos_labels if names[-1] == "pos" else None
        fig = heatmap_figure(view, names, title=" x ".join(names), xlabels=xlabels, cbar=cbar)
        figures.append((figure_uri(fig), f"{title}: {' x '.join(names)}"))
    return page(title, [(title, render("figures.html.j2", figures=figures))], subtitle=subtitle)
