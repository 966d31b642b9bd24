"""The report's head-detector section, and the pictures ``mechscope heads`` draws.

``heads_section(model, ctx)`` scores every head (induction, previous-token, duplicate-token,
attention sink and copy suppression; :func:`mechscope.heads.head_scores`) on
``HEADS_SEQS`` repeated random sequences of 2 x ``HEADS_SEQ_LEN`` tokens, draws one [layer head]
heatmap per detector and tables the top heads. On SmolLM2 it costs one forward of the batch (the
pattern pass stops after the last attention layer) plus ~3 s of weight algebra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mechscope.heads import DETECTORS, HeadScores, head_scores
from mechscope.models.hooked import HookedModel
from mechscope.report.context import ReportContext
from mechscope.viz import Markup, render, save_png
from mechscope.viz.html import figure_uri

if TYPE_CHECKING:
    from matplotlib.figure import Figure

HEADS_SEQS, HEADS_SEQ_LEN, HEADS_TOP = 16, 50, 5


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


def heads_payload(scores: HeadScores, model: str, k: int = HEADS_TOP) -> dict[str, Any]:
    """JSON-ready: the model's name and :meth:`HeadScores.to_dict`."""
    return {"model": model, **scores.to_dict(k)}


def heads_html(scores: HeadScores, k: int = HEADS_TOP, fig: Figure | None = None) -> Markup:
    """The heatmap grid (as an inline PNG) and the classification table."""
    fig = fig if fig is not None else heads_figure(scores)
    what = {name: DETECTORS[name].what for name in scores.scores}
    return render("heads.html.j2", scores=scores.to_dict(k), what=what, k=k,
                  figure=figure_uri(fig))  # fmt: skip


def heads_section(model: HookedModel, ctx: ReportContext) -> str:
    """Head-detector grid and the top heads of each kind; numbers in ``ctx.data["heads"]``."""
    scores = head_scores(
        model, n_seqs=HEADS_SEQS, seq_len=min(HEADS_SEQ_LEN, model.dims.n_ctx // 2 - 1)
    )
    name = model.provenance.get("name") or model.provenance.get("source") or model.family.name
    ctx.data["heads"] = heads_payload(scores, str(name))
    fig = heads_figure(scores)
    save_png(fig, ctx.out_dir / "heads.png")
    return render(
        "report/heads.html.j2", scores=ctx.data["heads"], body=heads_html(scores, fig=fig)
    )
