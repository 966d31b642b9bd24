"""Mixture-of-experts views from :meth:`mechscope.moe.MoEResult.to_dict`: a heatmap of expert
load by layer and token class (figure and HTML table, template ``moe.html.j2``), and a per-layer
summary with the causal check beside the routing statistics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from mechscope.viz.html import Markup, figure_uri, render

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["class_load", "moe_figure", "moe_html"]


def class_load(data: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
    """Share of each (layer, class)'s routings going to each expert [layer*class expert], with
    row labels ``L{layer} {class}`` (ratio over uniform x ``top_k / n_experts``)."""
    scale = data["top_k"] / data["n_experts"]
    rows, labels = [], []
    for layer in data["layers"]:
        spec = layer["specialisation"]["token_class"]
        for name, ratio in zip(spec["labels"], spec["ratio"], strict=True):
            rows.append(np.asarray(ratio, dtype=float) * scale)
            labels.append(f"L{layer['layer']} {name}")
    return np.stack(rows), labels


def moe_figure(data: dict[str, Any], title: str = "") -> Figure:
    """Heatmap of expert load share by layer and token class (rows) and expert (columns)."""
    from matplotlib.figure import Figure

    values, labels = class_load(data)
    fig = Figure(figsize=(2.5 + 0.45 * values.shape[1], 1.2 + 0.22 * len(labels)))
    ax = fig.add_subplot()
    im = ax.imshow(values, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xticks(range(values.shape[1]))
    ax.set_xlabel("expert")
    fig.colorbar(im, ax=ax, label="share of the class's tokens routed to the expert")
    ax.set_title(title or "expert load by layer and token class", fontsize=9)
    fig.tight_layout()
    return fig


def moe_html(data: dict[str, Any], fig: Figure | None = None) -> Markup:
    """The load heatmap (inline PNG and a coloured table) and the per-layer summary."""
    values, labels = class_load(data)
    uri = figure_uri(fig if fig is not None else moe_figure(data))
    cells = [(label, [float(v) for v in row]) for label, row in zip(labels, values, strict=True)]
    return render("moe.html.j2", data=data, uri=uri, cells=cells, experts=range(values.shape[1]))
