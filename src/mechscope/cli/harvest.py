"""``mechscope harvest``: cache activations at one or two sites over a corpus into a store."""

from __future__ import annotations

import re
import time
from typing import Any

import click

from mechscope import DEFAULT_MODEL
from mechscope.cli.common import load_model, quiet_option

_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}


def parse_tokens(text: str) -> int:
    """``"20000"``, ``"500k"``, ``"10M"`` -> a positive token count."""
    from mechscope.errors import MechscopeError

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)\s*", text)
    value = float(match.group(1)) * _SUFFIX[match.group(2).lower()] if match else 0
    if value < 1 or value != int(value):
        raise MechscopeError(
            f"--tokens must be a positive count such as 20000, 500k or 10M, not {text!r}"
        )
    return int(value)


@click.command()
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True)
@click.option(
    "--site",
    "-s",
    "sites",
    multiple=True,
    required=True,
    help="Site to harvest, e.g. blocks.6.hook_resid_post; twice for a transcoder's input and "
    "output (blocks.6.hook_resid_mid then blocks.6.hook_mlp_out).",
)
@click.option(
    "--corpus", "-c", default=None, help="Corpus: built-in (default), a file or folder, hf:NAME."
)
@click.option(
    "--tokens", "-n", "n_tokens", required=True, help="Tokens to harvest (20000, 500k, 10M)."
)
@click.option(
    "--out", "-o", "out_dir", required=True, type=click.Path(file_okay=False), help="Store folder."
)
@click.option("--seq-len", default=128, show_default=True, help="Tokens per window.")
@click.option("--batch-size", default=8, show_default=True, help="Windows per forward pass.")
@click.option("--shard-tokens", default=65536, show_default=True, help="Rows per shard file.")
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float16", "bfloat16"]),
    default="float32",
    show_default=True,
)
@click.option("--seed", default=0, show_default=True, help="Document order seed.")
@click.option(
    "--split", type=click.Choice(["all", "train", "test"]), default="train", show_default=True
)
@click.option(
    "--prepend-bos", is_flag=True, help="Start windows with BOS (its position is not stored)."
)
@click.option(
    "--include-first",
    is_flag=True,
    help="Store each window's first position too (left out by default: BOS or attention sink).",
)
@click.option("--overwrite", is_flag=True, help="Replace a store of other settings in --out.")
@quiet_option
def harvest(
    model: str,
    sites: tuple[str, ...],
    corpus: str | None,
    n_tokens: str,
    out_dir: str,
    seq_len: int,
    batch_size: int,
    shard_tokens: int,
    dtype: str,
    seed: int,
    split: str,
    prepend_bos: bool,
    include_first: bool,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Harvest activations into OUT (sharded safetensors + manifest.json).

    Runs again with the same options resume a killed harvest where it stopped. Launched by
    `torchrun --nproc-per-node N --no-python mechscope harvest ...`, the ranks share the shards
    and write the same store (docs/scale.md).
    """
    from mechscope.activations import read_manifest
    from mechscope.corpus import load_corpus
    from mechscope.distributed import is_main
    from mechscope.distributed.harvest import harvest as run_harvest

    count = parse_tokens(n_tokens)
    hooked = load_model(model, quiet=quiet)
    text = load_corpus(corpus)
    before = _old_shards(out_dir, read_manifest)
    start = time.perf_counter()
    store = run_harvest(
        hooked, list(sites), text, count, out_dir, seq_len=seq_len, batch_size=batch_size,
        shard_tokens=shard_tokens, dtype=dtype, seed=seed, split=split, prepend_bos=prepend_bos,
        include_first=include_first, overwrite=overwrite, progress=not quiet,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if not is_main():  # rank 0 reports for the run
        return
    m = store.manifest
    kept = 0 if overwrite else sum(s.n_tokens for s in m.shards if s in before)
    new = m.n_tokens - kept
    rate = f", {new / seconds:,.0f} tokens/s" if new > 0 and seconds > 0 else ""
    resumed = f" (resumed at {kept:,})" if kept and new > 0 else ""
    click.echo(
        f"{out_dir}: {m.n_tokens:,} tokens x {', '.join(f'{s} [{m.dims[s]}]' for s in m.sites)}, "
        f"{len(m.shards)} shards, {m.dtype}{resumed}{rate}"
    )
    if m.exhausted:
        click.echo(f"note: the corpus ran out after {m.n_tokens:,} of {count:,} tokens", err=True)


def _old_shards(out_dir: str, read_manifest: Any) -> list[Any]:
    """The shards a store in ``out_dir`` lists already (none if there is no store)."""
    from mechscope.errors import MechscopeError

    try:
        return list(read_manifest(out_dir).shards)
    except MechscopeError:
        return []


__all__ = ["harvest", "parse_tokens"]
