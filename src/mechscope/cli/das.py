"""``mechscope das``: locate a task's answer variable with distributed alignment search; IIA by
site and position as JSON and an HTML heatmap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mechscope.cli.common import load_model, quiet_option, write_json
from mechscope.cli.tasks import task_options


def _positions(value: str, n_pos: int) -> list[Any]:
    """'all', or comma-separated token indices and position names ('last', IOI's 'S2', ...)."""
    if value == "all":
        return list(range(n_pos))
    return [int(v) if v.strip().lstrip("-").isdigit() else v.strip() for v in value.split(",")
            if v.strip()]  # fmt: skip


@click.command()
@task_options
@click.option(
    "--site",
    default="blocks.{L}.hook_resid_pre",
    show_default=True,
    help="A site, or a pattern with {L} (one site per layer of --layers).",
)
@click.option("--layers", default=None, help="Layers for a {L} site, e.g. 0,4,8 (default all).")
@click.option(
    "--positions",
    default="last",
    show_default=True,
    help="'all', or token indices and position names: last, and for IOI tasks IO,S1,S2,S2+1.",
)
@click.option(
    "--method",
    type=click.Choice(["das", "pca", "full"]),
    default="das",
    show_default=True,
    help="Per cell: train DAS, the fixed top-k difference PCA, or swap the whole vector.",
)
@click.option("--dim", "k", default=1, show_default=True, help="Subspace dimensions.")
@click.option("--boundless", is_flag=True, help="Learn the subspace size (starts at --dim).")
@click.option("--steps", default=100, show_default=True, help="Optimiser steps per site.")
@click.option("--lr", default=1e-2, show_default=True)
@click.option("--test", "test_fraction", default=0.25, show_default=True, help="Held out.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write JSON here.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="Write the heatmap.")
@click.option("--png", "png_out", type=click.Path(dir_okay=False), help="Write the heatmap PNG.")
@quiet_option
def das(
    model: str,
    task: str,
    n: int,
    seed: int,
    metric: str,
    site: str,
    layers: str | None,
    positions: str,
    method: str,
    k: int,
    boundless: bool,
    steps: int,
    lr: float,
    test_fraction: float,
    json_out: str | None,
    html_out: str | None,
    png_out: str | None,
    quiet: bool,
) -> None:
    """IIA of the task's answer variable (source = corrupted prompt, label = its answer) by site
    and position: DAS, a fixed difference-PCA basis, or the whole vector (--method)."""
    from mechscope.causal import DASConfig, from_task
    from mechscope.causal.sweep import expand_sites, iia_sweep
    from mechscope.errors import MechscopeError
    from mechscope.tasks import load_task

    hooked = load_model(model, quiet=quiet)
    try:
        layer_list = [int(v) for v in layers.split(",")] if layers else None
    except ValueError:
        raise MechscopeError(f"--layers takes comma-separated ints, not {layers!r}") from None
    sites = expand_sites(site, layer_list, hooked.dims.n_layers)
    pairs = from_task(load_task(task, hooked, n=n, seed=seed), hooked)
    train, test = pairs.split(test_fraction, seed)
    config = DASConfig(k=k, steps=steps, lr=lr, boundless=boundless, seed=seed)
    found = iia_sweep(hooked, train, test, sites, _positions(positions, pairs.base.shape[1]),
                      config, method=method, quiet=quiet)  # fmt: skip
    payload = {"model": model, "task": task, "n": n, "seed": seed, **found.to_dict()}
    if method != "full":  # the shuffled control of the best cell: a random subspace of its size
        from mechscope.causal import random_control

        payload["control"] = random_control(hooked, test, found.best(), seed)
    write_json(json_out, payload)
    size = "whole vector" if method == "full" else f"k={k}"
    title = f"IIA ({method}, {size}): {task}"
    if html_out:
        from mechscope.viz.causal import iia_page

        page = iia_page(title, {method: payload},
                        subtitle=f"{model} · {len(test)} held-out pairs")  # fmt: skip
        Path(html_out).write_text(page)
        click.echo(f"wrote {html_out}", err=True)
    if png_out:
        from mechscope.viz.causal import iia_figure, layer_labels
        from mechscope.viz.html import save_png

        cols = [str(p) for p in found.positions]
        fig = iia_figure([(method, found.iia)], layer_labels(found.sites), cols, title=title)
        save_png(fig, png_out)
        click.echo(f"wrote {png_out}", err=True)
    best = found.best().to_dict()
    ci = best["test_iia_ci"]
    interval = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
    click.echo(
        f"best: {best['site']} at {best['positions']}: IIA {best['test_iia']:.3f}{interval} "
        f"on {best['n_test']} held-out pairs ({method}, k={best['k']})"
    )
    if "control" in payload:
        c = payload["control"]
        p = "" if c["p_vs_random"] is None else f"; paired permutation p = {c['p_vs_random']:.3g}"
        click.echo(f"  control: a random {c['k']}-d subspace there: IIA {c['test_iia']:.3f}{p}")
    click.echo(f"  {'':<32s} " + " ".join(f"{str(p):>5s}" for p in found.positions))
    for s, row in zip(found.sites, found.iia):
        click.echo(f"  {s:<32s} " + " ".join(f"{v:5.2f}" for v in row))


__all__ = ["das"]
