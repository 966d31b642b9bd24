"""Pictures of explanation scores: per scorer, a histogram of the features' scores beside the
histogram of their shuffled controls, and a table of explanations with their scores.

Both take the rows of ``mechscope.autointerp.run.results`` (plain dicts), never a model.
:func:`score_histograms_svg` draws the same histograms as inline SVG for the web UI's source page
(no script, no image request: the server's CSP allows neither inline scripts nor other hosts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mechscope.viz.html import Markup, figure_img, page, render, table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["score_histograms_svg", "scores_figure", "scores_page"]


def _pairs(rows: Sequence[dict[str, Any]], scorer: str) -> tuple[list[float], list[float]]:
    own = [r["scores"][scorer] for r in rows if scorer in r["scores"]]
    ctrl = [r["control"][scorer] for r in rows if scorer in r["control"]]
    return own, ctrl


def scores_figure(rows: Sequence[dict[str, Any]], scorers: Sequence[str]) -> Figure:
    """One panel per scorer: the features' scores and their shuffled controls, 20 bins."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    shown = [s for s in scorers if _pairs(rows, s)[0]]
    fig, axes = plt.subplots(1, max(1, len(shown)), figsize=(4.2 * max(1, len(shown)), 3.2))
    for ax, scorer in zip(np.atleast_1d(axes), shown, strict=False):
        own, ctrl = _pairs(rows, scorer)
        lo = -1.0 if scorer == "simulation" else 0.0
        bins = np.linspace(lo, 1.0, 21)
        if ctrl:
            ax.hist(ctrl, bins=bins, alpha=0.6, color="#999999",
                    label=f"shuffled control, mean {np.mean(ctrl):.2f}")  # fmt: skip
        ax.hist(own, bins=bins, alpha=0.7, color="#1f77b4", label=f"explanation, mean {np.mean(own):.2f}")  # fmt: skip
        ax.set_xlabel(f"{scorer} ({'correlation' if scorer == 'simulation' else 'AUROC'})")
        ax.set_ylabel("features")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def scores_page(rows: Sequence[dict[str, Any]], scorers: Sequence[str], title: str) -> str:
    """A self-contained HTML page: the histograms, then one row per feature."""
    import matplotlib.pyplot as plt

    fig = scores_figure(rows, scorers)
    figure = figure_img(fig, "score histograms against the shuffled control")
    plt.close(fig)
    header = ["feature", "explanation", *scorers, *(f"{s} control" for s in scorers)]
    body = []
    for r in rows:
        cells = [r["index"], r["explanation"]]
        cells += [_cell(r["scores"].get(s), r["errors"].get(s)) for s in scorers]
        cells += [_cell(r["control"].get(s), None) for s in scorers]
        body.append(cells)
    sections = [("Scores against the shuffled control", Markup(figure)),
                ("Explanations", table(body, header))]  # fmt: skip
    return page(title, sections, subtitle=f"{len(rows)} features")


def _cell(value: float | None, error: str | None) -> str:
    if value is not None:
        return f"{value:.3f}"
    return f"error: {error}" if error else ""


BINS = 20


def _counts(values: Sequence[float], lo: float, hi: float) -> list[int]:
    counts = [0] * BINS
    for v in values:
        counts[min(BINS - 1, max(0, int((v - lo) / (hi - lo) * BINS)))] += 1
    return counts


def _bars(counts: list[int], lo: float, hi: float, top: int, size: tuple[int, int]) -> list[dict[str, Any]]:  # fmt: skip
    width, height = size
    step, step_v = width / BINS, (hi - lo) / BINS
    bars = []
    for i, c in enumerate(counts):
        if c:
            h = (height - 16) * c / top
            bars.append({"x": i * step, "y": height - 16 - h, "w": step - 1, "h": h, "count": c,
                         "lo": lo + i * step_v, "hi": lo + (i + 1) * step_v})  # fmt: skip
    return bars


def score_histograms_svg(rows: Sequence[dict[str, Any]], size: tuple[int, int] = (320, 120)) -> Markup:  # fmt: skip
    """Per scorer, 20-bin histograms of the explanations' scores and of their shuffled controls
    (rows ``{"scorer", "value", "control"}``, as ``FeatureDB.score_values`` gives them)."""
    figures = []
    for scorer in sorted({r["scorer"] for r in rows}):
        own = [r["value"] for r in rows if r["scorer"] == scorer]
        ctrl = [r["control"] for r in rows if r["scorer"] == scorer and r["control"] is not None]
        lo, hi = (-1.0, 1.0) if scorer == "simulation" else (0.0, 1.0)
        c_own, c_ctrl = _counts(own, lo, hi), _counts(ctrl, lo, hi)
        top = max(c_own + c_ctrl)
        chance = (0.0 if scorer == "simulation" else 0.5) - lo
        figures.append(render(
            "features/score_hist.svg.j2", scorer=scorer, width=size[0], height=size[1],
            own=_bars(c_own, lo, hi, top, size), control=_bars(c_ctrl, lo, hi, top, size),
            lo=lo, hi=hi, chance=size[0] * chance / (hi - lo), n_own=len(own),
            n_control=len(ctrl), mean_own=sum(own) / len(own),
            mean_control=sum(ctrl) / len(ctrl) if ctrl else None,
            unit="correlation" if scorer == "simulation" else "AUROC",
        ))  # fmt: skip
    return Markup("".join(figures))
