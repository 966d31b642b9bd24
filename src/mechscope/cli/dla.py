"""``mechscope dla`` and ``mechscope ablate``: direct logit attribution and ablations of a task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mechscope.cli.common import load_model, quiet_option
from mechscope.cli.patch import load_task_batch, task_options, write_json


def dla_payload(result: Any, model: str, task: str) -> dict[str, Any]:
    """Mean over prompts of every component; top heads by |DLA|."""
    heads = result.heads.mean(-1)  # [layer head]
    order = heads.abs().flatten().argsort(descending=True)[:10]
    n_heads = heads.shape[1]
    return {
        "model": model,
        "task": task,
        "logit_diff": float(result.logit_diff.mean()),
        "total": float(result.total().mean()),
        "embed": float(result.embed.mean()),
        "constant": float(result.constant.mean()),
        "attn": result.attn.mean(-1).tolist(),
        "mlp": result.mlp.mean(-1).tolist(),
        "heads": heads.tolist(),
        "top_heads": [
            {"layer": int(i) // n_heads, "head": int(i) % n_heads, "dla": float(heads.flatten()[i])}
            for i in order
        ],
    }


@click.command()
@task_options
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write JSON here.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="Write a heatmap here.")
@quiet_option
def dla(
    model: str,
    task: str,
    n: int,
    seed: int,
    metric: str,
    json_out: str | None,
    html_out: str | None,
    quiet: bool,
) -> None:
    """Direct logit attribution of the answer-minus-wrong logit to layers, heads and neurons."""
    from mechscope.attribution import direct_logit_attribution
    from mechscope.errors import MechscopeError

    if metric != "logit_diff":
        raise MechscopeError("dla attributes the logit difference; use --metric logit_diff")
    hooked = load_model(model, quiet=quiet)
    batch = load_task_batch(hooked, task, n, seed)
    result = direct_logit_attribution(
        hooked, batch.clean_tokens, batch.answer_ids, batch.wrong_ids,
        attention_mask=batch.clean_mask, neurons=False,
    )  # fmt: skip
    payload = dla_payload(result, model, task)
    write_json(json_out, payload)
    if html_out:
        import numpy as np

        from mechscope.viz.heatmap import heatmap_page

        page = heatmap_page(
            "Direct logit attribution per head",
            np.asarray(payload["heads"]),
            ("layer", "head"),
            subtitle=f"{model} · task {task} · logit diff {payload['logit_diff']:.3f}",
            cbar="logit difference",
        )
        Path(html_out).write_text(page)
    click.echo(f"logit diff {payload['logit_diff']:.3f} = sum of components {payload['total']:.3f}")
    for h in payload["top_heads"]:
        click.echo(f"  L{h['layer']}H{h['head']:<3d} {h['dla']: .3f}")


@click.command()
@task_options
@click.option("--nodes", required=True, help="e.g. 'L5H3,L7H*,MLP4,L3N120' (see docs/circuits.md).")
@click.option("--kind", type=click.Choice(["zero", "mean", "resample"]), default="zero")
@click.option("--keep-only", is_flag=True, help="Ablate every other head and MLP instead.")
@click.option(
    "--reference",
    type=click.Choice(["clean", "corrupt"]),
    default="corrupt",
    show_default=True,
    help="Prompts the mean/resample values come from.",
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write JSON here.")
@quiet_option
def ablate(
    model: str,
    task: str,
    n: int,
    seed: int,
    metric: str,
    nodes: str,
    kind: str,
    keep_only: bool,
    reference: str,
    json_out: str | None,
    quiet: bool,
) -> None:
    """Ablate heads, neurons or layers and report the task metric before and after."""
    from mechscope.ablation import ablation_effect
    from mechscope.ablation.nodes import expand
    from mechscope.cli.patch import bound_metric

    hooked = load_model(model, quiet=quiet)
    expand(nodes, hooked.dims)  # a bad spec fails before any forward
    batch = load_task_batch(hooked, task, n, seed)
    effect = ablation_effect(
        hooked, batch, nodes, kind, bound_metric(hooked, batch, metric, per_batch=False),
        reference=reference, keep=keep_only, seed=seed,
    )  # fmt: skip
    payload = {
        "model": model,
        "task": task,
        "nodes": effect.nodes,
        "kind": kind,
        "keep_only": keep_only,
        "metric": metric,
        "before": effect.before,
        "after": effect.after,
        "change": effect.change,
    }
    write_json(json_out, payload)
    click.echo(f"{metric}: {effect.before:.3f} -> {effect.after:.3f} ({effect.change:+.3f})")
