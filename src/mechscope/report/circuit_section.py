"""The report's circuit section: IOI on the model, patched, attributed and reduced to a circuit.

Steps (each a library call; the section only renders): build the task (``ReportConfig.circuit_task``,
``circuit_prompts`` prompts), exact activation patching of the residual stream by layer and
position, attribution patching of every head, direct logit attribution per head, and an EAP-IG
circuit (top ``circuit_fraction`` of edges) with its faithfulness-versus-edges curve
(:func:`mechscope.circuits.discover`, the pipeline ``mechscope circuit`` runs). A task the
tokenizer cannot express (e.g. a tiny test vocabulary) skips the section with a note.

Statistics (issue 17: every finding with its uncertainty): the strongest patching cells with 95%
bootstrap intervals, paired permutation p-values against the unpatched run and their
Benjamini-Hochberg q-values over the whole map; the top DLA heads with intervals and sign-flip
p-values; the faithfulness curve with a 95% band over prompts; and the circuit's stability, the
mean Jaccard index of the circuits selected on ``circuit_stability`` resamples of the prompts
(:func:`mechscope.circuits.mib.stability`; Méloux et al. 2025 suggest 0.8 as a bar).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.patching.result import PatchResult
from mechscope.report.context import ReportContext
from mechscope.viz import render, save_png
from mechscope.viz.circuit import circuit_view, faithfulness_figure
from mechscope.viz.heatmap import heatmap_figure
from mechscope.viz.html import figure_uri


def _heatmap(ctx: ReportContext, values: np.ndarray, axes: tuple[str, ...], name: str, **kw) -> str:
    fig = heatmap_figure(values, axes, title=name, **kw)
    save_png(fig, ctx.out_dir / f"{name.lower().replace(' ', '_')}.png")
    return figure_uri(fig)


def circuit_section(model: HookedModel, ctx: ReportContext) -> str:
    """Patching heatmaps, top heads by DLA, and the EAP-IG circuit with its faithfulness curve."""
    from mechscope.attribution import attribution_patch, direct_logit_attribution
    from mechscope.circuits import discover
    from mechscope.circuits.mib import stability
    from mechscope.patching import patch
    from mechscope.tasks import load_task
    from mechscope.tasks.metrics import logit_diff

    cfg = ctx.config
    try:
        task = load_task(cfg.circuit_task, model, n=cfg.circuit_prompts)
        batch = task.tokenize(model, require_uniform=True)
    except MechscopeError as exc:
        return render("skipped.html.j2", reason=str(exc))

    exact = patch(model, batch, logit_diff, "resid_pre")
    with torch.enable_grad():
        heads = attribution_patch(model, batch, logit_diff, "attn_head")
        found = discover(model, batch, logit_diff, fraction=cfg.circuit_fraction)
        stable = None
        if cfg.circuit_stability and len(batch) > 1:
            stable = stability(model, batch, logit_diff, "eap-ig", n_edges=found.circuit.n_edges,
                               n_boot=cfg.circuit_stability)  # fmt: skip
    dla = direct_logit_attribution(model, batch, neurons=False)
    scored, circuit = found.scored, found.circuit
    data, curve = circuit.to_dict(), found.curve_points()
    top_rows = dla.to_dict(per_prompt=False)["top_heads"]
    labels = model.to_str_tokens(batch.clean_tokens[0])
    cells = _top_cells(exact, labels)
    ctx.data["circuit"] = {
        "task": cfg.circuit_task,
        "prompts": len(batch),
        "clean_logit_diff": exact.clean,
        "corrupt_logit_diff": exact.corrupt,
        "resid_pre_patching": exact.normalized().tolist(),
        "head_attribution_patching": heads.normalized().tolist(),
        "resid_pre_top_cells": cells,
        "dla_heads": dla.heads.mean(-1).tolist(),
        "dla_top_heads": top_rows,
        "circuit": {k: v for k, v in data.items() if k != "edges"},
        "faithfulness_ci": None if found.circuit_ci is None else list(found.circuit_ci),
        "curve": curve,
        "stability": stable,
    }
    circuit.save(ctx.out_dir / "circuit.json")
    curve_fig = faithfulness_figure(
        curve, scored.total_edges, chosen=circuit.n_edges,
        chosen_value=circuit.faithfulness, method="EAP-IG", chosen_ci=found.circuit_ci,
    )  # fmt: skip
    save_png(curve_fig, ctx.out_dir / "faithfulness_curve.png")
    return render(
        "report/circuit.html.j2",
        task=cfg.circuit_task,
        prompts=len(batch),
        clean=task.clean[0],
        corrupt=task.corrupt[0],
        answer=task.answer[0],
        clean_ld=exact.clean,
        corrupt_ld=exact.corrupt,
        resid_figure=_heatmap(
            ctx,
            exact.normalized().numpy(),
            ("layer", "pos"),
            "resid_pre patching",
            xlabels=labels,
            cbar="normalised logit diff",
        ),  # fmt: skip
        heads_figure=_heatmap(
            ctx,
            heads.normalized().numpy(),
            ("layer", "head"),
            "head attribution patching",
            cbar="normalised logit diff (estimate)",
        ),  # fmt: skip
        top_cells=cells,
        top_heads=top_rows,
        circuit=data,
        circuit_ci=found.circuit_ci,
        stability=stable,
        curve_figure=figure_uri(curve_fig),
        view=circuit_view(data, max_edges=300),
    )


def _top_cells(exact: PatchResult, labels: list[str], k: int = 8) -> list[dict[str, Any]]:
    """The ``k`` patching cells of largest |normalised effect| with interval, p and q (None with
    one prompt)."""
    from mechscope.stats import bh_adjust, defined_interval

    many = exact.per_prompt is not None and exact.per_prompt.shape[-1] > 1
    if many:
        lo, hi = exact.ci(normalized=True)
        p = exact.pvalues()
        q = bh_adjust(p.numpy())
    rows = []
    for where, value in exact.top(k):
        layer, pos = where["layer"], where["pos"]
        row = {"layer": layer, "pos": pos, "token": labels[pos], "value": float(value),
               "ci": None, "p": None, "q": None}  # fmt: skip
        if many:
            row.update(ci=defined_interval(lo[layer, pos], hi[layer, pos]),
                       p=float(p[layer, pos]), q=float(q[layer, pos]))  # fmt: skip
        rows.append(row)
    return rows
