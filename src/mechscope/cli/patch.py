"""``mechscope patch``: an activation-patching sweep of a task, as JSON and an HTML heatmap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from mechscope import DEFAULT_MODEL
from mechscope.cli.common import load_model, quiet_option

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


def task_options(fn: Any) -> Any:
    """--model, --task, --n, --seed, --metric: shared by the circuit commands."""
    for option in reversed(
        [
            click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True),
            click.option(
                "--task",
                "-t",
                default="ioi",
                show_default=True,
                help="ioi, ioi-swap, induction, greater_than, sva, capitals, or a .jsonl file "
                '({"clean", "corrupt", "answer", "wrong"} per line).',
            ),
            click.option("--n", "n", default=8, show_default=True, help="Number of prompts."),
            click.option("--seed", default=0, show_default=True),
            click.option(
                "--metric",
                type=click.Choice(["logit_diff", "prob", "logprob", "kl"]),
                default="logit_diff",
                show_default=True,
            ),
        ]
    ):
        fn = option(fn)
    return fn


def load_task_batch(model: Any, task: str, n: int, seed: int) -> Any:
    from mechscope.tasks import load_task

    return load_task(task, model, n=n, seed=seed).tokenize(model, require_same_length=True)


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=1))
        click.echo(f"wrote {path}", err=True)


@click.command()
@task_options
@click.option("--sweep", "-s", type=click.Choice(SWEEP_NAMES), required=True)
@click.option("--method", type=click.Choice(["exact", "attribution"]), default="exact")
@click.option("--direction", type=click.Choice(["denoise", "noise"]), default="denoise")
@click.option("--layer", type=int, default=None, help="The layer of the neuron sweep.")
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
    json_out: str | None,
    html_out: str | None,
    quiet: bool,
) -> None:
    """Patch every slice of a site between clean and corrupted prompts; print the top effects."""
    from mechscope.errors import MechscopeError
    from mechscope.patching import patch as run_patch

    if sweep == "neuron" and layer is None:
        raise MechscopeError("the neuron sweep needs --layer L")
    hooked = load_model(model, quiet=quiet)
    batch = load_task_batch(hooked, task, n, seed)
    fn = bound_metric(hooked, batch, metric)
    if method == "exact":
        run = run_patch
    else:
        from mechscope.attribution import attribution_patch as run
    result = run(
        hooked, batch.clean_tokens, batch.corrupt_tokens, fn, sweep,
        direction=direction, attention_mask=batch.clean_mask, layer=layer,
        read_pos=batch.last_pos,
    )  # fmt: skip
    payload = result_payload(hooked, batch, result, model, task, method, metric)
    write_json(json_out, payload)
    if html_out:
        _write_html(html_out, payload)
    _print_top(payload)


def bound_metric(model: Any, batch: Any, metric: str, per_batch: bool = True) -> Any:
    """The named metric; ``per_batch`` binds the batch (``fn(logits)``), else ``fn(logits, b)``."""
    from mechscope.tasks.metrics import get_metric

    clean_logits = None
    if metric == "kl":
        import torch

        with torch.no_grad():
            clean_logits = model.forward(batch.clean_tokens, attention_mask=batch.clean_mask)
    fn = get_metric(metric, clean_logits)
    return (lambda logits: fn(logits, batch)) if per_batch else fn


def result_payload(
    model: Any, batch: Any, result: Any, name: str, task: str, method: str, metric: str
) -> dict[str, Any]:
    norm = result.normalized() if abs(result.clean - result.corrupt) > 1e-9 else None
    return {
        "model": name,
        "task": task,
        "sweep": result.sweep,
        "method": method,
        "direction": result.direction,
        "metric": metric,
        "axes": list(result.axes),
        "clean": result.clean,
        "corrupt": result.corrupt,
        "values": result.values.tolist(),
        "normalized": None if norm is None else norm.tolist(),
        "pos_labels": model.to_str_tokens(batch.clean_tokens[0]),
    }


def _shown(payload: dict[str, Any]) -> tuple[Any, str]:
    """The values to show (normalised when defined) and their label."""
    if payload["normalized"] is not None:
        return payload["normalized"], "normalised metric"
    return payload["values"], payload["metric"]


def _write_html(path: str, payload: dict[str, Any]) -> None:
    import numpy as np

    from mechscope.viz.heatmap import heatmap_page

    values, label = _shown(payload)
    html = heatmap_page(
        f"{payload['method']} patching: {payload['sweep']}",
        np.asarray(values),
        payload["axes"],
        subtitle=f"{payload['model']} · task {payload['task']} · {payload['direction']} · "
        f"clean {payload['clean']:.3f}, corrupted {payload['corrupt']:.3f}",
        pos_labels=payload["pos_labels"],
        cbar=label,
    )
    Path(path).write_text(html)
    click.echo(f"wrote {path}", err=True)


def _print_top(payload: dict[str, Any], k: int = 10) -> None:
    import numpy as np

    values = np.asarray(_shown(payload)[0])
    click.echo(
        f"{payload['sweep']} ({payload['method']}, {payload['direction']}): "
        f"clean {payload['clean']:.3f}, corrupted {payload['corrupt']:.3f}"
    )
    order = np.argsort(-np.abs(values).ravel())[:k]
    for flat in order:
        idx = np.unravel_index(flat, values.shape)
        where = ", ".join(f"{a}={i}" for a, i in zip(payload["axes"], idx))
        click.echo(f"  {where:30s} {values[idx]: .3f}")
