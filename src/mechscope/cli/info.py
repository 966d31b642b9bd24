"""``mechscope info MODEL``: family, dimensions and every hook point with its shape.

``mechscope info --families``: every supported ``model_type`` with the sites its family has and
the ones it lacks (with the reason), and the same for the generic fallback.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

import click

from mechscope.cli.common import UserError, load_model, quiet_option

if TYPE_CHECKING:  # the command line imports no torch or transformers until a command runs
    from mechscope.families import Family
    from mechscope.families.base import Dims
    from mechscope.models.hooked import HookedModel


def describe(model: HookedModel, name: str) -> dict[str, Any]:
    """The JSON object that ``info --json`` prints."""
    return {
        "model": name,
        "family": model.family.name,
        "dims": dataclasses.asdict(model.dims),
        "hook_points": {n: site.shape(model.dims) for n, site in model.sites.items()},
    }


def _fallback() -> Family:
    from mechscope.families.fallback import residual_family

    return residual_family("fallback", ("*",), "", "", "", "")


def family_sites(family: Family, dims: Dims) -> dict[str, Any]:
    """The sites of one family (block sites written ``blocks.L.*``) and the absent ones."""
    from mechscope.sites import site_table

    table = site_table(family, dataclasses.replace(dims, n_layers=1))
    sites = [n.replace("blocks.0.", "blocks.L.") for n in table]
    absent = {
        (k if k.startswith(("hook_pos", "ln_final")) else "blocks.L." + k): v
        for k, v in table.absent.items()
    }
    return {"family": family.name, "sites": sites, "absent": absent}


def families_overview() -> dict[str, dict[str, Any]]:
    """model_type -> its family's sites, read with that type's default HF config."""
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    from mechscope.families import FAMILIES
    from mechscope.families.base import Dims

    out: dict[str, dict[str, Any]] = {}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # default configs warn about their token ids
    try:
        configs = {t: AutoConfig.for_model(t) for f in FAMILIES for t in f.model_types}
    finally:
        hf_logging.set_verbosity(verbosity)
    for family in FAMILIES:
        for model_type in family.model_types:
            config = configs[model_type]
            adapted = family.adapt(family, config) if family.adapt else family
            out[model_type] = family_sites(adapted, adapted.dims(config))
    dims = Dims(n_layers=1, d_model=1, n_heads=1, n_kv_heads=1, d_head=1, d_mlp=1, d_vocab=1,
                n_ctx=1)  # fmt: skip
    out["*"] = family_sites(_fallback(), dims) | {"family": "fallback (any other decoder-only LM)"}
    return out


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


def _families_text(overview: dict[str, dict[str, Any]]) -> str:
    lines: list[str] = []
    for model_type, entry in overview.items():
        lines.append(f"{model_type} ({entry['family']})")
        lines.append("  sites:  " + ", ".join(entry["sites"]))
        lines += [f"  absent: {name}: {why}" for name, why in entry["absent"].items()]
    return "\n".join(lines)


@click.command()
@click.argument("model", metavar="MODEL", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option(
    "--families", is_flag=True, help="List the supported model types and their sites instead."
)
@quiet_option
def info(model: str | None, as_json: bool, families: bool, quiet: bool) -> None:
    """Show a model's family, dimensions and hook points (with shapes)."""
    if families:
        overview = families_overview()
        click.echo(json.dumps(overview, indent=2) if as_json else _families_text(overview))
        return
    if model is None:
        raise UserError("give a MODEL (a folder, a .gguf file or smollm2-135m) or --families")
    desc = describe(load_model(model, quiet=quiet), model)
    click.echo(json.dumps(desc, indent=2) if as_json else _text(desc))
