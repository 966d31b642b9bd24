"""``mechscope info MODEL``: family, dimensions and every hook point with its shape."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

import click

from mechscope.cli.common import load_model, model_argument, quiet_option

if TYPE_CHECKING:
    from mechscope.models.hooked import HookedModel


def describe(model: HookedModel, name: str) -> dict[str, Any]:
    """The JSON object that ``info --json`` prints."""
    return {
        "model": name,
        "family": model.family.name,
        "dims": dataclasses.asdict(model.dims),
        "hook_points": {n: site.shape(model.dims) for n, site in model.sites.items()},
    }


def _shape(shape: list[int | str]) -> str:
    return "[" + " ".join(str(s) for s in shape) + "]"


def _text(desc: dict[str, Any]) -> str:
    head = {"model": desc["model"], "family": desc["family"], **desc["dims"]}
    width = max(len(k) for k in head)
    lines = [f"{k:<{width}}  {v}" for k, v in head.items()]
    points = desc["hook_points"]
    lines.append(f"\nhook points ({len(points)}):")
    name_width = max(len(n) for n in points)
    lines += [f"  {n:<{name_width}}  {_shape(s)}" for n, s in points.items()]
    return "\n".join(lines)


@click.command()
@model_argument
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@quiet_option
def info(model: str, as_json: bool, quiet: bool) -> None:
    """Show a model's family, dimensions and hook points (with shapes)."""
    desc = describe(load_model(model, quiet=quiet), model)
    click.echo(json.dumps(desc, indent=2) if as_json else _text(desc))
