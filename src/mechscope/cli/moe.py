"""``mechscope moe``: routing statistics of a mixture-of-experts model with the causal check
beside each (load, balance, router entropy, co-activation, specialisation by token class and by
corpus domain, output CKA, the loss change from ablating or rerouting each expert)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import click

from mechscope.cli.common import load_model, quiet_option, write_json


@click.command()
@click.option("--model", "-m", required=True, help="A Mixtral, Qwen2-MoE, OLMoE or GPT-OSS model.")
@click.option(
    "--corpus",
    "-c",
    "corpora",
    multiple=True,
    help="Corpus (built-in default, a file or folder, hf:NAME); repeat for one domain each.",
)
@click.option("--tokens", "-n", default=8192, show_default=True, help="Tokens per domain.")
@click.option("--seq-len", default=128, show_default=True, help="Tokens per window.")
@click.option("--batch-size", default=8, show_default=True, help="Windows per forward pass.")
@click.option(
    "--cka-windows", default=8, show_default=True, help="Windows for expert CKA (0: skip)."
)
@click.option(
    "--causal-windows",
    default=8,
    show_default=True,
    help="Windows for the ablate/reroute loss check (0: skip); 2 x layers x experts forwards.",
)
@click.option(
    "--classes",
    "classes_file",
    type=click.Path(dir_okay=False, exists=True),
    help='Token classes as JSON {"token text or id": "class"} (others: "other"); default: '
    "classes from the decoded text (word, subword, digit, punct, space).",
)
@click.option(
    "--prune",
    is_flag=True,
    help="Also prune experts (guided by reroute/ablation effect, load, router weight, random) "
    "and merge them (by CKA), evaluated like `mechscope compress` on as many further windows as "
    "--causal-windows (and on the --task prompts).",
)
@click.option(
    "--task",
    default=None,
    help="Also report the task metric's change per ablated/rerouted expert: ioi, induction, ..., "
    "or a .jsonl file (see `mechscope ablate`).",
)
@click.option("--task-n", default=8, show_default=True, help="Prompts of --task.")
@click.option(
    "--metric",
    type=click.Choice(["logit_diff", "prob", "logprob", "kl"]),
    default="logit_diff",
    show_default=True,
)
@click.option("--seed", default=0, show_default=True, help="Document order seed.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write JSON here.")
@click.option(
    "--html", "html_out", type=click.Path(dir_okay=False), help="Write HTML here (and a .png)."
)
@quiet_option
def moe(
    model: str,
    corpora: tuple[str, ...],
    tokens: int,
    seq_len: int,
    batch_size: int,
    cka_windows: int,
    causal_windows: int,
    classes_file: str | None,
    prune: bool,
    task: str | None,
    task_n: int,
    metric: str,
    seed: int,
    json_out: str | None,
    html_out: str | None,
    quiet: bool,
) -> None:
    """Expert load, balance, entropy, co-activation, specialisation and causal effects."""
    from mechscope.errors import MechscopeError
    from mechscope.moe import moe_analysis
    from mechscope.moe.routing import require_moe

    _check(tokens, seq_len, batch_size, cka_windows, causal_windows, prune)
    hooked = load_model(model, quiet=quiet)
    require_moe(hooked)
    if seq_len > hooked.dims.n_ctx:
        raise MechscopeError(
            f"--seq-len {seq_len} exceeds the model's context of {hooked.dims.n_ctx}"
        )
    names, all_tokens, labels = _windows(hooked, corpora, tokens, seq_len, seed)
    task_pair = None
    if task is not None:
        from mechscope.cli.tasks import load_task_batch, task_metric

        batch = load_task_batch(hooked, task, task_n, seed)
        task_pair = (batch, task_metric(hooked, batch, metric))
    classes = _classes(hooked, classes_file) if classes_file else None
    result = moe_analysis(hooked, all_tokens, domains=names, domain_labels=labels, classes=classes,
                          cka_windows=cka_windows, causal_windows=causal_windows,
                          task=task_pair, batch_size=batch_size)  # fmt: skip
    payload = {"model": model, **result.to_dict()}
    if task is not None:
        payload.update(task=task, metric=metric)
    if prune:
        from mechscope.moe.prune import prune_report

        held_out = all_tokens[causal_windows : 2 * causal_windows]
        if held_out.shape[0] == 0:
            raise MechscopeError(f"--prune needs more than --causal-windows {causal_windows} "
                                 "windows: raise --tokens")  # fmt: skip
        sets = {"lm": held_out, **({"task": task_pair[0]} if task_pair else {})}
        payload["pruning"] = prune_report(hooked, result, sets)
    write_json(json_out, payload)
    if html_out:
        _write_html(html_out, payload, model)
    _summary(payload)


def _check(tokens: int, seq_len: int, batch: int, cka: int, causal: int, prune: bool) -> None:
    from mechscope.errors import MechscopeError

    for label, value in (("--tokens", tokens), ("--seq-len", seq_len), ("--batch-size", batch)):
        if value < 1:
            raise MechscopeError(f"{label} must be positive, got {value}")
    if cka < 0 or causal < 0:
        raise MechscopeError("--cka-windows and --causal-windows must be 0 or more")
    if prune and (cka == 0 or causal < 2):
        raise MechscopeError("--prune is guided by the similarity and the causal check and needs "
                             "2+ held-out windows: --cka-windows 1+ and --causal-windows 2+")  # fmt: skip


def _windows(
    hooked: Any, corpora: tuple[str, ...], tokens: int, seq_len: int, seed: int
) -> tuple[list[str], Any, Any]:
    """Domain names, the windows [window pos] of every domain in turn, and each one's domain."""
    import torch

    from mechscope.corpus import load_corpus, windows

    specs = list(corpora) or [None]
    chunks, labels = [], []
    for d, spec in enumerate(specs):
        stream = windows(
            load_corpus(spec), hooked.tokenizer, seq_len=seq_len, seed=seed, split="all"
        )
        got = list(itertools.islice(stream, max(1, tokens // seq_len)))
        chunks += got
        labels += [d] * len(got)
    return [spec or "built-in" for spec in specs], torch.stack(chunks), torch.tensor(labels)


def _classes(hooked: Any, path: str) -> dict[int, str]:
    """``{token id: class}`` from a JSON object keyed by token ids or single-token texts."""
    import json

    from mechscope.errors import MechscopeError

    try:
        data = json.loads(Path(path).read_text())
    except ValueError as exc:
        raise MechscopeError(f"{path} is not JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise MechscopeError(f'{path} must be a JSON object {{"token": "class", ...}}')
    out = {}
    for key, name in data.items():
        ids = (
            [int(key)] if key.isdigit() else hooked.tokenizer.encode(key, add_special_tokens=False)
        )
        if len(ids) != 1:
            raise MechscopeError(f"{key!r} in {path} is {len(ids)} tokens, not one; key it by id")
        out[ids[0]] = name
    return out


def _write_html(path: str, payload: dict[str, Any], model: str) -> None:
    from mechscope.viz import page, save_png
    from mechscope.viz.moe import moe_figure, moe_html

    fig = moe_figure(payload, f"{model}: expert load by layer and token class")
    Path(path).write_text(page("Mixture of experts", [("Expert load", moe_html(payload, fig))],
                               subtitle=f"{model} · {payload['n_tokens']:,} tokens"))  # fmt: skip
    png = save_png(fig, Path(path).with_suffix(".png"))
    click.echo(f"wrote {path} and {png}", err=True)


def _summary(payload: dict[str, Any]) -> None:
    click.echo(
        f"{payload['n_tokens']:,} tokens, {payload['n_experts']} experts, top {payload['top_k']}"
    )
    for layer in payload["layers"]:
        line = (
            f"L{layer['layer']:<3} load max/mean {layer['balance']['max_over_mean']:.2f}  "
            f"entropy/logE {layer['normalised_entropy']:.3f}"
        )
        if "causal" in layer:
            worst = max(
                range(payload["n_experts"]), key=lambda e: layer["causal"]["loss_delta_ablate"][e]
            )
            line += (
                f"  most needed E{worst} (+{layer['causal']['loss_delta_ablate'][worst]:.3f} loss)"
            )
        click.echo(line)
    for name, rows in payload.get("pruning", {}).get("curves", {}).items():
        cells = [f"{r['n']}: {r['delta']['lm']['mean']:+.3f}" for r in rows]
        click.echo(f"held-out loss change, {name} (removed per layer): {', '.join(cells)}")
