"""``mechscope lens``: the logit lens (and a tuned lens) on one prompt; ``lens train`` trains one.

``mechscope lens --prompt TEXT`` reads every layer of the prompt through the model's final norm
and unembedding (and through a tuned lens with ``--tuned PATH``): the top tokens per layer and
position, the rank and probability of ``--target``, and KL(final || lens) per layer.
``mechscope lens train --out PATH`` trains a tuned lens on a corpus and saves it.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

import click

from mechscope import DEFAULT_MODEL
from mechscope.cli.common import load_model, quiet_option
from mechscope.errors import MechscopeError

__all__ = ["lens", "lens_payload"]


def _target_id(model: Any, text: str | None) -> int | None:
    if text is None:
        return None
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise MechscopeError(
            f"--target {text!r} is {len(ids)} tokens; pass one token (mind the leading space, "
            "e.g. ' Paris')"
        )
    return int(ids[0])


def lens_payload(model: Any, results: dict[str, Any], prompt: str, name: str) -> dict[str, Any]:
    """The JSON of ``mechscope lens`` (see docs/lenses.md), from each result's ``to_dict``."""
    decode = functools.partial(_decode, model)
    readings = {lens: r.to_dict(decode) for lens, r in results.items()}
    first = next(iter(readings.values()))
    target = first["target"]
    return {
        "model": name,
        "prompt": prompt,
        "str_tokens": model.to_str_tokens(model.to_tokens(prompt)[0]),
        "site": first["site"],
        "positions": first["positions"],
        "target": None if target is None else {"id": target, "token": first["target_token"]},
        "kl": {lens: r["mean_kl"] for lens, r in readings.items()},
        "lenses": {lens: r["rows"] for lens, r in readings.items()},
    }


def _decode(model: Any, token_id: int) -> str:
    return model.tokenizer.decode([int(token_id)])


def _print_summary(payload: dict[str, Any]) -> None:
    lenses = payload["lenses"]
    names = list(lenses)
    header = "layer  " + "  ".join(f"{n + ' top-1 (last pos)':<28}{'KL':>7}" for n in names)
    if payload["target"] is not None:
        header += f"  rank of {payload['target']['token']!r}"
    click.echo(header)
    for i in range(len(lenses[names[0]])):
        cells = []
        for n in names:
            best = lenses[n][i]["top"][-1][0]
            cells.append(
                f"{best['token']!r:<20} {best['prob']:6.3f} {lenses[n][i]['mean_kl']:7.3f}"
            )
        line = f"{lenses[names[0]][i]['layer']:>5}  " + "  ".join(cells)
        if payload["target"] is not None:
            line += "  " + " / ".join(str(lenses[n][i]["target_rank"][-1]) for n in names)
        click.echo(line)


def _write_html(path: str, model: Any, results: dict[str, Any], payload: dict[str, Any]) -> None:
    from mechscope.viz.lens import lens_page

    decode = functools.partial(_decode, model)
    html = lens_page(
        results, payload["str_tokens"], decode, prompt=payload["prompt"], model=payload["model"]
    )
    Path(path).write_text(html, "utf-8")
    click.echo(f"wrote {path}", err=True)


@click.group(invoke_without_command=True)
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True)
@click.option("--prompt", "-p", help="The text read layer by layer.")
@click.option("--target", "-t", help="A token whose rank and probability are tracked.")
@click.option("--tuned", type=click.Path(dir_okay=False), help="A tuned lens (lens train --out).")
@click.option("--top-k", "-k", default=5, show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write JSON here.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="Write HTML here.")
@quiet_option
@click.pass_context
def lens(
    ctx: click.Context,
    model: str,
    prompt: str | None,
    target: str | None,
    tuned: str | None,
    top_k: int,
    json_out: str | None,
    html_out: str | None,
    quiet: bool,
) -> None:
    """Read every layer of a prompt through the logit lens (and a tuned lens with --tuned)."""
    if ctx.invoked_subcommand is not None:
        return
    if prompt is None or not prompt.strip():
        raise MechscopeError("pass --prompt TEXT (or train a tuned lens: mechscope lens train)")
    from mechscope.lenses import TunedLens, logit_lens, tuned_lens

    hooked = load_model(model, quiet=quiet)
    target_id = _target_id(hooked, target)
    tokens = hooked.to_tokens(prompt)
    results = {"logit": logit_lens(hooked, tokens, target=target_id, top_k=top_k)}
    if tuned is not None:
        translators = TunedLens.load(tuned, hooked)
        results["tuned"] = tuned_lens(
            hooked, tokens, lens=translators, target=target_id, top_k=top_k
        )
    payload = lens_payload(hooked, results, prompt, model)
    if tuned is not None:
        payload["tuned_lens"] = translators.config
    if json_out:
        Path(json_out).write_text(json.dumps(payload, indent=1))
        click.echo(f"wrote {json_out}", err=True)
    if html_out:
        _write_html(html_out, hooked, results, payload)
    _print_summary(payload)


@lens.command()
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True)
@click.option("--tokens", "-n", default=4096, show_default=True, help="Corpus tokens to train on.")
@click.option(
    "--corpus",
    "-c",
    default=None,
    help="builtin, a .txt/.jsonl/.parquet file or folder, or hf:NAME.",
)
@click.option("--seq-len", default=128, show_default=True, help="Tokens per training window.")
@click.option(
    "--lr", default=0.1, show_default=True, help="Step size relative to each layer's residual."
)
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(dir_okay=False),
    help="The .safetensors file to write.",
)
@quiet_option
def train(
    model: str, tokens: int, corpus: str | None, seq_len: int, lr: float, out: str, quiet: bool
) -> None:
    """Train a tuned lens (one affine translator per layer) on a corpus and save it to --out."""
    from mechscope.lenses import TrainConfig, train_tuned_lens

    config = TrainConfig(tokens=tokens, seq_len=seq_len, lr=lr)
    hooked = load_model(model, quiet=quiet)
    start = time.perf_counter()
    trained = train_tuned_lens(hooked, corpus, config, out=out, quiet=quiet)
    seconds = time.perf_counter() - start
    n = trained.config["tokens_trained"]
    click.echo(
        f"trained a tuned lens on {n} tokens of {trained.config['corpus']} in {seconds:.1f} s "
        f"({n / seconds:.0f} tokens/s); wrote {out}"
    )
