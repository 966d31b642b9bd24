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
from mechscope.viz import Markup, escape, figure_img, save_png, table
from mechscope.viz.heatmap import heatmap_figure


def _heatmap(ctx: ReportContext, values: np.ndarray, axes: tuple[str, ...], name: str, **kw) -> str:
    fig = heatmap_figure(values, axes, title=name, **kw)
    save_png(fig, ctx.out_dir / f"{name.lower().replace(' ', '_')}.png")
    return figure_img(fig, name)


def _curve_figure(points: list[tuple[int, float]], total: int):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot()
    ax.plot([n for n, _ in points], [f for _, f in points], marker="o")
    ax.axhline(0.8, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel(f"edges kept (of {total:,})")
    ax.set_ylabel("faithfulness")
    ax.set_title("EAP-IG circuit: faithfulness versus size")
    fig.tight_layout()
    return fig


def circuit_section(model: HookedModel, ctx: ReportContext) -> str:
    """Patching heatmaps, top heads by DLA, and the EAP-IG circuit with its faithfulness curve."""
    from mechscope.attribution import attribution_patch, direct_logit_attribution
    from mechscope.circuits import discover, render
    from mechscope.patching import patch
    from mechscope.tasks import load_task
    from mechscope.tasks.metrics import logit_diff

    cfg = ctx.config
    try:
        task = load_task(cfg.circuit_task, model, n=cfg.circuit_prompts)
        batch = task.tokenize(model, require_uniform=True)
    except MechscopeError as exc:
        return Markup(f'<p class="note">Skipped: {escape(exc)}</p>')

    exact = patch(model, batch, logit_diff, "resid_pre")
    with torch.enable_grad():
        heads = attribution_patch(model, batch, logit_diff, "attn_head")
        found = discover(model, batch, logit_diff, fraction=cfg.circuit_fraction)
    dla = direct_logit_attribution(
        model, batch.clean_tokens, batch.answer_ids, batch.wrong_ids,
        attention_mask=batch.clean_mask, neurons=False,
    )  # fmt: skip
    scored, circuit, curve = found.scored, found.circuit, found.curve
    top_rows = [(f"L{layer}H{head}", f"{v:+.3f}") for layer, head, v in dla.top_heads(10)]
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
    labels = model.to_str_tokens(batch.clean_tokens[0])
    intro = (
        f"<p>Task <strong>{escape(cfg.circuit_task)}</strong>, {len(batch)} prompts, e.g. "
        f'<span class="tok">{escape(task.clean[0])}</span> → {escape(repr(task.answer[0]))} '
        f'(corrupted: <span class="tok">{escape(task.corrupt[0])}</span>). Logit difference: '
        f"clean {exact.clean:.3f}, corrupted {exact.corrupt:.3f}.</p>"
    )
    parts = [
        intro,
        "<h3>Activation patching (exact, denoising) of the residual stream</h3>",
        _heatmap(
            ctx,
            exact.normalized().numpy(),
            ("layer", "pos"),
            "resid_pre patching",
            xlabels=labels,
            cbar="normalised logit diff",
        ),  # fmt: skip
        "<h3>Attribution patching of every head (output, all positions)</h3>",
        _heatmap(
            ctx,
            heads.normalized().numpy(),
            ("layer", "head"),
            "head attribution patching",
            cbar="normalised logit diff (estimate)",
        ),  # fmt: skip
        "<h3>Top heads by direct logit attribution</h3>",
        table(top_rows, ["head", "logit diff"]),
        f"<h3>EAP-IG circuit: top {circuit.n_edges} of {scored.total_edges} edges "
        f"({100 * circuit.n_edges / scored.total_edges:.2f}%), faithfulness "
        f"{circuit.faithfulness:.3f}</h3>",
        figure_img(_curve_figure(curve, scored.total_edges), "faithfulness versus edges"),
        # inline SVG in HTML5 needs no namespace; the page then names no URL at all
        render.to_svg(circuit, max_edges=300).replace(' xmlns="http://www.w3.org/2000/svg"', ""),
    ]
    return Markup("".join(parts))
