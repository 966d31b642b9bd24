"""Head-detector scores as a figure (one [layer head] heatmap per detector) and a page fragment
with the top heads of each detector (template ``heads.html.j2``), from :class:`HeadScores`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mechscope.heads import DETECTORS, HeadScores
from mechscope.viz.html import Markup, figure_uri, render

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["HEADS_TOP", "heads_figure", "heads_html"]

HEADS_TOP = 5  # top heads listed per detector


def heads_figure(scores: HeadScores, title: str = "") -> Figure:
    """One [layer head] heatmap per detector, side by side (scores in [0, 1])."""
    from matplotlib.figure import Figure

    names = list(scores.scores)
    n_layers, n_heads = next(iter(scores.scores.values())).shape
    width = min(3.2, 1.2 + 0.22 * n_heads)
    fig = Figure(figsize=(width * len(names) + 1, 1.5 + 0.16 * n_layers))
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names, strict=True):
        im = ax.imshow(scores.scores[name].numpy(), cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_title(name.replace("_", " "), fontsize=9)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="score")
    if title:
        fig.suptitle(title)
    return fig


def heads_html(scores: HeadScores, k: int = HEADS_TOP, fig: Figure | None = None) -> Markup:
    """The heatmap grid (as an inline PNG) and the classification table."""
    fig = fig if fig is not None else heads_figure(scores)
    what = {name: DETECTORS[name].what for name in scores.scores}
    return render("heads.html.j2", scores=scores.to_dict(k), what=what, k=k,
                  figure=figure_uri(fig))  # fmt: skip
