"""``mechscope sae eval``: an SAE's reconstruction, sparsity and spliced-model loss, or (``--truth``)
its recovery of a known dictionary."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from mechscope import DEFAULT_MODEL
from mechscope.cli.common import load_model, quiet_option, write_json

if TYPE_CHECKING:
    from mechscope.sae import SAE

ROWS = (
    ("l0", "L0 (active latents per token)"),
    ("fvu", "fraction of variance unexplained"),
    ("mse", "mean squared error"),
    ("cos", "cosine similarity"),
    ("dead_fraction", "dead latents"),
    ("dense_fraction", "dense latents (>10% of tokens)"),
    ("ce_loss_clean", "CE loss, clean"),
    ("ce_loss_spliced", "CE loss, SAE spliced in"),
    ("ce_loss_zero", "CE loss, site zeroed"),
    ("ce_loss_recovered", "CE loss recovered"),
    ("kl", "KL(clean || spliced)"),
)


@click.command("eval")
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True)
@click.option(
    "--sae", "sae_dir", required=True, type=click.Path(), help="SAE folder or file (docs/sae.md)."
)
@click.option("--corpus", default=None, help="Text to evaluate on (default: built-in, test split).")
@click.option("--tokens", default=16_384, show_default=True, help="Tokens to evaluate on.")
@click.option("--seq-len", default=128, show_default=True)
@click.option("--batch-size", default=8, show_default=True)
@click.option(
    "--truth",
    type=click.Path(dir_okay=False),
    default=None,
    help="Ground-truth dictionary (.npy, [n_features, d]): score recovery instead (no model run).",
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write JSON here.")
@quiet_option
def sae_eval(
    model: str,
    sae_dir: str,
    corpus: str | None,
    tokens: int,
    seq_len: int,
    batch_size: int,
    truth: str | None,
    json_out: str | None,
    quiet: bool,
) -> None:
    """Evaluate an SAE or transcoder: L0, FVU, dead latents, and CE loss with it spliced in.

    With --truth, compare its decoder with a known dictionary instead: MCC, precision, recall and
    F1 of feature detection, fraction recovered at cosine >= 0.9.
    """
    from mechscope.corpus import load_corpus
    from mechscope.sae import load_sae
    from mechscope.sae.splice import evaluate_sae

    if truth is not None:
        return _truth(load_sae(sae_dir), sae_dir, truth, json_out)
    text = load_corpus(corpus)
    hooked = load_model(model, quiet=quiet)
    sae = load_sae(sae_dir, model=hooked)
    split = "test" if corpus is None else "all"  # the built-in corpus has held-out documents
    result = evaluate_sae(
        hooked, sae, text, n_tokens=tokens, seq_len=seq_len, batch_size=batch_size, split=split,
        progress=not quiet,
    )  # fmt: skip
    payload = {"model": model, "sae": sae_dir, "corpus": text.name, **result.to_dict()}
    write_json(json_out, payload)
    click.echo(f"{sae.cfg.arch} SAE at {result.hook_name}, {result.n_tokens} tokens of {text.name}")
    for key, label in ROWS:
        click.echo(f"  {label:<34} {payload[key]:.4g}")


TRUTH_ROWS = (
    ("mcc", "MCC (Hungarian-matched |cosine|)"),
    ("precision", "precision (matched at cos >= t / latents)"),
    ("recall", "recall (matched at cos >= t / true)"),
    ("f1", "F1"),
    ("recovered", "recovered (best cos >= t)"),
    ("mean_max_cos", "mean best cosine"),
)


def _truth(sae: SAE, sae_dir: str, path: str, json_out: str | None) -> None:
    from mechscope.sae.truth import load_truth, score_dictionary

    scores = score_dictionary(load_truth(path, sae.cfg.width_out), sae.W_dec)
    payload = {"sae": sae_dir, "truth": path, **scores.to_dict()}
    write_json(json_out, payload)
    click.echo(
        f"{sae.cfg.arch} SAE, {scores.n_latents} latents against {scores.n_true} true features "
        f"(t = {scores.threshold})"
    )
    for key, label in TRUTH_ROWS:
        click.echo(f"  {label:<44} {payload[key]:.4g}")
