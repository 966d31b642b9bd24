"""Views of a :class:`~mechscope.probes.ProbeResult`: accuracy by layer, and a page with a table.

The curve has one line per kind of site (``hook_resid_post``, ``attn.hook_z``, ...) across
layers: test accuracy with the cross-validation spread as a band, the control-task accuracy
dashed, and the majority-class baseline dotted; a second panel shows the selectivity. Sites
outside the blocks sit at the ends (``hook_embed`` left of layer 0, ``ln_final`` right of the
last layer).
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from mechscope.probes.api import ProbeResult, SiteScore
from mechscope.viz.html import Markup, figure_uri, page, render

__all__ = ["probe_curve_figure", "probe_page", "probe_table"]


def _kind(score: SiteScore) -> str:
    """The site without its block prefix: ``blocks.3.hook_resid_post`` -> ``hook_resid_post``."""
    parts = score.site.split(".")
    return ".".join(parts[2:]) if score.layer is not None else score.site


def _x(score: SiteScore, last: int) -> float:
    if score.layer is not None:
        return score.layer
    return -1 if score.site.startswith("hook_") else last + 1


def _groups(scores: Sequence[SiteScore]) -> dict[str, list[SiteScore]]:
    groups: dict[str, list[SiteScore]] = {}
    for s in scores:
        groups.setdefault(_kind(s), []).append(s)
    return groups


def probe_curve_figure(result: ProbeResult) -> Figure:
    """Accuracy (and control, baseline) and selectivity by layer."""
    last = max((s.layer for s in result.scores if s.layer is not None), default=0)
    fig = Figure(figsize=(9, 3.4))
    ax_acc, ax_sel = fig.subplots(1, 2)
    for i, (name, scores) in enumerate(_groups(result.scores).items()):
        xs = [_x(s, last) for s in scores]
        color = f"C{i % 10}"
        ax_acc.plot(xs, [s.accuracy for s in scores], marker="o", ms=3, color=color, label=name)
        if all(s.cv_mean is not None for s in scores):
            mean = [s.cv_mean for s in scores]
            std = [s.cv_std for s in scores]
            low = [m - d for m, d in zip(mean, std, strict=True)]
            high = [m + d for m, d in zip(mean, std, strict=True)]
            ax_acc.fill_between(xs, low, high, color=color, alpha=0.15, linewidth=0)
        if all(s.control_accuracy is not None for s in scores):
            ctrl = [s.control_accuracy for s in scores]
            ax_acc.plot(
                xs,
                ctrl,
                ls="--",
                marker="x",
                ms=3,
                color=color,
                alpha=0.7,
                label=f"{name} (control)",
            )
            ax_sel.plot(xs, [s.selectivity for s in scores], marker="o", ms=3, color=color)
    ax_acc.axhline(result.scores[0].baseline, ls=":", color="grey", label="majority baseline")
    ax_acc.set(xlabel="layer", ylabel="test accuracy", ylim=(0, 1.02))
    ax_acc.set_title(f"{result.kind} probe accuracy ({result.data})")
    ax_acc.legend(fontsize=7, loc="lower right")
    ax_sel.axhline(0, color="grey", lw=0.8)
    ax_sel.set(xlabel="layer", ylabel="accuracy - control accuracy")
    ax_sel.set_title("selectivity")
    for ax in (ax_acc, ax_sel):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def probe_table(result: ProbeResult) -> Markup:
    """One row per site; accuracy cells shaded from the baseline (white) to 1 (blue)."""
    return render("probe_table.html.j2", sites=result.to_dict()["sites"])


def probe_page(result: ProbeResult, *, model: str = "") -> str:
    """A self-contained HTML page: the curves and the per-site table."""
    settings = ", ".join(f"{k}={v}" for k, v in result.settings.items())
    subtitle = (
        f"{model + ': ' if model else ''}{result.n_examples} examples of {result.data} "
        f"({result.n_classes} classes: {', '.join(map(str, result.classes))}), "
        f"{result.n_train} train / {result.n_test} test; {settings}"
    )
    summary = render(
        "probe_summary.html.j2",
        best=vars(result.best()),
        figure=figure_uri(probe_curve_figure(result)),
    )
    return page(
        f"Probe: {result.data} at {result.site}",
        [("Accuracy by layer", summary), ("Per site", probe_table(result))],
        subtitle=subtitle,
    )
