"""Mixture-of-experts views from :meth:`mechscope.moe.MoEResult.to_dict`: a heatmap of expert
load by layer and token class (figure and HTML table, template ``moe.html.j2``), and a per-layer
summary with the causal check beside the routing statistics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from mechscope.viz.html import Markup, figure_uri, render

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["class_load", "moe_figure", "moe_html", "prune_figure"]

LABELS = {"lm": "held-out loss", "kl": "KL(full || pruned)", "agreement": "top-1 agreement"}


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


def prune_figure(pruning: dict[str, Any]) -> Figure:
    """The pruning and merging curves of ``mechscope moe --prune``: every metric (a panel)
    against experts removed per layer, one line per guide, 95% intervals as error bars (the
    compression Pareto plot's layout)."""
    from mechscope.viz.compress import pareto_figure

    metrics = list(next(iter(pruning["curves"].values()))[0]["value"])
    base = {k: v["mean"] for k, v in pruning["base"].items()}
    start = {**base, "kl": 0.0, "agreement": 1.0}  # the full model at 0 removed
    points: dict[str, list[tuple[float, float, float]]] = {}
    for name, rows in pruning["curves"].items():
        for metric in metrics:
            points[f"{name}:{metric}"] = [(0, start[metric], 0.0)] + [
                (row["n"], v["mean"], (v["high"] - v["low"]) / 2)
                for row in rows
                for v in [row["value"][metric]]
            ]
    panels = [(m, LABELS.get(m, f"{m} (logit difference)")) for m in metrics]
    fig = pareto_figure(points, panels, base, xlabel="experts removed per layer",
                        highlight="reroute_effect", reference_label="full model")  # fmt: skip
    n_max = max(len(rows) for rows in pruning["curves"].values())
    for ax in fig.axes:
        ax.set_xticks(range(n_max + 1))
    return fig


def moe_html(data: dict[str, Any], fig: Figure | None = None) -> Markup:
    """The load heatmap (inline PNG and a coloured table), the per-layer summary and, with
    ``data["pruning"]``, the pruning curves (figure and table)."""
    values, labels = class_load(data)
    uri = figure_uri(fig if fig is not None else moe_figure(data))
    cells = [(label, [float(v) for v in row]) for label, row in zip(labels, values, strict=True)]
    prune_uri = figure_uri(prune_figure(data["pruning"])) if "pruning" in data else None
    return render("moe.html.j2", data=data, uri=uri, cells=cells, experts=range(values.shape[1]),
                  prune_uri=prune_uri)  # fmt: skip
