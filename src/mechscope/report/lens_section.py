"""The report's tuned-lens section: KL to the final distribution by layer, logit vs tuned lens.

Steps: the model's tuned lens is taken from the cache or trained once on the built-in corpus
(:func:`mechscope.lenses.cached_tuned_lens`, the report's budget of
:data:`~mechscope.lenses.REPORT_TOKENS` tokens); both lenses are then read on the same held-out
windows (the corpus's test split) and KL(final || lens) is averaged per layer
(:func:`mechscope.lenses.held_out_kl`). Belrose et al. (2023) report that the tuned lens is
closer to the final distribution than the logit lens at every layer; the section says whether
that holds here.

A report config may carry ``corpus`` (a :class:`~mechscope.corpus.Corpus`), ``tuned_lens_tokens``
and ``tuned_lens_eval_tokens``; without them the defaults below are used.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from mechscope.lenses import REPORT_TOKENS, TrainConfig, cached_tuned_lens, held_out_kl
from mechscope.models.hooked import HookedModel
from mechscope.report.context import ReportContext
from mechscope.viz import render, save_png
from mechscope.viz.html import figure_uri
from mechscope.viz.lens import lens_kl_figure

__all__ = ["EVAL_TOKENS", "tuned_lens_section"]

EVAL_TOKENS = 1024  # held-out positions the curves average over
SEQ_LEN = 128  # window length, or the model's context if shorter


def _seq_len(model: HookedModel) -> int:
    context = getattr(model.hf.config, "max_position_embeddings", None) or SEQ_LEN
    return min(SEQ_LEN, int(context))


def tuned_lens_section(model: HookedModel, ctx: ReportContext) -> str:
    """Per-layer held-out KL of the logit lens and the tuned lens, as a figure and a table."""
    corpus = getattr(ctx.config, "corpus", None)
    tokens = getattr(ctx.config, "tuned_lens_tokens", REPORT_TOKENS)
    eval_tokens = getattr(ctx.config, "tuned_lens_eval_tokens", EVAL_TOKENS)
    seq_len = _seq_len(model)
    config = dataclasses.replace(TrainConfig(), seq_len=seq_len)
    start = time.perf_counter()
    lens = cached_tuned_lens(model, tokens=tokens, corpus=corpus, config=config, progress=False)
    seconds = time.perf_counter() - start
    kl = held_out_kl(model, corpus, lens=lens, tokens=eval_tokens, seq_len=seq_len)
    assert kl.tuned is not None
    layers = np.arange(len(kl.logit))
    better = kl.tuned < kl.logit
    checked = better[:-1] if lens.site == "resid_post" else better
    ctx.data["tuned_lens"] = {
        "held_out": kl.to_dict(),
        "tuned_better_at_every_layer_but_last": bool(checked.all()),
        "lens": {k: v for k, v in lens.config.items() if k != "format"},
        "seconds": seconds,  # training (first run) or loading (cached)
    }
    fig = lens_kl_figure(layers, {"logit lens": kl.logit, "tuned lens": kl.tuned})
    save_png(fig, ctx.out_dir / "tuned_lens_kl.png")
    verdict = (
        "The tuned lens is closer to the final distribution at every layer but the last."
        if checked.all()
        else f"The tuned lens is not closer at layers {', '.join(map(str, layers[:-1][~checked]))}."
    )
    return render(
        "report/tuned_lens.html.j2",
        kl=kl.to_dict(),
        corpus=lens.config.get("corpus"),
        tokens_trained=lens.config["tokens_trained"],
        verdict=verdict,
        figure=figure_uri(fig),
    )
