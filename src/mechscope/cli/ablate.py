"""``mechscope ablate``: a task metric before and after ablating heads, neurons or layers."""

from __future__ import annotations

import click

from mechscope.cli.common import load_model, quiet_option, write_json
from mechscope.cli.tasks import load_task_batch, task_metric, task_options


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

    hooked = load_model(model, quiet=quiet)
    expand(nodes, hooked.dims)  # a bad spec fails before any forward
    batch = load_task_batch(hooked, task, n, seed)
    effect = ablation_effect(
        hooked, batch, nodes, kind, task_metric(hooked, batch, metric),
        reference=reference, keep=keep_only, seed=seed,
    )  # fmt: skip
    payload = {**effect.to_dict(), "model": model, "task": task, "metric": metric}
    write_json(json_out, payload)
    ci, p = payload["change_ci"], payload["p"]
    stats = "" if ci is None else f", 95% interval [{ci[0]:+.3f}, {ci[1]:+.3f}], p {p:.3g}"
    click.echo(f"{metric}: {effect.before:.3f} -> {effect.after:.3f} ({effect.change:+.3f}{stats})")
