"""``mechscope diff BASE FINETUNED``: what a finetune changed (KL by token, the difference lens,
steering, crosscoders)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mechscope.cli.common import load_model, quiet_option, write_json
from mechscope.errors import MechscopeError

__all__ = ["diff"]


@click.command()
@click.argument("base")
@click.argument("finetuned")
@click.option("--corpus", help="Corpus (default: FINETUNED/eval.jsonl of a toy, else built-in).")
@click.option("--tokens", "-n", default=20_000, show_default=True, help="Tokens read.")
@click.option("--seq-len", default=128, show_default=True)
@click.option("--batch-size", default=8, show_default=True)
@click.option("--lens/--no-lens", default=True, help="The activation-difference lens.")
@click.option("--steer-layers", help="Layers steered, like 15,29 (default: middle and last).")
@click.option("--sae", "sae_path", type=click.Path(exists=True), help="Read the lens through it.")
@click.option("--crosscoder", "cc_out", type=click.Path(file_okay=False), help="Train/read here.")
@click.option("--layer", type=int, help="Crosscoder layer (default: the middle one).")
@click.option("--cc-site", default="hook_resid_post", show_default=True, help="Crosscoder hook: at --layer (hook_mlp_out) or in full (blocks.15.hook_mlp_out).")  # fmt: skip
@click.option("--variant", type=click.Choice(["batchtopk", "l1"]), default="batchtopk")
@click.option("--expansion", default=8, show_default=True, help="Crosscoder latents per width.")
@click.option("--k", default=16, show_default=True, help="Crosscoder target L0.")
@click.option("--cc-tokens", default=50_000, show_default=True, help="Crosscoder training tokens.")
@click.option("--cc-batch-size", default=1024, show_default=True, help="Crosscoder batch (tokens).")
@click.option("--cc-steps", type=int, help="Crosscoder steps (default: one pass, tokens / batch).")
@click.option("--cc-lr", default=4e-4, show_default=True, help="Crosscoder learning rate.")
@click.option(
    "--cc-seed", default=0, show_default=True, help="Crosscoder seed (harvest order, init)."
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write JSON here.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="Write HTML here.")
@quiet_option
def diff(base: str, finetuned: str, **opts: Any) -> None:
    """Diff BASE and its finetune FINETUNED; a folder of `mechscope toy finetune` is scored
    against its planted behaviour."""
    from mechscope.corpus import load_corpus
    from mechscope.diff.run import DiffOptions, default_corpus, diff_models, shown_documents
    from mechscope.toys.finetune import read_plant

    quiet = opts["quiet"]
    plant = read_plant(finetuned)[0] if (Path(finetuned) / "finetune.json").is_file() else None
    spec = opts["corpus"] or default_corpus(finetuned)
    corpus = load_corpus(spec)
    a = load_model(base, quiet=quiet)
    b = load_model(finetuned, quiet=quiet)
    sae = _load_sae(opts["sae_path"], a) if opts["sae_path"] else None
    options = DiffOptions(
        n_tokens=opts["tokens"],
        seq_len=opts["seq_len"],
        batch_size=opts["batch_size"],
        lens=opts["lens"],
        steer_layers=_ints(opts["steer_layers"]),
    )
    payload, kl = diff_models(a, b, corpus, options, plant=plant, sae=sae, quiet=quiet)
    payload = {"base": base, "finetuned": finetuned, **payload}
    if opts["cc_out"]:
        payload["crosscoder"] = _crosscoder(a, b, corpus, plant, opts)
    write_json(opts["json_out"], payload)
    if opts["html_out"]:
        from mechscope.files import write_atomic
        from mechscope.viz.diff import diff_page

        write_atomic(opts["html_out"], diff_page(payload, shown_documents(kl, a.tokenizer, plant)))
        click.echo(f"wrote {opts['html_out']}", err=True)
    _summary(payload)


def _ints(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise MechscopeError(f"--steer-layers {text!r} must be like 15,29") from None


def _load_sae(path: str, model: Any) -> Any:
    from mechscope.sae import load_sae

    return load_sae(path, model=model)


def _crosscoder(a: Any, b: Any, corpus: Any, plant: Any, opts: dict[str, Any]) -> dict[str, Any]:
    from mechscope.diff.crosscoder import CrosscoderInfo
    from mechscope.diff.crosscoder_train import (
        crosscoder_site,
        evaluate_crosscoder,
        train_crosscoder,
    )
    from mechscope.sae import load_sae
    from mechscope.toys.finetune import trigger_spans

    out = Path(opts["cc_out"])
    site = opts["cc_site"]
    layer = opts["layer"]
    if layer is None and not site.startswith("blocks."):
        layer = a.dims.n_layers // 2
    layer, hook = crosscoder_site(a, layer, site)
    if (out / "crosscoder.json").is_file() and (out / "cfg.json").is_file():
        sae, info = load_sae(out), CrosscoderInfo.load(out)
        if info.hook_name != hook:
            raise MechscopeError(
                f"the crosscoder in {out} reads {info.hook_name}, not {hook}; "
                "pass its --layer/--cc-site or another --crosscoder folder"
            )
        click.echo(f"read the crosscoder in {out}", err=True)
    else:
        sae, info, _ = train_crosscoder(
            a,
            b,
            out,
            layer=layer,
            site=hook,
            corpus=corpus,
            variant=opts["variant"],
            expansion=opts["expansion"],
            k=opts["k"],
            n_tokens=opts["cc_tokens"],
            batch_size=opts["cc_batch_size"],
            lr=opts["cc_lr"],
            steps=opts["cc_steps"],
            seed=opts["cc_seed"],
            seq_len=opts["seq_len"],
            quiet=opts["quiet"],
        )
        _note_short_harvest(out, opts["cc_tokens"])
    spans = None
    if plant is not None:  # scored on the trigger words, which a finetune-only latent should find
        spans = {i: trigger_spans(d, plant) for i, d in enumerate(corpus.documents("test"))}
    report = evaluate_crosscoder(
        sae, info, a, b, corpus, spans=spans, seq_len=opts["seq_len"], split="test"
    )
    report.pop("relative_norm")
    head = {"folder": str(out), "layer": info.layer, "hook_name": info.hook_name}
    if plant is not None:
        head["planted"] = "trigger words"
    return {**head, "variant": info.variant, **report}


def _note_short_harvest(out: Path, wanted: int) -> None:
    from mechscope.activations.store import ActivationStore

    m = ActivationStore.open(out / "acts-base").manifest
    if m.exhausted:
        click.echo(
            f"note: the corpus ran out after {m.n_tokens:,} of {wanted:,} crosscoder tokens "
            "(a window never crosses documents; shorter ones are skipped: lower --seq-len)",
            err=True,
        )


def _summary(payload: dict[str, Any]) -> None:
    kl = payload["kl"]
    click.echo(f"mean KL(finetuned || base) {kl['mean_kl']:.4f} over {kl['n_tokens']} tokens")
    for t in kl["top_tokens"][:5]:
        click.echo(f"  KL {t['kl']:.3f}  doc {t['doc']}  {t.get('context', '')!r}")
    if "planted" in kl:
        p = kl["planted"]
        click.echo(
            f"planted tokens: precision of the top {p['planted_tokens']} {p['precision_at_n']:.2f}, "
            f"of the top 20 {p['precision_at_20']:.2f}"
        )
    lens = payload.get("lens")
    if lens:
        layer = max(range(len(lens["norms"])), key=lens["norms"].__getitem__)
        click.echo(
            f"difference lens, layer {layer}: {' '.join(map(repr, lens['tokens'][layer][:8]))}"
        )
        if "steering" in lens:
            best = lens["steering"]["best"]
            click.echo(
                f"steering: log P(reply) {lens['steering']['baseline']:.2f} -> {best['logprob']:.2f}"
                f" (layer {best['layer']}, scale {best['scale']})"
            )
    cc = payload.get("crosscoder")
    if cc:
        click.echo(f"crosscoder at {cc['hook_name']}: {cc['bands']}")
        if "best_planted" in cc:
            b = cc["best_planted"]
            click.echo(
                f"  latent {b['latent']} finds the trigger words: precision {b['precision']:.2f}, "
                f"recall {b['recall']:.2f}, relative norm {b['delta']:.2f} (rank {b['rank']})"
            )
        for r in sorted(cc["finetune_only"], key=lambda r: -r["delta"])[:3]:
            click.echo(
                f"  finetune-only latent {r['latent']} (relative norm {r['delta']:.3f}, nu_eps "
                f"{r['nu_eps']:.3f}, nu_r {r['nu_r']:.3f})"
                + (
                    f": trigger recall {r['recall']:.2f}, AUROC {r['auroc']:.2f}"
                    if "auroc" in r
                    else ""
                )
            )
