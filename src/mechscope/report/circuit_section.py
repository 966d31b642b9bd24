"""The report's circuit section: IOI on the model, patched, attributed and reduced to a circuit.

Steps (each a library call; the section only renders): build the task (``ReportConfig.circuit_task``,
``circuit_prompts`` prompts), exact activation patching of the residual stream by layer and
position, attribution patching of every head, direct logit attribution per head, and an EAP-IG
circuit (top ``circuit_fraction`` of edges) with its faithfulness-versus-edges curve
(:func:`mechscope.circuits.discover`, the pipeline ``mechscope circuit`` runs). A task the
tokenizer cannot express (e.g. a tiny test vocabulary) skips the section with a note.
"""

from __future__ import annotations

import numpy as np
import torch

from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
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
    dla = direct_logit_attribution(model, batch, neurons=False)
    scored, circuit, curve = found.scored, found.circuit, found.curve
    top_rows = [(f"L{layer}H{head}", float(v)) for layer, head, v in dla.top_heads(10)]
    ctx.data["circuit"] = {
        "task": cfg.circuit_task,
        "prompts": len(batch),
        "clean_logit_diff": exact.clean,
        "corrupt_logit_diff": exact.corrupt,
        "resid_pre_patching": exact.normalized().tolist(),
        "head_attribution_patching": heads.normalized().tolist(),
        "dla_heads": dla.heads.mean(-1).tolist(),
        "circuit": {k: v for k, v in circuit.to_dict().items() if k != "edges"},
        "curve": found.to_dict()["curve"],
    }
    circuit.save(ctx.out_dir / "circuit.json")
    curve_fig = faithfulness_figure(
        curve, scored.total_edges, chosen=circuit.n_edges, chosen_value=circuit.faithfulness,
        method="EAP-IG",
    )  # fmt: skip
    save_png(curve_fig, ctx.out_dir / "faithfulness_curve.png")
    labels = model.to_str_tokens(batch.clean_tokens[0])
    data = circuit.to_dict()
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
        top_heads=top_rows,
        circuit=data,
        curve_figure=figure_uri(curve_fig),
        view=circuit_view(data, max_edges=300),
    )
