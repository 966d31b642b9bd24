"""``mechscope dla``: direct logit attribution of a task's logit difference."""

from __future__ import annotations

from pathlib import Path

import click

from mechscope.cli.common import load_model, quiet_option, write_json
from mechscope.cli.tasks import load_task_batch, task_options


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
    result = direct_logit_attribution(hooked, batch, neurons=False)
    payload = {**result.to_dict(per_prompt=False), "model": model, "task": task}
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
        stats = "" if h["ci"] is None else (
            f"  [{h['ci'][0]:.3f}, {h['ci'][1]:.3f}]  p {h['p']:.3g}"
        )  # fmt: skip
        click.echo(f"  L{h['layer']}H{h['head']:<3d} {h['dla']: .3f}{stats}")
