"""``mechscope probe``: linear/logistic probes per site, with a control task; JSON, HTML, PNG."""

from __future__ import annotations

from typing import Any

import click

from mechscope import DEFAULT_MODEL
from mechscope.cli.common import load_model, quiet_option, write_json


@click.command()
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True)
@click.option(
    "--data",
    "-d",
    required=True,
    help='A .jsonl file ({"text", "label", optional "position" or "token"} per line) or '
    "builtin:NAME (is_number, past_tense, plural).",
)
@click.option("--site", "-s", default="blocks.*.hook_resid_post", show_default=True)
@click.option("--kind", type=click.Choice(["logistic", "linear"]), default="logistic")
@click.option("--folds", default=5, show_default=True, help="Cross-validation folds (0: none).")
@click.option("--test-fraction", default=0.2, show_default=True)
@click.option("--weight-decay", default=1e-2, show_default=True, help="L2 penalty.")
@click.option("--seed", default=0, show_default=True)
@click.option("--control/--no-control", default=True, help="Also fit the control task.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write JSON here.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="Write a page here.")
@click.option("--png", "png_out", type=click.Path(dir_okay=False), help="Write the curve here.")
@quiet_option
def probe(
    model: str,
    data: str,
    site: str,
    kind: str,
    folds: int,
    test_fraction: float,
    weight_decay: float,
    seed: int,
    control: bool,
    json_out: str | None,
    html_out: str | None,
    png_out: str | None,
    quiet: bool,
) -> None:
    """Probe every site matching --site for the labels of --data; print accuracy by site."""
    from mechscope.probes import load_probe_data
    from mechscope.probes import probe as run_probe

    examples = load_probe_data(data)  # bad data fails before the model loads
    hooked = load_model(model, quiet=quiet)
    result = run_probe(
        hooked, examples, site, kind=kind, test_fraction=test_fraction, folds=folds,
        seed=seed, control=control, weight_decay=weight_decay, quiet=quiet,
    )  # fmt: skip
    payload: dict[str, Any] = {"model": model, **result.to_dict(), "data": data}
    write_json(json_out, payload)
    if html_out or png_out:
        _write_views(result, model, html_out, png_out)
    _summary(payload)


def _write_views(result: Any, model: str, html_out: str | None, png_out: str | None) -> None:
    from pathlib import Path

    from mechscope.viz.html import save_png
    from mechscope.viz.probe import probe_curve_figure, probe_page

    if html_out:
        Path(html_out).write_text(probe_page(result, model=model), encoding="utf-8")
        click.echo(f"wrote {html_out}", err=True)
    if png_out:
        save_png(probe_curve_figure(result), png_out)
        click.echo(f"wrote {png_out}", err=True)


def _summary(payload: dict[str, Any]) -> None:
    def fmt(value: float | None) -> str:
        return "    -" if value is None else f"{value:+.3f}"

    click.echo(
        f"{payload['kind']} probe, {payload['n_examples']} examples, {payload['n_classes']} "
        f"classes, {payload['n_train']} train / {payload['n_test']} test"
    )
    click.echo(f"{'site':40s} {'acc':>6s} {'cv':>6s} {'ctrl':>6s} {'select':>6s} {'base':>6s}")
    for s in payload["sites"]:
        cv = "     -" if s["cv_mean"] is None else f"{s['cv_mean']:6.3f}"
        ctrl = "     -" if s["control_accuracy"] is None else f"{s['control_accuracy']:6.3f}"
        click.echo(
            f"{s['site']:40s} {s['accuracy']:6.3f} {cv} {ctrl} {fmt(s['selectivity']):>6s} "
            f"{s['baseline']:6.3f}"
        )
