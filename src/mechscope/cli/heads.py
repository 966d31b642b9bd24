"""``mechscope heads``: score every head as induction, previous-token, duplicate-token, attention
sink and copy-suppression head; JSON, an HTML page with one heatmap per detector, and a PNG."""

from __future__ import annotations

from pathlib import Path

import click

from mechscope import DEFAULT_MODEL
from mechscope.cli.common import load_model, quiet_option, write_json


@click.command()
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True)
@click.option("--seqs", default=64, show_default=True, help="Repeated random sequences.")
@click.option("--seq-len", default=50, show_default=True, help="Tokens in each copy.")
@click.option("--seed", default=0, show_default=True)
@click.option("--top", default=5, show_default=True, help="Heads listed per detector.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write JSON here.")
@click.option(
    "--html", "html_out", type=click.Path(dir_okay=False), help="Write HTML here (and a .png)."
)
@quiet_option
def heads(
    model: str,
    seqs: int,
    seq_len: int,
    seed: int,
    top: int,
    json_out: str | None,
    html_out: str | None,
    quiet: bool,
) -> None:
    """Score every head with the head detectors and list the top heads of each kind."""
    from mechscope.errors import MechscopeError
    from mechscope.heads import head_scores, repeated_tokens
    from mechscope.viz import page, save_png
    from mechscope.viz.heads import heads_figure, heads_html

    if top < 1:
        raise MechscopeError(f"--top must be at least 1, got {top}")
    hooked = load_model(model, quiet=quiet)
    tokens = repeated_tokens(hooked, seqs, seq_len, seed)  # checks sizes before any forward
    scores = head_scores(hooked, tokens=tokens, seed=seed)
    payload = {"model": model, **scores.to_dict(top)}
    write_json(json_out, payload)
    if html_out:
        subtitle = f"{model} · {seqs} sequences of 2 x {seq_len} random tokens · seed {seed}"
        Path(html_out).write_text(page("Head detectors", [("Scores", heads_html(scores, top))],
                                       subtitle=subtitle))  # fmt: skip
        png = save_png(heads_figure(scores, model), Path(html_out).with_suffix(".png"))
        click.echo(f"wrote {html_out} and {png}", err=True)
    for name, heads_ in payload["classification"].items():
        listed = "  ".join(f"L{h['layer']}H{h['head']} {h['score']:.2f}" for h in heads_[:top])
        click.echo(f"{name:<17} {listed}")
