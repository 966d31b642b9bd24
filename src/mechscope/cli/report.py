"""``mechscope report``: write the self-contained HTML report of a model."""

from __future__ import annotations

import click

from mechscope import DEFAULT_MODEL
from mechscope.cli.common import load_model, quiet_option


@click.command()
@click.option(
    "--model", "-m", default=DEFAULT_MODEL, show_default=True, help="Hub id, folder or .gguf."
)
@click.option(
    "--out",
    "-o",
    type=click.Path(file_okay=False),
    default="mechscope-report",
    show_default=True,
    help="Folder to write report.html (and report.json, PNGs) into.",
)
@click.option(
    "--prompt",
    "-p",
    "prompts",
    multiple=True,
    help="A prompt to show predictions for (repeatable; the logit lens reads the first). "
    "Default: an IOI, a factual and a counting prompt.",
)
@click.option(
    "--sae",
    "sae_dir",
    type=click.Path(exists=True),
    default=None,
    help="An SAE folder or file (docs/sae.md) for the SAE section; default: a small one trained "
    "once on the built-in corpus and cached.",
)
@quiet_option
def report(
    model: str, out: str, prompts: tuple[str, ...], sae_dir: str | None, quiet: bool
) -> None:
    """Build an HTML report of a model and print its path."""
    import dataclasses

    from mechscope.files import folder_lock
    from mechscope.report import ReportConfig, build_report  # matplotlib: only when needed

    config = ReportConfig.for_prompts(prompts)  # checks the prompts before the slow load
    config = dataclasses.replace(config, sae=sae_dir)
    with folder_lock(out, "mechscope report"):  # one report writes a folder at a time
        path = build_report(load_model(model, quiet=quiet), out, config=config, quiet=quiet)
    click.echo(str(path))
