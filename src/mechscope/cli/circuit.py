"""``mechscope circuit``: discover a circuit of a task with EAP, EAP-IG or ACDC."""

from __future__ import annotations

from typing import Any

import click

from mechscope.cli.common import load_model, quiet_option
from mechscope.cli.patch import bound_metric, load_task_batch, task_options, write_json

CURVE_FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)


@click.command()
@task_options
@click.option("--method", type=click.Choice(["eap", "eap-ig", "acdc"]), default="eap-ig")
@click.option("--steps", default=5, show_default=True, help="EAP-IG interpolation steps.")
@click.option("--edges", type=int, default=None, help="Keep the top N edges by |score|.")
@click.option("--threshold", type=float, default=None, help="Keep edges with |score| >= X.")
@click.option("--greedy", is_flag=True, help="Grow the N edges greedily from the logits.")
@click.option("--curve/--no-curve", default=True, help="Also a faithfulness-versus-size curve.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write JSON here.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="Write the graph here.")
@quiet_option
def circuit(
    model: str,
    task: str,
    n: int,
    seed: int,
    metric: str,
    method: str,
    steps: int,
    edges: int | None,
    threshold: float | None,
    greedy: bool,
    curve: bool,
    json_out: str | None,
    html_out: str | None,
    quiet: bool,
) -> None:
    """Score every edge of the model's graph and keep a circuit; report its faithfulness."""
    from mechscope.circuits import (
        acdc,
        attribute,
        curve_sizes,
        faithfulness,
        faithfulness_curve,
        render,
    )
    from mechscope.errors import MechscopeError

    if edges is not None and threshold is not None:
        raise MechscopeError("give either --edges N or --threshold X, not both")
    hooked = load_model(model, quiet=quiet)
    batch = load_task_batch(hooked, task, n, seed)
    fn = bound_metric(hooked, batch, metric, per_batch=False)
    if method == "acdc":
        chosen = acdc(hooked, batch, threshold if threshold is not None else 0.01, fn)
        scored = chosen
    else:
        scored = attribute(hooked, batch, fn, method=method, steps=steps)
        chosen = _select(scored, edges, threshold, greedy)
    chosen = chosen.with_faithfulness(faithfulness(hooked, batch, chosen, fn))
    payload: dict[str, Any] = {**chosen.to_dict(), "model": model, "task": task, "metric": metric}
    if curve and method != "acdc":
        sizes = curve_sizes(scored.total_edges, CURVE_FRACTIONS)
        points = faithfulness_curve(hooked, batch, scored, sizes, fn)
        payload["curve"] = [{"n_edges": k, "faithfulness": v} for k, v in points]
    write_json(json_out, payload)
    if html_out:
        render.save(chosen, html_out, curve=payload.get("curve"))
        click.echo(f"wrote {html_out}", err=True)
    _summary(payload)


def _select(scored: Any, edges: int | None, threshold: float | None, greedy: bool) -> Any:
    if threshold is not None:
        return scored.threshold(threshold)
    n = edges if edges is not None else max(1, round(0.01 * scored.total_edges))
    return scored.greedy(n) if greedy else scored.top_n(n)


def _summary(payload: dict[str, Any]) -> None:
    click.echo(
        f"{payload['n_edges']} of {payload['total_edges']} edges "
        f"({payload['n_edges'] / payload['total_edges']:.2%}), "
        f"faithfulness {payload['faithfulness']:.3f}"
    )
    for point in payload.get("curve", []):
        click.echo(f"  {point['n_edges']:7d} edges: faithfulness {point['faithfulness']:.3f}")
    top = sorted(payload["edges"], key=lambda e: -abs(e["score"]))[:10]
    for e in top:
        click.echo(f"  {e['src']:>10s} -> {e['dst']:<12s} {e['score']: .4f}")


__all__ = ["circuit"]
