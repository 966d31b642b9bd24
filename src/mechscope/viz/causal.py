"""IIA heatmaps (site x position) for DAS and fixed-basis sweeps: a figure with one panel per
method and an HTML page with the figure and a table of every cell's interval. Takes arrays and
labels (an ``IIAMap.to_dict()`` gives them), never a model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mechscope.viz.html import Cell, figure_img, heat_color, page, table

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def iia_figure(
    panels: Sequence[tuple[str, np.ndarray]],
    rows: Sequence[str],
    cols: Sequence[str],
    *,
    title: str = "",
) -> Figure:
    """One heatmap ``[row col]`` of IIA in ``[0, 1]`` per panel, every cell annotated; NaN cells
    (not measured) are grey."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    width = 1.2 + len(panels) * (1.0 + 0.55 * len(cols))
    fig = Figure(figsize=(width, 1.5 + 0.28 * len(rows)), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    image = None
    cmap = colormaps["viridis"].with_extremes(bad="#e4e4e4")  # grey: not measured
    for ax, (name, values) in zip(axes, panels):
        values = np.asarray(values, dtype=float)
        if values.shape != (len(rows), len(cols)):
            raise ValueError(f"panel {name!r} is {values.shape}, not {(len(rows), len(cols))}")
        image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=1, aspect="auto")
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6.5,
                        color="black" if v > 0.6 else "white")  # fmt: skip
        ax.set_xticks(range(len(cols)), cols, fontsize=8)
        ax.set_yticks(range(len(rows)), rows if ax is axes[0] else [], fontsize=8)
        ax.set_title(name, fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=list(axes), label="IIA (held out)", shrink=0.9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def iia_page(title: str, maps: Mapping[str, Mapping[str, Any]], *, subtitle: str = "") -> str:
    """A page for one or more ``IIAMap.to_dict()`` of the same grid (keyed by panel name): the
    figure, then a table of every measured cell with its 95% interval."""
    first = next(iter(maps.values()))
    rows, cols = layer_labels(first["sites"]), [str(p) for p in first["positions"]]
    panels = [(name, np.asarray(m["iia"], dtype=float)) for name, m in maps.items()]
    fig = iia_figure(panels, rows, cols, title=title)
    body = [figure_img(fig, f"{title}: IIA by site and position")]
    lines = []
    for name, m in maps.items():
        for r in m["results"]:
            ci = r.get("test_iia_ci")
            text = "" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"
            iia = r["test_iia"]
            lines.append([name, r["site"], str(r["positions"]), r["k"],
                          Cell(f"{iia:.3f}", heat_color(iia)), text])  # fmt: skip
    body.append(table(lines, ["method", "site", "position", "k", "IIA", "95% interval"]))
    return page(title, [(title, "".join(str(b) for b in body))], subtitle=subtitle)


def layer_labels(sites: Sequence[str]) -> list[str]:
    """``blocks.24.hook_resid_pre`` -> ``L24``: short row labels when every site is of one kind."""
    parts = [s.split(".") for s in sites]
    if all(len(p) == 3 and p[0] == "blocks" for p in parts) and len({p[2] for p in parts}) == 1:
        return [f"L{p[1]}" for p in parts]
    return list(sites)
