"""``mechscope patch``: an activation-patching sweep of a task, as JSON and an HTML heatmap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mechscope.cli.common import load_model, quiet_option, write_json
from mechscope.cli.tasks import load_task_batch, task_metric, task_options

SWEEP_NAMES = [
    "resid_pre",
    "resid_mid",
    "resid_post",
    "attn_out",
    "mlp_out",
    "attn_head",
    "attn_head_pos",
    "q",
    "k",
    "v",
    "pattern",
    "neuron",
]


@click.command()
@task_options
@click.option("--sweep", "-s", type=click.Choice(SWEEP_NAMES), required=True)
@click.option("--method", type=click.Choice(["exact", "attribution"]), default="exact")
@click.option("--direction", type=click.Choice(["denoise", "noise"]), default="denoise")
@click.option("--layer", type=int, default=None, help="The layer of the neuron sweep.")
@click.option(
    "--ci",
    "ci_level",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="Add bootstrap intervals over prompts at this level (e.g. 0.95), paired permutation "
    "p-values against the unpatched run and their Benjamini-Hochberg q-values to the JSON and "
    "the printed top effects (exact method).",
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write JSON here.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="Write a heatmap here.")
@quiet_option
def patch(
    model: str,
    task: str,
    n: int,
    seed: int,
    metric: str,
    sweep: str,
    method: str,
    direction: str,
    layer: int | None,
    ci_level: float | None,
    json_out: str | None,
    html_out: str | None,
    quiet: bool,
) -> None:
    """Patch every slice of a site between clean and corrupted prompts; print the top effects."""
    from mechscope.errors import MechscopeError
    from mechscope.patching import patch as run_patch

    if sweep == "neuron" and layer is None:
        raise MechscopeError("the neuron sweep needs --layer L")
    if ci_level is not None and method != "exact":
        raise MechscopeError("--ci needs --method exact (attribution keeps no per-prompt values)")
    hooked = load_model(model, quiet=quiet)
    batch = load_task_batch(hooked, task, n, seed)
    fn = task_metric(hooked, batch, metric)
    if method == "exact":
        run = run_patch
    else:
        from mechscope.attribution import attribution_patch as run
    result = run(hooked, batch, fn, sweep, direction=direction, layer=layer)
    payload = {
        **result.to_dict(),
        "model": model,
        "task": task,
        "metric": metric,
        "pos_labels": hooked.to_str_tokens(batch.clean_tokens[0]),
    }
    bounds = pvalues = None
    if ci_level is not None:
        import torch

        from mechscope.patching.result import _json_list
        from mechscope.stats import bh_adjust

        bounds = result.ci(level=ci_level, seed=seed)
        pvalues = result.pvalues(seed=seed)
        qvalues = torch.as_tensor(bh_adjust(pvalues.numpy()), dtype=torch.float32)
        payload.update(
            ci_level=ci_level, ci_low=bounds[0].tolist(), ci_high=bounds[1].tolist(),
            pvalue=_json_list(pvalues), qvalue=_json_list(qvalues),
        )  # fmt: skip
    write_json(json_out, payload)
    if html_out:
        _write_html(html_out, payload)
    _print_top(result, bounds=bounds, pvalues=pvalues)


def _write_html(path: str, payload: dict[str, Any]) -> None:
    import numpy as np

    from mechscope.viz.heatmap import heatmap_page

    shown = payload["normalized"] is not None
    values = payload["normalized"] if shown else payload["values"]
    html = heatmap_page(
        f"{payload['method']} patching: {payload['sweep']}",
        np.asarray(values),
        payload["axes"],
        subtitle=f"{payload['model']} · task {payload['task']} · {payload['direction']} · "
        f"clean {payload['clean']:.3f}, corrupted {payload['corrupt']:.3f}",
        pos_labels=payload["pos_labels"],
        cbar="normalised metric" if shown else payload["metric"],
    )
    Path(path).write_text(html)
    click.echo(f"wrote {path}", err=True)


def _print_top(result: Any, k: int = 10, bounds: Any = None, pvalues: Any = None) -> None:
    click.echo(
        f"{result.sweep} ({result.method}, {result.direction}): "
        f"clean {result.clean:.3f}, corrupted {result.corrupt:.3f}"
    )
    for where, value in result.top(k):
        text = ", ".join(f"{a}={i}" for a, i in where.items())
        interval = ""
        if bounds is not None:  # raw bounds of the raw value at this cell
            cell = tuple(where.values())
            interval = (
                f"  raw {result.values[cell]:.3f} [{bounds[0][cell]:.3f}, {bounds[1][cell]:.3f}]"
                f"  p {pvalues[cell]:.3g}"
            )
        click.echo(f"  {text:30s} {value: .3f}{interval}")
