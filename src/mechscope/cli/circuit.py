"""``mechscope circuit``: discover a circuit of a task with EAP, EAP-IG, node attribution
patching or ACDC."""

from __future__ import annotations

from typing import Any

import click

from mechscope.cli.common import load_model, quiet_option, write_json
from mechscope.cli.tasks import load_task_batch, task_metric, task_options


def _edge_counts(_ctx: Any, _param: Any, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a comma-separated list of edge counts"
        ) from None


@click.command()
@task_options
@click.option(
    "--method",
    type=click.Choice(["eap", "eap-ig", "eap-ig-activations", "node-ap", "acdc"]),
    default="eap-ig",
    help="node-ap: attribution patching of nodes (heads, MLPs), MIB's node-level EAP.",
)
@click.option("--steps", default=5, show_default=True, help="EAP-IG interpolation steps.")
@click.option(
    "--ungroup-kv",
    is_flag=True,
    help="Give every query head its own key/value ports (the EAP-IG library's graph).",
)
@click.option("--bos", is_flag=True, help="Prepend BOS to every prompt (as the EAP-IG library).")
@click.option("--edges", type=int, default=None, help="Keep the top N edges by |score|.")
@click.option("--threshold", type=float, default=None, help="Keep edges with |score| >= X.")
@click.option("--greedy", is_flag=True, help="Grow the N edges greedily from the logits.")
@click.option("--curve/--no-curve", default=True, help="Also a faithfulness-versus-edges curve.")
@click.option(
    "--curve-edges",
    callback=_edge_counts,
    help="Edge counts of the curve, e.g. 300,564,1000,2000 (default: 0.1%..10% of the model's "
    "grouped graph, the same counts for both graphs).",
)
@click.option("--mib", is_flag=True, help="Score the method by MIB's CPR and CMD (intervals).")
@click.option("--stability", type=int, default=0, help="Bootstrap Jaccard over N resamples.")
@click.option("--mib-json", type=click.Path(dir_okay=False), help="MIB submission JSON here.")
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
    ungroup_kv: bool,
    bos: bool,
    edges: int | None,
    threshold: float | None,
    greedy: bool,
    curve: bool,
    curve_edges: list[int] | None,
    mib: bool,
    stability: int,
    mib_json: str | None,
    json_out: str | None,
    html_out: str | None,
    quiet: bool,
) -> None:
    """Score every edge of the model's graph and keep a circuit; report its faithfulness."""
    from mechscope.circuits import discover, render
    from mechscope.errors import MechscopeError

    if edges is not None and threshold is not None:
        raise MechscopeError("give either --edges N or --threshold X, not both")
    hooked = load_model(model, quiet=quiet)
    batch = load_task_batch(hooked, task, n, seed, prepend_bos=bos)
    found = discover(
        hooked, batch, task_metric(hooked, batch, metric), method=method, steps=steps,
        ungroup_kv=ungroup_kv, edges=edges, threshold=threshold, greedy=greedy,
        curve=curve_edges if curve else (),
    )  # fmt: skip
    payload = {**found.to_dict(), "model": model, "task": task, "metric": metric}
    if mib or stability:
        from mechscope.circuits.mib import finding_stats

        payload.update(finding_stats(hooked, batch, task_metric(hooked, batch, metric), found,
                                     mib=mib, n_resamples=stability, steps=steps, ungroup_kv=ungroup_kv))  # fmt: skip
    write_json(json_out, payload)
    if mib_json:
        from mechscope.circuits.mib import to_mib_json

        write_json(mib_json, to_mib_json(found.circuit, hooked))
    if html_out:
        render.save(found.circuit, html_out, curve=payload.get("curve"))
        click.echo(f"wrote {html_out}", err=True)
    _summary(found)
    if "mib" in payload:
        m = payload["mib"]
        click.echo(f"MIB: CPR {m['cpr']:.3f} [{m['cpr_ci'][0]:.3f}, {m['cpr_ci'][1]:.3f}], "
                   f"CMD {m['cmd']:.3f} [{m['cmd_ci'][0]:.3f}, {m['cmd_ci'][1]:.3f}]")  # fmt: skip
    if "stability" in payload:
        st = payload["stability"]
        lo, hi = st["mean_jaccard_ci"]
        click.echo(f"stability: mean Jaccard {st['mean_jaccard']:.3f} [{lo:.3f}, {hi:.3f}] "
                   f"over {st['n_boot']} resamples")  # fmt: skip


def _summary(found: Any) -> None:
    c = found.circuit

    def interval(ci: Any) -> str:
        return "" if ci is None else f" [{ci[0]:.3f}, {ci[1]:.3f}]"

    click.echo(
        f"{c.n_edges} of {c.total_edges} edges ({c.n_edges / c.total_edges:.2%}), "
        f"faithfulness {c.faithfulness:.3f}{interval(found.circuit_ci)}"
    )
    for p in found.curve_points():
        click.echo(
            f"  {p['n_edges']:7d} edges: faithfulness {p['faithfulness']:.3f}{interval(p['ci'])}"
        )
    for src, dst, score in c.edges()[:10]:  # by decreasing |score|
        click.echo(f"  {src:>10s} -> {dst:<12s} {score: .4f}")


__all__ = ["circuit"]
