"""``mechscope attention``: attention patterns of one prompt as an interactive HTML view and a PNG."""

from __future__ import annotations

from pathlib import Path

import click

from mechscope import DEFAULT_MODEL
from mechscope.cli.common import load_model, quiet_option


def _ints(spec: str | None, what: str) -> list[int] | None:
    from mechscope.errors import MechscopeError

    if spec is None:
        return None
    try:
        return [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise MechscopeError(f"bad {what} list {spec!r}; write e.g. 0,3") from None


@click.command()
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True)
@click.option("--prompt", "-p", required=True, help="The text whose attention is shown.")
@click.option("--layers", "-l", default=None, help="Layers to show, e.g. 0,1,5-7 (default all).")
@click.option("--heads", default=None, help="Heads in the PNG, e.g. 0,3 (default all).")
@click.option("--bos", is_flag=True, help="Prepend the tokenizer's BOS token.")
@click.option(
    "--html",
    "html_out",
    type=click.Path(dir_okay=False),
    help="Write the interactive view here (default attention.html when no --png).",
)
@click.option("--png", "png_out", type=click.Path(dir_okay=False), help="Write a PNG grid here.")
@quiet_option
def attention(
    model: str,
    prompt: str,
    layers: str | None,
    heads: str | None,
    bos: bool,
    html_out: str | None,
    png_out: str | None,
    quiet: bool,
) -> None:
    """Show every head's attention pattern on PROMPT; print the files written."""
    from mechscope.errors import MechscopeError
    from mechscope.heads import attention_patterns, parse_layers
    from mechscope.viz.attention import attention_html, attention_png

    if not prompt.strip():
        raise MechscopeError("empty prompt; pass some text with --prompt")
    head_list = _ints(heads, "head")
    hooked = load_model(model, quiet=quiet)
    parse_layers(layers, hooked.dims.n_layers)  # a bad spec fails before the forward
    bad = [h for h in head_list or [] if not 0 <= h < hooked.dims.n_heads]
    if bad:
        raise MechscopeError(
            f"head {bad[0]} is out of range: the model has {hooked.dims.n_heads} heads per layer"
        )
    view = attention_patterns(hooked, prompt, layers, prepend_bos=bos)
    if html_out is None and png_out is None:
        html_out = "attention.html"
    title = f"Attention: {model}"
    subtitle = f"{prompt!r} - {len(view.str_tokens)} tokens, layers {_span(view.layers)}"
    if html_out:
        page = attention_html(view.str_tokens, view.patterns, title, layers=view.layers,
                              subtitle=subtitle)  # fmt: skip
        Path(html_out).write_text(page, encoding="utf-8")
        click.echo(html_out)
    if png_out:
        attention_png(
            view.str_tokens, view.patterns, png_out,
            heads=head_list, layer_labels=view.layers, title=subtitle,
        )  # fmt: skip
        click.echo(png_out)


def _span(layers: tuple[int, ...]) -> str:
    """``0-29`` for a contiguous run, else the list."""
    if list(layers) == list(range(layers[0], layers[-1] + 1)) and len(layers) > 2:
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(map(str, layers))
