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
@click.option("--source", "-s", "sources", multiple=True, required=True, help="mlp:LAYER, attn:LAYER, sae:DIR or crosscoder:DIR[@finetuned] (repeat for several).")  # fmt: skip
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
@click.option("--checkpoint-rounds", default=50, show_default=True, help="Under torchrun: rounds (one batch per process) between checkpoints; 0: none.")  # fmt: skip
@quiet_option
def build(model: str, sources: tuple[str, ...], corpus: str | None, tokens: int, out: str,
          seq_len: int, batch_size: int, seed: int, k: int, quantiles: int, per_quantile: int,
          negatives: int, include_first: bool, checkpoint_seconds: float, checkpoint_rounds: int,
          quiet: bool) -> None:  # fmt: skip
    """Read the corpus once and store every feature of every SOURCE in a database."""
    from mechscope.corpus import load_corpus
    from mechscope.distributed import is_main, world_size
    from mechscope.distributed.features import build_features as build_ranks
    from mechscope.features.build import BuildConfig, build_features

    cfg = BuildConfig(
        model=model, sources=tuple(sources), corpus=corpus, n_tokens=tokens, seq_len=seq_len,
        batch_size=batch_size, seed=seed, k=k, quantiles=quantiles, per_quantile=per_quantile,
        negatives=negatives, include_first=include_first,
    )  # fmt: skip
    load_corpus(corpus)  # a bad corpus fails before the model loads
    hooked = load_model(model, quiet=quiet)
    if world_size() > 1:  # torchrun: batches shared by rank, merged on rank 0
        summary = build_ranks(hooked, cfg, out, checkpoint_rounds=checkpoint_rounds, quiet=quiet)
        if not is_main():
            return
    else:
        summary = build_features(hooked, cfg, out, checkpoint_seconds=checkpoint_seconds, quiet=quiet)  # fmt: skip
    if summary["windows"] is None:
        click.echo(f"{out} is already complete ({', '.join(summary['sources'])})")
        return
    rate = summary["tokens"] / max(summary["seconds"], 1e-9)
    click.echo(
        f"wrote {out}: {', '.join(summary['sources'])}; {summary['tokens']:,} tokens in "
        f"{summary['seconds']:.1f} s ({rate:,.0f} tokens/s)"
    )
    if summary.get("resumed"):
        click.echo(f"resumed from a checkpoint after batch {summary['resumed']}")
    click.echo(f"browse it: mechscope serve {out}")


MODES = ("text", "semantic", "token", "infer", "neighbours")


@features.command("search")
@click.argument("db")
@click.argument("query")
@click.option("--mode", type=click.Choice(MODES), default="text", show_default=True, help="text / semantic: explanations; token: features peaking on a token; infer: run the model on QUERY; neighbours: QUERY is SOURCE/INDEX.")  # fmt: skip
@click.option("--source", default=None, help="The source to rank (infer).")
@click.option("--model", "-m", default=None, help="The model for infer [the database's].")
@click.option("--limit", default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
@quiet_option
def search(db: str, query: str, mode: str, source: str | None, model: str | None, limit: int,
           as_json: bool, quiet: bool) -> None:  # fmt: skip
    """Search the feature database DB (a file or a postgresql:// URL)."""
    from mechscope.errors import MechscopeError
    from mechscope.features import open_db
    from mechscope.features import search as fs

    with open_db(db, readonly=True) as d:
        if mode in ("text", "semantic"):
            rows = (fs.search_text if mode == "text" else fs.search_semantic)(d, query, limit)
            lines = [f"{r['score']:8.3f}  {r['source']}/{r['index']}  {r['explanation']}" for r in rows]  # fmt: skip
            _emit({"results": rows}, as_json, lines or ["no match"])
        elif mode == "token":
            rows = fs.search_token(d, query, limit)
            lines = [f"{r['hits']:4d} top examples peak on {r['token']!r}: {r['source']}/{r['index']}" for r in rows]  # fmt: skip
            _emit({"results": rows}, as_json, lines or ["no feature peaks on it"])
        elif mode == "neighbours":
            name, _, index = query.rpartition("/")
            if not name or not index.isdigit():
                raise MechscopeError(f"bad feature {query!r}; write SOURCE/INDEX, e.g. mlp:3/17")
            rows = fs.feature_neighbours(d, name, int(index))[:limit]
            lines = [f"{r['cosine']:7.3f}  {name}/{r['index']}" for r in rows]
            _emit({"results": rows}, as_json, lines)
        else:
            if source is None:
                raise MechscopeError("--mode infer needs --source (one of the database's sources)")
            d.source(source)  # an unknown source fails before the model loads
            hooked = load_model(model or d.meta().get("model", DEFAULT_MODEL), quiet=quiet)
            out = fs.search_infer(d, hooked, query, source, limit)
            lines = [f"{f['max']:9.4f}  {source}/{f['index']}  peak at {out['tokens'][max(range(len(f['values'])), key=f['values'].__getitem__)]!r}" for f in out["features"]]  # fmt: skip
            _emit(out, as_json, lines)


@features.command("embed")
@click.argument("db")
def embed(db: str) -> None:
    """Store a MiniLM embedding for every explanation of DB that has none (for semantic search)."""
    from mechscope.features import open_db
    from mechscope.features.search import embed_explanations

    with open_db(db) as d:
        click.echo(f"embedded {embed_explanations(d)} explanations")


@features.command("export")
@click.argument("db")
@click.option("--out", "-o", required=True, help="Folder to write <modelId>/<sourceId>/ under.")
@click.option("--model-id", default=None, help="Neuronpedia's model id [the model's name].")
def export(db: str, out: str, model_id: str | None) -> None:
    """Write DB in Neuronpedia's export layout (gzipped JSONL batches per source)."""
    from mechscope.features import open_db
    from mechscope.features.neuronpedia import export_neuronpedia

    with open_db(db, readonly=True) as d:
        click.echo(f"wrote {export_neuronpedia(d, out, model_id)}")


@features.command("import")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "--db", "out", required=True, help="A new SQLite file or postgresql:// URL.")
def import_(folder: str, out: str) -> None:
    """Read a Neuronpedia export (a model or source folder) into a new feature database."""
    from mechscope.features.neuronpedia import import_neuronpedia

    click.echo(f"imported {', '.join(import_neuronpedia(folder, out))} into {out}")


def _emit(payload: Any, as_json: bool, lines: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(payload, ensure_ascii=False))
    else:
        for line in lines:
            click.echo(line)


__all__ = ["features"]
