"""``mechscope compare MODEL_A MODEL_B``: layer-by-layer CKA and Procrustes on the same text,
and (``--circuit TASK``) the diff of the two models' circuits for a task."""

from __future__ import annotations

from typing import Any

import click

from mechscope.cli.common import load_model, quiet_option, write_json
from mechscope.errors import MechscopeError

__all__ = ["compare"]


def _layers(text: str | None) -> list[int] | None:
    if text is None or text == "default":
        return None
    if text == "all":
        return []
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise MechscopeError(f"layers {text!r} must be 'all', 'default' or like 0,3,7") from None


def _resolve(layers: list[int] | None, model: Any) -> list[int] | None:
    return list(range(model.dims.n_layers)) if layers == [] else layers


@click.command()
@click.argument("model_a")
@click.argument("model_b")
@click.option("--corpus", help="Corpus: a file, folder or hf:NAME (default: the built-in one).")
@click.option("--tokens", "-n", default=100_000, show_default=True, help="Aligned tokens read.")
@click.option("--seq-len", default=128, show_default=True, help="Tokens per chunk (model A).")
@click.option("--batch-size", default=8, show_default=True, help="Chunks per forward.")
@click.option("--layers-a", help="Layers of A: 'all', 'default' (at most 12) or 0,3,7.")
@click.option("--layers-b", help="Layers of B: as --layers-a.")
@click.option("--similarity/--no-similarity", default=True, help="CKA and Procrustes.")
@click.option("--circuit", "task", help="Also diff the circuits of this task (name or .jsonl).")
@click.option("--circuit-edges", default=100, show_default=True, help="Edges kept per circuit.")
@click.option("--circuit-n", default=8, show_default=True, help="Prompts of the task.")
@click.option("--circuit-html", type=click.Path(dir_okay=False), help="Write the circuit diff.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write JSON here.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="Write HTML here.")
@click.option("--png", "png_out", type=click.Path(dir_okay=False), help="Write a PNG here.")
@quiet_option
def compare(
    model_a: str,
    model_b: str,
    corpus: str | None,
    tokens: int,
    seq_len: int,
    batch_size: int,
    layers_a: str | None,
    layers_b: str | None,
    similarity: bool,
    task: str | None,
    circuit_edges: int,
    circuit_n: int,
    circuit_html: str | None,
    json_out: str | None,
    html_out: str | None,
    png_out: str | None,
    quiet: bool,
) -> None:
    """Debiased linear CKA and orthogonal Procrustes between the residual streams of two models."""
    from mechscope.compare.run import compare_models

    if not (similarity or task):
        raise MechscopeError("nothing to do: --no-similarity needs --circuit TASK")
    wanted_a, wanted_b = _layers(layers_a), _layers(layers_b)
    a = load_model(model_a, quiet=quiet)
    b = a if model_b == model_a else load_model(model_b, quiet=quiet)
    data: dict[str, Any] = {"model_a": model_a, "model_b": model_b}
    if task:
        diff = _circuit_diff(a, b, task, circuit_n, circuit_edges)
        data["circuit_diff"] = {"task": task, **diff}
        if circuit_html:
            from mechscope.files import write_atomic
            from mechscope.viz.compare import circuit_diff_page

            write_atomic(circuit_html, circuit_diff_page(diff, model_a, model_b, task))
            click.echo(f"wrote {circuit_html}", err=True)
        counts = diff["counts"]
        click.echo(
            f"circuit of {task}: {counts['edges_shared']} edges shared, {counts['edges_lost']} "
            f"lost, {counts['edges_added']} added; nodes lost {diff['nodes']['lost']}, added "
            f"{diff['nodes']['added']}"
        )
    if not similarity:
        write_json(json_out, data)
        return
    result = compare_models(
        a,
        b,
        corpus,
        n_tokens=tokens,
        seq_len=seq_len,
        batch_size=batch_size,
        layers_a=_resolve(wanted_a, a),
        layers_b=_resolve(wanted_b, b),
        quiet=quiet,
    )
    data.update(result.to_dict())
    write_json(json_out, data)
    _figures(data, model_a, model_b, html_out, png_out)
    _summary(data)


def _circuit_diff(a: Any, b: Any, task: str, n: int, edges: int) -> dict[str, Any]:
    from mechscope.circuits import discover
    from mechscope.cli.tasks import load_task_batch, task_metric
    from mechscope.compare.circuit_diff import diff_circuits

    runs = []
    for model in (a, b):
        batch = load_task_batch(model, task, n, 0)
        metric = task_metric(model, batch, "logit_diff")
        runs.append(discover(model, batch, metric, edges=edges, curve=()))
    diff = diff_circuits(runs[0].circuit, runs[1].circuit, runs[0].scored, runs[1].scored)
    out = diff.to_dict()
    out["faithfulness"] = [runs[0].circuit.faithfulness, runs[1].circuit.faithfulness]
    return out


def _figures(
    data: dict, name_a: str, name_b: str, html_out: str | None, png_out: str | None
) -> None:
    from mechscope.files import write_atomic
    from mechscope.viz.compare import similarity_figure, similarity_page
    from mechscope.viz.html import png_bytes

    if html_out:
        write_atomic(html_out, similarity_page(data, name_a, name_b))
        click.echo(f"wrote {html_out}", err=True)
    if png_out:
        write_atomic(png_out, png_bytes(similarity_figure(data, name_a, name_b)))
        click.echo(f"wrote {png_out}", err=True)


def _summary(data: dict) -> None:
    click.echo(f"{data['n_tokens']} aligned tokens; best match in B for each layer of A:")
    click.echo("  layer A  best B   CKA    Procrustes")
    for la, cka, proc in zip(data["layers_a"], data["cka"], data["procrustes"], strict=True):
        j = max(range(len(cka)), key=cka.__getitem__)
        click.echo(f"  {la:>7}  {data['layers_b'][j]:>6}  {cka[j]:.3f}  {proc[j]:.3f}")
