"""``mechscope neurons``: max-activating corpus windows, histograms and logit effects of a layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mechscope import DEFAULT_MODEL
from mechscope.cli.common import load_model, quiet_option


def _ints(spec: str) -> list[int]:
    from mechscope.errors import MechscopeError

    try:
        out = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise MechscopeError(f"bad neuron list {spec!r}; write e.g. 0,5,17") from None
    if not out:
        raise MechscopeError("empty neuron list; write e.g. --neurons 0,5,17")
    return out


@click.command()
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True)
@click.option("--layer", "-l", type=int, required=True, help="The layer whose MLP neurons to scan.")
@click.option("--neurons", default=None, help="Neurons to show, e.g. 0,5,17.")
@click.option("--top-neurons", type=int, default=None, help="Show the N neurons with the largest maxima [8].")  # fmt: skip
@click.option("--top", "-k", "k", default=20, show_default=True, help="Windows kept per neuron.")
@click.option("--tokens", "-n", default=100_000, show_default=True, help="Corpus tokens to scan.")
@click.option("--corpus", default=None, help="builtin (default), a .txt/.jsonl/.parquet file or folder, or hf:NAME.")  # fmt: skip
@click.option("--seq-len", default=64, show_default=True, help="Tokens per window.")
@click.option("--batch-size", default=16, show_default=True)
@click.option("--seed", default=0, show_default=True, help="Corpus document order.")
@click.option("--no-final-norm", is_flag=True, help="Unembed W_out rows without the final norm.")
@click.option("--include-first", is_flag=True, help="Rank and count each window's first position too.")  # fmt: skip
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write JSON here.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="Write an HTML page here.")  # fmt: skip
@quiet_option
def neurons(
    model: str,
    layer: int,
    neurons: str | None,
    top_neurons: int | None,
    k: int,
    tokens: int,
    corpus: str | None,
    seq_len: int,
    batch_size: int,
    seed: int,
    no_final_norm: bool,
    include_first: bool,
    json_out: str | None,
    html_out: str | None,
    quiet: bool,
) -> None:
    """Scan every MLP neuron of LAYER over corpus tokens in one pass; show the top neurons."""
    from mechscope.corpus import load_corpus
    from mechscope.errors import MechscopeError
    from mechscope.neurons import mlp_neurons, scan_corpus, scan_to_dict, unit_positions
    from mechscope.viz.neurons import neurons_page

    if neurons is not None and top_neurons is not None:
        raise MechscopeError("give either --neurons or --top-neurons, not both")
    if top_neurons is not None and top_neurons < 1:
        raise MechscopeError(f"--top-neurons must be at least 1, got {top_neurons}")
    if k < 1 or tokens < 1 or seq_len < 2 or batch_size < 1:
        raise MechscopeError("--top, --tokens and --batch-size must be positive, --seq-len >= 2")
    chosen = _ints(neurons) if neurons is not None else None
    text = load_corpus(corpus)  # a bad corpus fails before the model loads
    hooked = load_model(model, quiet=quiet)
    if chosen is not None:
        mlp_neurons(hooked, layer, chosen)  # bad layer or neuron numbers fail before the pass
    readout = mlp_neurons(hooked, layer)
    result = scan_corpus(
        hooked, readout, text, n_tokens=tokens, seq_len=seq_len, batch_size=batch_size,
        seed=seed, k=k, through_norm=not no_final_norm, include_first=include_first, quiet=quiet,
    )  # fmt: skip
    show = unit_positions(result, chosen) if chosen else result.ranked(top_neurons or 8)
    data = scan_to_dict(result, hooked.tokenizer, show=show, model=model)
    if json_out:
        Path(json_out).write_text(_dumps(data), encoding="utf-8")
        click.echo(f"wrote {json_out}", err=True)
    if html_out:
        title = f"Neurons: {model} layer {layer}"
        Path(html_out).write_text(neurons_page(data, title), encoding="utf-8")
        click.echo(f"wrote {html_out}", err=True)
    _summary(data)


def _dumps(data: dict[str, Any]) -> str:
    import json

    return json.dumps(data, ensure_ascii=False) + "\n"


def _summary(data: dict[str, Any]) -> None:
    click.echo(f"{data['site']}: {data['tokens']:,} tokens, {data['windows']:,} windows")
    for n in data["neurons"]:
        best = n["top"][0] if n["top"] else None
        peak = repr(best["tokens"][best["position"]]) if best else "-"
        promotes = " ".join(repr(p["token"]) for p in n["promotes"][:5])
        click.echo(
            f"  neuron {n['index']:<5d} max {n['max']:8.3f}  density {n['density']:.3f}  "
            f"peak token {peak:<14s} promotes {promotes}"
        )


__all__ = ["neurons"]
