"""``mechscope features``: build a feature database, search it, export and import it."""

from __future__ import annotations

import json
from typing import Any

import click

from mechscope import DEFAULT_MODEL
from mechscope.cli.common import load_model, quiet_option


@click.group("features")
def features() -> None:
    """Feature databases: build (one streaming pass), search, export / import."""


@features.command("build")
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True)
@click.option("--source", "-s", "sources", multiple=True, required=True, help="mlp:LAYER, attn:LAYER or sae:DIR (repeat for several).")  # fmt: skip
@click.option("--corpus", default=None, help="builtin (default), a .txt/.jsonl/.parquet file or folder, or hf:NAME.")  # fmt: skip
@click.option("--tokens", "-n", default=100_000, show_default=True, help="Corpus tokens to read.")
@click.option("--out", "--db", "out", required=True, help="An SQLite file, or a postgresql:// URL.")  # fmt: skip
@click.option("--seq-len", default=64, show_default=True, help="Tokens per window.")
@click.option("--batch-size", default=16, show_default=True)
@click.option("--seed", default=0, show_default=True, help="Corpus document order.")
@click.option("--top", "-k", "k", default=20, show_default=True, help="Top examples per feature.")
@click.option("--quantiles", default=8, show_default=True, help="Activation intervals sampled.")
@click.option("--per-quantile", default=2, show_default=True, help="Examples per interval.")
@click.option("--negatives", default=5, show_default=True, help="Non-activating examples.")
@click.option("--include-first", is_flag=True, help="Rank and count each window's first position too.")  # fmt: skip
@click.option("--checkpoint-seconds", default=120.0, show_default=True, help="Seconds between checkpoints (resume after a crash).")  # fmt: skip
@quiet_option
def build(model: str, sources: tuple[str, ...], corpus: str | None, tokens: int, out: str,
          seq_len: int, batch_size: int, seed: int, k: int, quantiles: int, per_quantile: int,
          negatives: int, include_first: bool, checkpoint_seconds: float, quiet: bool) -> None:  # fmt: skip
    """Read the corpus once and store every feature of every SOURCE in a database."""
    from mechscope.corpus import load_corpus
    from mechscope.features.build import BuildConfig, build_features

    cfg = BuildConfig(
        model=model, sources=tuple(sources), corpus=corpus, n_tokens=tokens, seq_len=seq_len,
        batch_size=batch_size, seed=seed, k=k, quantiles=quantiles, per_quantile=per_quantile,
        negatives=negatives, include_first=include_first,
    )  # fmt: skip
    load_corpus(corpus)  # a bad corpus fails before the model loads
    hooked = load_model(model, quiet=quiet)
    summary = build_features(hooked, cfg, out, checkpoint_seconds=checkpoint_seconds, quiet=quiet)
    if summary["windows"] is None:
        click.echo(f"{out} is already complete ({', '.join(summary['sources'])})")
        return
    rate = summary["tokens"] / max(summary["seconds"], 1e-9)
    click.echo(
        f"wrote {out}: {', '.join(summary['sources'])}; {summary['tokens']:,} tokens in "
        f"{summary['seconds']:.1f} s ({rate:,.0f} tokens/s)"
    )
    click.echo(f"browse it: mechscope serve {out}")


def _emit(payload: Any, as_json: bool, lines: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(payload, ensure_ascii=False))
    else:
        for line in lines:
            click.echo(line)


__all__ = ["features"]
