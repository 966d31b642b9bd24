"""Compression results as pictures: the Pareto plot (a task metric against effective bits, one
line per allocation method) and the page holding it with the results tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mechscope.viz.html import figure_img, page, table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["compression_page", "pareto_figure"]


def pareto_figure(
    points: Mapping[str, Sequence[tuple[float, float, float]]],
    panels: Sequence[tuple[str, str]],
    reference: Mapping[str, float] | None = None,
    xlabel: str = "effective bits per weight (decoder-layer Linear weights)",
    highlight: str = "circuit",
    reference_label: str = "as shipped",
) -> Figure:
    """One panel per ``(metric, label)``; ``points[f"{method}:{metric}"]`` are (bits, value,
    half-width of its 95% interval); ``reference[metric]`` draws a dashed line (the shipped model);
    methods starting with ``highlight`` are drawn on top; ``reference_label`` names the line."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * len(panels) + 2.6, 4.2))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    methods = sorted({key.rpartition(":")[0] for key in points})
    colors = colormaps["tab20"]
    for ax, (metric, label) in zip(axes, panels, strict=True):
        for i, method in enumerate(methods):
            pts = sorted(points.get(f"{method}:{metric}", []))
            if not pts:
                continue
            x, y, e = zip(*pts, strict=True)
            ax.errorbar(x, y, yerr=e, marker="osD^v<>"[i % 7], ms=4, capsize=3, lw=1.2,
                        color=colors(i % 20), label=method,
                        zorder=3 if method.startswith(highlight) else 2)  # fmt: skip
        if reference and metric in reference:
            ax.axhline(reference[metric], ls="--", c="gray", lw=1, label=reference_label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center right")
    fig.tight_layout(rect=(0, 0, 1 - 2.4 / fig.get_figwidth(), 1))
    return fig


def compression_page(
    title: str,
    fig: Figure,
    tables: Sequence[tuple[str, Sequence[Sequence[Any]], Sequence[str]]],
    subtitle: str = "",
) -> str:
    """A self-contained page: the Pareto plot, then each ``(title, rows, header)`` table."""
    sections = [("Pareto plot", str(figure_img(fig, "task metrics against effective bits")))]
    sections += [(name, str(table(rows, header))) for name, rows, header in tables]
    return page(title, sections, subtitle=subtitle)
