"""The report's feature-database section: a small database built with
:func:`mechscope.features.build.build_features` and how to browse it.

One streaming pass over ``TOKENS`` corpus tokens stores every MLP neuron of the middle layer and
every head of the same layer (top, interval and non-activating examples, statistics, histogram,
logit table, neighbours) in ``features.db`` beside the report; the section lists the neurons with
the largest maxima and prints the commands that serve and search it.
"""

from __future__ import annotations

import time
from typing import Any

from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.report.context import ReportContext
from mechscope.viz import render

__all__ = ["features_section"]

TOKENS = 4096
SEQ_LEN = 64
K = 10
SHOW = 6


def features_section(model: HookedModel, ctx: ReportContext, corpus: Any = None) -> str:
    """Build ``features.db`` for one middle layer and say how to serve it."""
    from mechscope.features import open_db
    from mechscope.features.build import BuildConfig, build_features

    layer = model.dims.n_layers // 2
    corpus = corpus if corpus is not None else ctx.config.corpus
    path = ctx.out_dir / "features.db"
    for stale in (path, path.with_name("features.db-wal"), path.with_name("features.db-shm")):
        stale.unlink(missing_ok=True)  # a report folder is rewritten whole
    name = model.provenance.get("name") if isinstance(model.provenance, dict) else None
    cfg = BuildConfig(
        model=str(name or "model"), sources=(f"mlp:{layer}", f"attn:{layer}"),
        corpus=corpus if isinstance(corpus, str) else getattr(corpus, "name", None), n_tokens=TOKENS,
        seq_len=min(SEQ_LEN, model.dims.n_ctx), k=K, quantiles=4, negatives=3,
    )  # fmt: skip
    began = time.perf_counter()
    try:
        summary = build_features(model, cfg, str(path), corpus=corpus)
    except MechscopeError as exc:
        ctx.data["features"] = {"skipped": str(exc)}
        return render("skipped.html.j2", reason=str(exc))
    seconds = time.perf_counter() - began
    with open_db(str(path), readonly=True) as db:
        stats = sorted(db.stats(f"mlp:{layer}"), key=lambda s: -s["max"])[:SHOW]
        rows = []
        for s in stats:
            best = db.examples(f"mlp:{layer}", s["index"], "top")[0]
            rows.append({**s, "peak": best.tokens[best.position], "text": "".join(best.tokens)})
        sources = db.sources()
    ctx.data["features"] = {
        "path": path.name, "sources": sources, "tokens": summary["tokens"],
        "seconds": round(seconds, 2), "bytes": path.stat().st_size, "strongest": rows,
    }  # fmt: skip
    return render("report/features.html.j2", data=ctx.data["features"], layer=layer, path=path)
