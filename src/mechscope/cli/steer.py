"""``mechscope steer``: generate with an SAE latent added, scaled or clamped at its site."""

from __future__ import annotations

import click

from mechscope import DEFAULT_MODEL
from mechscope.cli.common import load_model, quiet_option, write_json


@click.command()
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True)
@click.option(
    "--sae", "sae_dir", required=True, type=click.Path(), help="SAE folder or file (docs/sae.md)."
)
@click.option("--latent", required=True, type=int, help="Index of the latent to steer with.")
@click.option("--scale", required=True, type=float, help="Strength (see --mode).")
@click.option("--prompt", "prompts", required=True, multiple=True, help="Prompt (repeatable).")
@click.option(
    "--mode",
    type=click.Choice(["add", "scale", "clamp"]),
    default="add",
    show_default=True,
    help="add: x + scale*direction; scale: multiply the latent; clamp: set the latent to scale.",
)
@click.option("--max-new-tokens", default=30, show_default=True)
@click.option("--temperature", default=0.0, show_default=True, help="0: greedy.")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write JSON here.")
@quiet_option
def steer(
    model: str,
    sae_dir: str,
    latent: int,
    scale: float,
    prompts: tuple[str, ...],
    mode: str,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    json_out: str | None,
    quiet: bool,
) -> None:
    """Show generations without and with a latent's decoder direction steered in."""
    from mechscope.sae import load_sae
    from mechscope.sae.steer import steer as run_steer

    hooked = load_model(model, quiet=quiet)
    sae = load_sae(sae_dir, model=hooked)
    results = [
        run_steer(
            hooked,
            sae,
            prompt,
            latent=latent,
            scale=scale,
            mode=mode,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            seed=seed,
        )  # fmt: skip
        for prompt in prompts
    ]
    write_json(
        json_out, {"model": model, "sae": sae_dir, "results": [r.to_dict() for r in results]}
    )
    for r in results:
        click.echo(f"prompt:   {r.prompt}")
        click.echo(f"baseline: {r.prompt}{r.baseline}")
        click.echo(f"steered:  {r.prompt}{r.steered}   [{mode} latent {latent} x {scale:g}]")
