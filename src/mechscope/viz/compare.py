"""Figures and pages of model comparisons: layer-by-layer similarity heatmaps.

Takes results' ``to_dict()`` and labels, never a model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from mechscope.viz.html import Cell, Markup, figure_uri, heat_color, page, render, table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["progress_figure", "progress_page", "similarity_figure", "similarity_page"]

SCORES = (("cka", "debiased linear CKA"), ("procrustes", "orthogonal Procrustes"))


def similarity_figure(data: Mapping[str, Any], name_a: str = "A", name_b: str = "B") -> Figure:
    """Two heatmaps, CKA and Procrustes: rows are layers of A, columns layers of B."""
    from matplotlib.figure import Figure

    la, lb = data["layers_a"], data["layers_b"]
    fig = Figure(figsize=(min(16, 4 + 0.5 * len(lb)) * 2 / 1.4, 0.35 * len(la) + 2.5))
    for k, (key, title) in enumerate(SCORES):
        ax = fig.add_subplot(1, 2, k + 1)
        values = np.asarray(data[key], dtype=float)
        im = ax.imshow(values, cmap="viridis", vmin=min(0.0, float(values.min())), vmax=1.0)
        ax.set_xticks(range(len(lb)), [str(v) for v in lb], fontsize=7)
        ax.set_yticks(range(len(la)), [str(v) for v in la], fontsize=7)
        ax.set_xlabel(f"layer of {name_b} (resid_post)")
        ax.set_ylabel(f"layer of {name_a} (resid_post)")
        ax.set_title(f"{title} ({data.get('n_tokens', '?')} tokens)")
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return fig


def _score_table(data: Mapping[str, Any], key: str) -> str:
    rows = [
        [f"A {la}", *(Cell(f"{v:.3f}", background=heat_color(v)) for v in row)]
        for la, row in zip(data["layers_a"], data[key], strict=True)
    ]
    return table(rows, ["", *(f"B {lb}" for lb in data["layers_b"])])


def similarity_page(data: Mapping[str, Any], name_a: str, name_b: str) -> str:
    """A self-contained page: the two heatmaps and both matrices as tables."""
    fig = similarity_figure(data, name_a, name_b)
    figures = render("figures.html.j2", figures=[(figure_uri(fig), "CKA and Procrustes")])
    sections = [("Layer-by-layer similarity", figures)]
    sections += [(title, _score_table(data, key)) for key, title in SCORES]
    subtitle = f"A = {name_a}, B = {name_b}, {data.get('n_tokens', '?')} aligned tokens"
    return page("Model comparison", sections, subtitle=subtitle)


def progress_figure(data: Mapping[str, Any], phases: Mapping[str, Any]) -> Figure:
    """Losses over training (train, test, restricted, excluded; log scale) with the phase
    boundaries, and the embedding's norm per Fourier frequency over training."""
    from matplotlib.figure import Figure

    epochs = data["epochs"]
    fig = Figure(figsize=(12, 4.2))
    ax = fig.add_subplot(1, 2, 1)
    for key, label in (
        ("train_loss", "train"),
        ("test_loss", "test"),
        ("restricted_loss", "restricted (test)"),
        ("excluded_loss", "excluded (train)"),
    ):
        ax.plot(epochs, data[key], label=label)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    for name, epoch in phases.items():
        if epoch is not None:
            ax.axvline(epoch, color="grey", linestyle=":")
            ax.text(epoch, ax.get_ylim()[1], f" {name}", fontsize=7, va="top")
    ax.legend(fontsize=7)
    key = data["key"]
    shown = ", ".join(map(str, key[:6])) + (", ..." if len(key) > 6 else "")
    ax.set_title(f"progress measures (key frequencies {shown})", fontsize=9)
    ax2 = fig.add_subplot(1, 2, 2)
    norms = np.asarray(data["frequency_norms"], dtype=float).T  # [freq epoch]
    im = ax2.imshow(
        norms,
        aspect="auto",
        origin="lower",
        cmap="viridis",
        extent=(epochs[0], epochs[-1], 0.5, norms.shape[0] + 0.5),
    )
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("frequency k")
    ax2.set_title("embedding norm per Fourier frequency")
    fig.colorbar(im, ax=ax2, shrink=0.8)
    fig.tight_layout()
    return fig


def progress_page(data: Mapping[str, Any], phases: Mapping[str, Any], config: Mapping) -> str:
    """The progress-measures page: the figure and a table of every checkpoint."""
    fig = progress_figure(data, phases)
    figures = render("figures.html.j2", figures=[(figure_uri(fig), "progress measures")])
    keys = ["train_loss", "test_loss", "restricted_loss", "excluded_loss", "weight_norm"]
    rows = [[e, *(f"{data[k][i]:.4g}" for k in keys)] for i, e in enumerate(data["epochs"])]
    subtitle = ", ".join(f"{k} {v}" for k, v in config.items())
    sections = [("Progress measures", figures), ("Checkpoints", table(rows, ["epoch", *keys]))]
    return page("Grokking: modular addition", sections, subtitle=subtitle)


STATUS_COLORS = {"shared": "#6e7781", "lost": "#b2182b", "added": "#1a7f37"}


def circuit_diff_svg(diff: Mapping[str, Any], max_edges: int = 300) -> Markup:
    """The union of two circuits on A's graph: shared edges grey, lost red, added green."""
    from mechscope.viz.circuit import _layout

    edges = []
    for e in diff["edges"]:
        a, b = e["score_a"] or 0.0, e["score_b"] or 0.0
        score = a if e["status"] == "lost" else b if e["status"] == "added" else max(a, b, key=abs)
        edges.append({"src": e["src"], "dst": e["dst"], "score": score, "status": e["status"]})
    data = {"edges": edges, "graph": diff["graph"], "method": "diff", "n_edges": len(edges)}
    data["total_edges"] = len(edges)
    layout = _layout(data, max_edges, None)
    for e in layout["edges"]:
        e["color"] = STATUS_COLORS[e["status"]]
    return render("circuit.svg.j2", standalone=False, data=data, **layout)


def circuit_diff_page(diff: Mapping[str, Any], name_a: str, name_b: str, task: str) -> str:
    """Counts, the graph of the union and the table of every edge with both scores."""
    counts = diff["counts"]
    rows = [[s, counts[f"nodes_{s}"], counts[f"edges_{s}"]] for s in STATUS_COLORS]
    legend = ", ".join(f"{s}: {c}" for s, c in STATUS_COLORS.items())
    edge_rows = [
        [e["src"], e["dst"], e["status"], _fmt(e["score_a"]), _fmt(e["score_b"])]
        for e in diff["edges"]
    ]
    sections = [
        ("Shared, lost and added", table(rows, ["status", "nodes", "edges"])),
        (f"Graph ({legend})", str(circuit_diff_svg(diff))),
        (
            "Edges",
            table(edge_rows, ["src", "dst", "status", f"score in {name_a}", f"score in {name_b}"]),
        ),
    ]
    return page(f"Circuit diff: {task}", sections, subtitle=f"A = {name_a}, B = {name_b}")


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:+.4g}"
