"""``mechscope sae``: train sparse autoencoders and transcoders on a harvested activation store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click

from mechscope.cli.common import quiet_option

ARCHS = ("relu", "topk", "batchtopk", "jumprelu")


@click.group("sae")
def sae() -> None:
    """Sparse autoencoders: train (and evaluate) on activations from `mechscope harvest`."""


from mechscope.cli.sae_eval import sae_eval  # noqa: E402

sae.add_command(sae_eval)


@sae.command("train")
@click.option(
    "--acts", required=True, type=click.Path(), help="Activation store from `mechscope harvest`."
)
@click.option("--arch", type=click.Choice(ARCHS), default="topk", show_default=True)
@click.option(
    "--k",
    type=int,
    default=32,
    show_default=True,
    help="Active latents per token (topk, batchtopk).",
)
@click.option(
    "--expansion", type=int, default=16, show_default=True, help="d_sae = expansion * d_in."
)
@click.option("--lr", type=float, default=4e-4, show_default=True)
@click.option(
    "--tokens", type=int, default=None, help="Training tokens (default: the whole store once)."
)
@click.option("--batch-size", type=int, default=4096, show_default=True)
@click.option("--l1", "l1_coefficient", type=float, default=None, help="L1 coefficient (relu).")
@click.option("--l0", "l0_coefficient", type=float, default=None, help="L0 coefficient (jumprelu).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--checkpoint-every",
    type=int,
    default=500,
    show_default=True,
    help="Steps between checkpoints.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for the SAE (SAELens layout).",
)
@quiet_option
def train(
    acts: str,
    arch: str,
    k: int,
    expansion: int,
    lr: float,
    tokens: int | None,
    batch_size: int,
    l1_coefficient: float | None,
    l0_coefficient: float | None,
    seed: int,
    checkpoint_every: int,
    out: str,
    quiet: bool,
) -> None:
    """Train an SAE (one site) or a transcoder (two sites: input, output) and save it to OUT.

    A rerun of the same command after a crash resumes from OUT/checkpoints.
    """
    from mechscope.activations import ActivationStore
    from mechscope.errors import MechscopeError
    from mechscope.sae import SAE, SAEConfig, TrainConfig, fit, save_sae

    store = ActivationStore.open(acts)
    m = store.manifest
    if expansion < 1:
        raise MechscopeError(f"--expansion must be a positive integer, got {expansion}")
    tokens = tokens if tokens is not None else m.n_tokens
    if tokens < batch_size:
        raise MechscopeError(
            f"--tokens {tokens} is less than one batch of {batch_size}: lower --batch-size"
        )
    extra = {
        k_: v
        for k_, v in (("l1_coefficient", l1_coefficient), ("l0_coefficient", l0_coefficient))
        if v is not None
    }
    cfg = SAEConfig(
        arch=arch,
        d_in=m.d_in,
        d_sae=expansion * m.d_in,
        hook_name=m.sites[0],
        out_hook_name=m.sites[1] if len(m.sites) > 1 else None,
        d_out=m.d_out,
        k=k if arch in ("topk", "batchtopk") else None,
        normalize_scale=m.norm_scale,
        model_name=str(m.config.get("model")),
        dataset=str(m.config.get("corpus")),
        include_first=m.include_first,
        **extra,
    )
    steps = tokens // batch_size
    train_cfg = TrainConfig(
        steps=steps, batch_size=batch_size, lr=lr, warmup_steps=max(1, steps // 100), seed=seed,
        sparsity_warmup_steps=steps // 20 if arch in ("relu", "jumprelu") else 0,
        dead_window_tokens=min(1_000_000, max(batch_size, tokens // 4)), checkpoint_every=checkpoint_every,
        log_every=max(1, min(50, steps // 20)),
    )  # fmt: skip
    model = SAE(cfg, seed=seed)
    batches = store.batches(batch_size, seed=seed, shuffle=True, loop=True, drop_last=True)
    folder = Path(out)
    result = fit(
        model, batches, train_cfg, checkpoint_dir=folder / "checkpoints", progress=not quiet
    )
    save_sae(model, folder)
    summary = {"steps": result.steps, "tokens": result.tokens, "fvu": result.fvu, "l0": result.l0}
    summary["dead_fraction"] = result.dead_fraction
    (folder / "training.json").write_text(
        json.dumps({**summary, "history": result.history}, indent=1)
    )
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    click.echo(
        f"{arch} SAE, d_in {cfg.d_in} -> d_sae {cfg.d_sae}, {result.tokens} tokens of {acts}"
    )
    click.echo(
        f"fvu {result.fvu:.4f}   L0 {result.l0:.1f}   dead {result.dead_fraction:.1%}   saved to {folder}"
    )
