"""Views of toy models of superposition (Elhage et al. 2022): arrays in, figures and HTML out.

* :func:`directions_figure`: each feature's column ``W_i`` as an arrow in the plane, one panel
  per instance (``m == 2``), coloured by importance -- the paper's opening figure;
* :func:`gram_figure`: ``W^T W`` per instance (dedicated dimensions are a diagonal, antipodal
  pairs a -1 off the diagonal);
* :func:`norms_figure`: bars of ``||W_i||`` coloured by the superposition
  ``sum_{j != i} (W^_i . W_j)^2`` (dark: a dimension of its own, bright: shared);
* :func:`phase_figure`: the phase diagram of the extra feature over relative importance x
  density, with the cells where training disagrees with the expected-loss optimum marked;
* :func:`superposition_page` / :func:`overview_figure`: all of it as one HTML page or one PNG.

Like every view, these take result arrays and never a model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from mechscope.errors import MechscopeError
from mechscope.toys.phase import PHASES, PhaseDiagram
from mechscope.toys.superposition import (
    POLYGONS,
    ToyResult,
    dimensions_per_feature,
    feature_norms,
    geometry,
    superposition,
)
from mechscope.viz.html import figure_img, figure_uri, page, render

PHASE_COLORS = ("#d9d9d9", "#4c72b0", "#dd8452")  # not represented, dedicated, superposition

__all__ = [
    "directions_figure",
    "gram_figure",
    "norms_figure",
    "overview_figure",
    "phase_figure",
    "superposition_page",
    "sweep_titles",
]


def sweep_titles(sparsities: Sequence[float]) -> list[str]:
    """Panel titles ``1-S = density`` for a sparsity sweep."""
    return [f"1-S = {1 - float(s):.3g}" for s in sparsities]


def _draw_directions(ax, W: np.ndarray, importance: np.ndarray, title: str) -> None:
    colors = _importance_colors(importance)
    bound = max(1.2, 1.1 * float(feature_norms(W).max()))
    for i in range(W.shape[1]):
        x, y = W[0, i], W[1, i]
        ax.plot([0, x], [0, y], color=colors[i], lw=1.6)
        ax.plot([x], [y], "o", color=colors[i], ms=4)
    ax.add_patch(_circle())
    ax.set(xlim=(-bound, bound), ylim=(-bound, bound), aspect="equal", xticks=[], yticks=[])
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(geometry(W).describe().replace(", ", "\n", 1), fontsize=8)


def _circle():
    from matplotlib.patches import Circle

    return Circle((0, 0), 1.0, fill=False, ls=":", lw=0.8, color="#888888")


def _importance_colors(importance: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    imp = np.asarray(importance, dtype=float)
    span = imp.max() - imp.min()
    scaled = (imp - imp.min()) / span if span > 0 else np.ones_like(imp)
    return colormaps["viridis"](0.15 + 0.75 * scaled)  # bright yellow-green = most important


def directions_figure(
    W: np.ndarray, importance: np.ndarray, titles: Sequence[str] | None = None
) -> Figure:
    """Feature directions ``W [instance 2 n]`` as arrows, one panel per instance.

    ``importance [instance n]`` (or ``[n]``) colours the arrows; the dotted circle is norm 1.
    """
    W = np.asarray(W, dtype=float)
    if W.ndim != 3 or W.shape[1] != 2:
        raise MechscopeError(f"directions_figure needs W [instance 2 n], got shape {W.shape}")
    imp = np.broadcast_to(np.asarray(importance, dtype=float), (W.shape[0], W.shape[2]))
    titles = list(titles) if titles is not None else [f"instance {i}" for i in range(len(W))]
    fig = Figure(figsize=(2.3 * len(W), 2.7))
    axes = np.atleast_1d(fig.subplots(1, len(W)))
    for ax, w, row, title in zip(axes, W, imp, titles, strict=True):
        _draw_directions(ax, w, row, title)
    fig.suptitle(
        "feature directions W_i (colour: importance, yellow = most important)", fontsize=10
    )
    fig.tight_layout()
    return fig


def gram_figure(W: np.ndarray, titles: Sequence[str] | None = None) -> Figure:
    """``W^T W`` ``[n n]`` for every instance of ``W [instance m n]``, colours from -1 to 1."""
    W = np.asarray(W, dtype=float)
    titles = list(titles) if titles is not None else [f"instance {i}" for i in range(len(W))]
    fig = Figure(figsize=(2.3 * len(W) + 0.8, 2.6))
    axes = np.atleast_1d(fig.subplots(1, len(W)))
    image = None
    for ax, w, title in zip(axes, W, titles, strict=True):
        image = ax.imshow(w.T @ w, cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set(xticks=[], yticks=[])
        ax.set_title(title, fontsize=9)
    fig.suptitle("W^T W (features x features)", fontsize=10)
    fig.colorbar(image, ax=list(axes), fraction=0.02)
    return fig


def _draw_norms(ax, W: np.ndarray, title: str, xmax: float) -> None:
    from matplotlib import colormaps

    n = W.shape[1]
    share = np.clip(superposition(W), 0, 1)
    ax.barh(
        np.arange(n), feature_norms(W), color=colormaps["plasma"](0.9 * share), edgecolor="none"
    )
    ax.set(xlim=(0, xmax), ylim=(n - 0.5, -0.5))
    ax.set_yticks(range(0, n, max(1, n // 10)))
    ax.axvline(1.0, color="#888888", lw=0.6, ls=":")
    ax.set_title(f"{title}\n{dimensions_per_feature(W):.2f} dims/feature", fontsize=9)
    ax.set_xlabel("||W_i||", fontsize=8)


def norms_figure(W: np.ndarray, titles: Sequence[str] | None = None) -> Figure:
    """Bars of ``||W_i||`` per feature and instance, coloured by superposition (clipped at 1)."""
    W = np.asarray(W, dtype=float)
    titles = list(titles) if titles is not None else [f"instance {i}" for i in range(len(W))]
    n = W.shape[2]
    fig = Figure(figsize=(2.1 * len(W) + 0.8, 0.6 + 0.16 * n + 0.6))
    axes = np.atleast_1d(fig.subplots(1, len(W), sharey=True))
    xmax = max(1.25, float(feature_norms(W).max()) * 1.05)
    for ax, w, title in zip(axes, W, titles, strict=True):
        _draw_norms(ax, w, title, xmax)
    axes[0].set_ylabel("feature (most important on top)", fontsize=8)
    fig.suptitle(NORMS_CAPTION, fontsize=10)
    fig.tight_layout()
    return fig


NORMS_CAPTION = "feature norms (colour: superposition, dark = own dimension, yellow = shared)"


def _draw_phase(ax, relative_importance, density, phase, expected) -> None:
    imp, dens = np.asarray(relative_importance, float), np.asarray(density, float)
    x, y = _log_edges(dens), _log_edges(imp)
    ax.pcolormesh(x, y, np.asarray(phase, float), cmap=ListedColormap(PHASE_COLORS), vmin=-0.5,
                  vmax=2.5)  # fmt: skip
    ax.set(xscale="log", yscale="log", xlim=(x.max(), x.min()), ylim=(y.min(), y.max()))
    if expected is not None:  # sparser to the right, as in the paper
        for r, d in np.argwhere(np.asarray(expected) != np.asarray(phase)):
            ax.plot(dens[d], imp[r], "x", color="black", ms=7, mew=1.5)
    ax.set_xlabel("feature density 1 - S")
    ax.set_ylabel("relative importance of feature 2")
    handles = [_patch(c, name) for c, name in zip(PHASE_COLORS, PHASES, strict=True)]
    ax.legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.9)


def _log_edges(values: np.ndarray) -> np.ndarray:
    """Cell edges around log-spaced (increasing or decreasing) centres: geometric midpoints."""
    v = np.asarray(values, dtype=float)
    if v.size == 1:
        return np.array([v[0] / 1.5, v[0] * 1.5])
    mids = np.sqrt(v[:-1] * v[1:])
    return np.concatenate([[v[0] ** 2 / mids[0]], mids, [v[-1] ** 2 / mids[-1]]])


def _patch(color: str, label: str):
    from matplotlib.patches import Patch

    return Patch(color=color, label=label)


def phase_figure(
    relative_importance: np.ndarray,
    density: np.ndarray,
    phase: np.ndarray,
    expected: np.ndarray | None = None,
) -> Figure:
    """The phase of feature 2 (n=2, m=1) over ``relative_importance [r]`` x ``density [d]``.

    With ``expected [r d]``, a cross marks each cell where ``phase`` differs from it.
    """
    fig = Figure(figsize=(5.2, 4.2))
    ax = fig.add_subplot()
    _draw_phase(ax, relative_importance, density, phase, expected)
    ax.set_title("2 features in 1 dimension: phase of feature 2", fontsize=10)
    fig.tight_layout()
    return fig


def _summary_rows(result: ToyResult) -> list[list[object]]:
    rows = []
    for s, loss, w in zip(result.sparsities, result.losses, result.W, strict=True):
        g = geometry(w)
        rows.append(
            [
                f"{float(s):.3g}",
                f"{1 - float(s):.3g}",
                len(g.represented),
                f"{g.dimensions_per_feature:.3f}",
                len(g.antipodal),
                POLYGONS.get(g.polygon, f"{g.polygon}-gon") if g.polygon else "",
                f"{float(loss):.3g}",
            ]
        )
    return rows


SUMMARY_HEADER = (
    "sparsity S",
    "density 1-S",
    "features with ||W_i|| >= 0.5",
    "dims per feature",
    "antipodal pairs",
    "regular polygon",
    "loss",
)


def superposition_page(result: ToyResult, diagram: PhaseDiagram | None = None) -> str:
    """A self-contained HTML page: summary table, directions (m == 2), ``W^T W``, norms, phases."""
    titles = sweep_titles(result.sparsities)
    summary = render(
        "superposition_summary.html.j2",
        result=result,
        rows=_summary_rows(result),
        header=SUMMARY_HEADER,
    )
    sections: list[tuple[str, str]] = [("Summary", summary)]
    if result.n_hidden == 2:
        fig = directions_figure(result.W, result.importance, titles)
        sections.append(("Feature directions", figure_img(fig, "feature directions")))
    sections.append(("W^T W", figure_img(gram_figure(result.W, titles), "Gram matrices")))
    sections.append(("Feature norms", figure_img(norms_figure(result.W, titles), "feature norms")))
    if diagram is not None:
        agreement = None if diagram.expected is None else diagram.agreement()
        fig = phase_figure(
            diagram.relative_importance, diagram.density, diagram.phase, diagram.expected
        )
        note = render("phase_note.html.j2", agreement=agreement, figure=figure_uri(fig))
        sections.append(("Phase diagram", note))
    return page(
        "Toy models of superposition",
        sections,
        subtitle="Elhage et al. 2022; trained by mechscope",
    )


def overview_figure(result: ToyResult, diagram: PhaseDiagram | None = None) -> Figure:
    """One figure for a PNG: the directions (m == 2) or the norms per instance, and the phases."""
    k = len(result.W)
    rows = 2 if k > 4 else 1
    cols = -(-k // rows)
    extra = 2 if diagram is not None else 0
    fig = Figure(figsize=(2.4 * (cols + extra) + 0.4, 3.0 * rows + 0.5))
    grid = fig.add_gridspec(rows, cols + extra)
    titles = sweep_titles(result.sparsities)
    xmax = max(1.25, float(feature_norms(result.W).max()) * 1.05)
    for i in range(k):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        if result.n_hidden == 2:
            _draw_directions(ax, result.W[i], result.importance[i], titles[i])
        else:
            _draw_norms(ax, result.W[i], titles[i], xmax)
    if diagram is not None:
        ax = fig.add_subplot(grid[:, cols:])
        _draw_phase(ax, diagram.relative_importance, diagram.density, diagram.phase,
                    diagram.expected)  # fmt: skip
        ax.set_title("phase of feature 2 (2 features in 1 dimension)", fontsize=9)
    caption = (
        "feature directions (colour: importance, yellow = most important)"
        if result.n_hidden == 2
        else NORMS_CAPTION
    )
    fig.suptitle(
        f"{result.n_features} features in {result.n_hidden} dimensions across sparsity: {caption}",
        fontsize=10,
    )
    fig.tight_layout()
    return fig
