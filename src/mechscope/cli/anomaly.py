"""``mechscope anomaly``: fit a detector on trusted text, score inputs, evaluate on labelled sets."""

from __future__ import annotations

from typing import Any

import click

from mechscope.cli.common import quiet_option, write_json
from mechscope.errors import MechscopeError


@click.group()
def anomaly() -> None:
    """Mechanistic anomaly detection: flag inputs on which the model runs an unusual mechanism."""


def _ints(text: str | None, what: str) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise MechscopeError(f"{what} {text!r} is not a comma-separated list like 3,7,11") from None


@anomaly.command("fit")
@click.option("--model", "model_name", default="smollm2-135m", show_default=True)
@click.option("--trusted", required=True, help="Trusted text: a file, a folder or 'builtin'.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option(
    "--kinds",
    default="mahalanobis,lof,perplexity,entropy",
    show_default=True,
    help="Comma-separated: mahalanobis, update, lof, attribution, lens, dla, contrast, attention, sae, "
    "perplexity, entropy, confidence.",
)
@click.option("--layers", help="Comma-separated layers (default: up to 6 evenly spaced).")
@click.option("--site", default="blocks.{layer}.hook_resid_post", show_default=True)
@click.option("--sae", "sae_path", type=click.Path(exists=True), help="SAE for the sae kind.")
@click.option("--seq-len", default=64, show_default=True)
@click.option("--n-tokens", default=32_768, show_default=True)
@click.option("--batch-size", default=8, show_default=True)
@click.option("--holdout", default=0.2, show_default=True, help="Share held out to calibrate.")
@click.option(
    "--aggregate", type=click.Choice(["max", "mean", "last"]), default="max", show_default=True
)
@click.option(
    "--combine",
    type=click.Choice(["max", "mean"]),
    default="max",
    show_default=True,
    help="Layers -> token score: the largest standardised layer score, or their mean.",
)
@click.option(
    "--ensemble",
    default="",
    help="Comma-separated fitted kinds to combine into one detector, 'ensemble': a Gaussian over "
    "their input scores on the held-out trusted inputs (e.g. update,confidence); with "
    "--ensemble-combine max, kinds joined by '+' are one term (mahalanobis,perplexity+attention).",
)
@click.option(
    "--ensemble-combine",
    type=click.Choice(["gaussian", "sum", "max"]),
    default="gaussian",
    show_default=True,
    help="How the ensemble combines its members: a Gaussian (two-sided), the sum of their "
    "standardised scores, or the largest term's (one-sided).",
)
@click.option(
    "--preset",
    type=click.Choice(["reply", "ood"]),
    help="A recommended configuration (docs/anomaly.md): reply = a planted behaviour at the start "
    "of a reply (update + confidence at the last token), ood = inputs unlike the trusted text "
    "(residual Mahalanobis, or perplexity + attention profile). Options given explicitly win.",
)
@click.option(
    "--fit-on",
    type=click.Choice(["windows", "prompts"]),
    default="windows",
    show_default=True,
    help="prompts: every trusted document is one prompt and only its last token is fitted "
    "(with --aggregate last).",
)
@click.option(
    "--contrast",
    "contrast_path",
    type=click.Path(exists=True, dir_okay=False),
    help='JSONL of {"positive": ..., "negative": ...} prompt pairs for the contrast kind '
    "(default: built-in generic questions about the model's own behaviour).",
)
@click.option("--seed", default=0, show_default=True)
@click.option("--text-field", default="text", show_default=True)
@click.option(
    "--checkpoint-every",
    default=16,
    show_default=True,
    help="Batches between checkpoints (OUT.fit-checkpoint.safetensors; a killed fit resumes).",
)
@quiet_option
def fit(
    model_name: str,
    trusted: str,
    out_dir: str,
    kinds: str,
    layers: str | None,
    site: str,
    sae_path: str | None,
    seq_len: int,
    n_tokens: int,
    batch_size: int,
    holdout: float,
    aggregate: str,
    combine: str,
    ensemble: str,
    ensemble_combine: str,
    preset: str | None,
    fit_on: str,
    contrast_path: str | None,
    seed: int,
    text_field: str,
    checkpoint_every: int,
    quiet: bool,
) -> None:
    """Fit detectors on activations of TRUSTED text only and save them to OUT.

    The streamed statistics are checkpointed every --checkpoint-every batches beside OUT; run the
    same command again after a crash or kill to resume from them."""
    from mechscope.anomaly import FitConfig, fit_detector, save_detector
    from mechscope.anomaly import preset as anomaly_preset
    from mechscope.anomaly.checkpoint import checkpoint_path
    from mechscope.cli.common import load_model
    from mechscope.corpus import load_corpus
    from mechscope.files import file_lock

    fields: dict[str, Any] = {
        "kinds": tuple(k.strip() for k in kinds.split(",") if k.strip()),
        "layers": _ints(layers, "--layers"),
        "aggregate": aggregate,
        "combine": combine,
        "ensemble": tuple(k.strip() for k in ensemble.split(",") if k.strip()),
        "ensemble_combine": ensemble_combine,
    }
    rest: dict[str, Any] = {
        "site": site,
        "seq_len": seq_len,
        "n_tokens": n_tokens,
        "batch_size": batch_size,
        "holdout": holdout,
        "fit_on": fit_on,
        "contrast": _pairs(contrast_path),
        "seed": seed,
    }
    # without a preset, bad options fail before the model loads; a preset needs its depth
    config = None if preset else FitConfig(**fields, **rest)
    corpus = load_corpus(trusted, text_field=text_field)
    model = load_model(model_name, quiet=quiet)
    if preset:  # the preset's fields, except options given on the command line
        ctx = click.get_current_context()
        given = {n for n in fields if ctx.get_parameter_source(n).name != "DEFAULT"}
        chosen = anomaly_preset(preset, model.dims.n_layers)
        fields.update({k: v for k, v in chosen.items() if k not in given})
        config = FitConfig(**fields, **rest)
    sae = _load_sae(sae_path, model)
    with file_lock(out_dir, "mechscope anomaly fit"):
        ckpt = checkpoint_path(out_dir)
        detector = fit_detector(
            model,
            corpus,
            config,
            sae=sae,
            sae_path=sae_path,
            quiet=quiet,
            checkpoint=ckpt,
            checkpoint_every=checkpoint_every,
        )
        detector.model["name"] = model_name
        save_detector(detector, out_dir)
        ckpt.unlink(missing_ok=True)
    for kind in detector.calibration:
        n = len(detector.calibration[kind]["scores"])
        click.echo(
            f"{kind:<12} fitted; threshold at 1% FPR {detector.threshold(kind, 0.01):.4g} ({n} held-out inputs)"
        )
    click.echo(out_dir)


def _pairs(path: str | None) -> tuple[tuple[str, str], ...]:
    """Contrast pairs from a JSONL file (one-line errors naming the bad line)."""
    import json
    from pathlib import Path

    if path is None:
        return ()
    pairs = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise MechscopeError(f"{path} is not a UTF-8 text file; pass a JSONL of pairs") from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pair = (row["positive"], row["negative"])
        except (ValueError, KeyError, TypeError):
            raise MechscopeError(
                f'{path} line {i} is not {{"positive": "...", "negative": "..."}}; fix it'
            ) from None
        if not all(isinstance(t, str) and t.strip() for t in pair):
            raise MechscopeError(f"{path} line {i} has an empty prompt; write both sides")
        pairs.append(pair)
    if not pairs:
        raise MechscopeError(f"{path} holds no contrast pair; add lines or drop --contrast")
    return tuple(pairs)


def _load_sae(path: str | None, model: Any) -> Any:
    if not path:
        return None
    from mechscope.sae import load_sae

    return load_sae(path, model=model)


def _detector_and_model(
    det_dir: str, model_name: str | None, sae_path: str | None, quiet: bool
) -> tuple[Any, Any, Any]:
    from mechscope.anomaly import load_detector
    from mechscope.cli.common import load_model

    detector = load_detector(det_dir)
    model = load_model(model_name or detector.model["name"], quiet=quiet)
    sae = None
    if "sae" in detector.calibration:
        sae = _load_sae(sae_path or (detector.sae or {}).get("path"), model)
    return detector, model, sae


@anomaly.command("score")
@click.argument("det_dir", metavar="DET", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--corpus", required=True, type=click.Path(exists=True), help="JSONL, text or folder."
)
@click.option("--model", "model_name", help="Default: the model the detector was fitted on.")
@click.option(
    "--kind",
    help="Detector kind, or 'ensemble' (default: the ensemble if fitted, else the first kind).",
)
@click.option("--layer", type=int, help="Score with one layer instead of all combined.")
@click.option("--fpr", default=0.01, show_default=True, help="False-positive rate of the flag.")
@click.option("--max-tokens", default=256, show_default=True, help="Tokens read per input.")
@click.option("--sae", "sae_path", type=click.Path(exists=True), help="Override the SAE path.")
@click.option("--text-field", default="text", show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write JSON here.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="Write HTML here.")
@quiet_option
def score(
    det_dir: str,
    corpus: str,
    model_name: str | None,
    kind: str | None,
    layer: int | None,
    fpr: float,
    max_tokens: int,
    sae_path: str | None,
    text_field: str,
    json_out: str | None,
    html_out: str | None,
    quiet: bool,
) -> None:
    """Score every input of CORPUS with the detector DET; flag those above the threshold."""
    from mechscope.anomaly import read_inputs, score_texts

    texts = read_inputs(corpus, text_field)
    detector, model, sae = _detector_and_model(det_dir, model_name, sae_path, quiet)
    result = score_texts(
        detector,
        model,
        texts,
        kind=kind,
        fpr=fpr,
        layer=layer,
        sae=sae,
        max_tokens=max_tokens,
        name=det_dir,
        quiet=quiet,
    )
    write_json(json_out, result.to_dict())
    if html_out:
        from pathlib import Path

        from mechscope.viz.anomaly import anomaly_page

        Path(html_out).write_text(anomaly_page(result.to_dict()), encoding="utf-8")
        click.echo(f"wrote {html_out}", err=True)
    flagged = [i for i in result.inputs if i.flagged]
    click.echo(
        f"{result.kind}: {len(flagged)} of {len(result.inputs)} inputs flagged at FPR {fpr:g} "
        f"(threshold {result.threshold:.4g})"
    )
    for item in sorted(flagged, key=lambda i: -i.score)[:10]:
        where = f" layer {item.layer}" if item.layer is not None else ""
        top = max(item.token_scores, key=lambda t: t[1])[0] if item.token_scores else ""
        click.echo(f"  input {item.index}: score {item.score:.4g}{where}, top token {top!r}")


@anomaly.command("eval")
@click.argument("det_dir", metavar="DET", type=click.Path(exists=True, file_okay=False))
@click.option("--clean", required=True, type=click.Path(exists=True), help="Clean inputs.")
@click.option(
    "--set", "sets", multiple=True, required=True, help="NAME=PATH of anomalous inputs (repeat)."
)
@click.option("--model", "model_name", help="Default: the model the detector was fitted on.")
@click.option("--max-tokens", default=256, show_default=True)
@click.option("--sae", "sae_path", type=click.Path(exists=True))
@click.option("--text-field", default="text", show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write JSON here.")
@quiet_option
def evaluate(
    det_dir: str,
    clean: str,
    sets: tuple[str, ...],
    model_name: str | None,
    max_tokens: int,
    sae_path: str | None,
    text_field: str,
    json_out: str | None,
    quiet: bool,
) -> None:
    """AUROC, average precision and FPR at 95% recall of every kind and layer of DET."""
    from mechscope.anomaly import read_inputs
    from mechscope.anomaly.evaluate import evaluate_sets, format_table

    named = {}
    for item in sets:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise MechscopeError(f"--set {item!r} is not NAME=PATH")
        named[name] = read_inputs(path, text_field)
    negatives = read_inputs(clean, text_field)
    detector, model, sae = _detector_and_model(det_dir, model_name, sae_path, quiet)
    table = evaluate_sets(
        detector, model, negatives, named, sae=sae, max_tokens=max_tokens, quiet=quiet
    )
    write_json(json_out, {"detector": det_dir, "results": table})
    click.echo(format_table(table))


__all__ = ["anomaly"]
