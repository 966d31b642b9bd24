"""The report's head-detector section (its pictures: :mod:`mechscope.viz.heads`).

``heads_section(model, ctx)`` scores every head (induction, previous-token, duplicate-token,
attention sink and copy suppression; :func:`mechscope.heads.head_scores`) on
``HEADS_SEQS`` repeated random sequences of 2 x ``HEADS_SEQ_LEN`` tokens, draws one [layer head]
heatmap per detector and tables the top heads. On SmolLM2 it costs one forward of the batch (the
pattern pass stops after the last attention layer) plus ~3 s of weight algebra.
"""

from __future__ import annotations

from mechscope.heads import head_scores
from mechscope.models.hooked import HookedModel
from mechscope.report.context import ReportContext
from mechscope.viz import render, save_png
from mechscope.viz.heads import HEADS_TOP, heads_figure, heads_html

__all__ = ["heads_section"]

HEADS_SEQS, HEADS_SEQ_LEN = 16, 50


def heads_section(model: HookedModel, ctx: ReportContext) -> str:
    """Head-detector grid and the top heads of each kind; numbers in ``ctx.data["heads"]``."""
    scores = head_scores(
        model, n_seqs=HEADS_SEQS, seq_len=min(HEADS_SEQ_LEN, model.dims.n_ctx // 2 - 1)
    )
    name = model.provenance.get("name") or model.provenance.get("source") or model.family.name
    ctx.data["heads"] = {"model": str(name), **scores.to_dict(HEADS_TOP)}
    fig = heads_figure(scores)
    save_png(fig, ctx.out_dir / "heads.png")
    return render(
        "report/heads.html.j2", scores=ctx.data["heads"], body=heads_html(scores, fig=fig)
    )
