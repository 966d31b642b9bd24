"""``mechscope sae``: train sparse autoencoders and transcoders on a harvested activation store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mechscope.cli.common import quiet_option

ARCHS = ("relu", "topk", "batchtopk", "jumprelu", "matryoshka")


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
    help="Target L0, active latents per token (relu/jumprelu: reached by adapting their "
    "coefficient unless --l1/--l0 fixes it).",
)
@click.option(
    "--expansion",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="d_sae = expansion * d_in.",
)
@click.option("--lr", type=float, default=4e-4, show_default=True)
@click.option(
    "--tokens",
    type=click.IntRange(min=1),
    default=None,
    help="Training tokens (default: the whole store once).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=4096, show_default=True)
@click.option(
    "--l1",
    "l1_coefficient",
    type=float,
    default=None,
    help="Fixed L1 coefficient (relu; turns off the adaptation to --k).",
)
@click.option(
    "--l0",
    "l0_coefficient",
    type=float,
    default=None,
    help="Fixed L0 coefficient (jumprelu; turns off the adaptation to --k).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
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
@click.option(
    "--overwrite", is_flag=True, help="Replace the run or files in --out (other files stay)."
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
    overwrite: bool,
    quiet: bool,
) -> None:
    """Train an SAE (one site) or a transcoder (two sites: input, output) and save it to OUT.

    A rerun of the same command after a crash resumes from OUT/checkpoints; OUT is locked while
    the run writes it.
    """
    from mechscope.activations import ActivationStore
    from mechscope.cli.sae_out import run_options
    from mechscope.errors import MechscopeError
    from mechscope.sae import SAE, SAEConfig, TrainConfig

    store = ActivationStore.open(acts)
    m = store.manifest
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
        k=k,
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
        checkpoint_every=checkpoint_every,  # dead window: the trainer's, per architecture
        log_every=max(1, min(50, steps // 20)),
    )  # fmt: skip
    model = SAE(cfg, seed=seed)
    batches = store.batches(batch_size, seed=seed, shuffle=True, loop=True, drop_last=True)
    settings = run_options(click.get_current_context(), m.content_id)
    settings["--tokens"] = tokens  # the count the default stands for: the same run either way
    folder = Path(out)
    result = _train_into(folder, settings, overwrite, quiet, model, batches, train_cfg)
    if result is None:
        return
    click.echo(
        f"{arch} SAE, d_in {cfg.d_in} -> d_sae {cfg.d_sae}, {result.tokens} tokens of {acts}"
    )
    click.echo(
        f"fvu {result.fvu:.4f}   L0 {result.l0:.1f}   dead {result.dead_fraction:.1%}   saved to {folder}"
    )


def _train_into(
    folder: Path,
    settings: dict[str, Any],
    overwrite: bool,
    quiet: bool,
    model: Any,
    batches: Any,
    train_cfg: Any,
) -> Any:
    """Train and save into ``folder`` under its lock (see :mod:`mechscope.cli.sae_out`); None when
    it already holds this run, finished. Under torchrun every rank trains its slice of each batch
    (:mod:`mechscope.distributed.sae`) and rank 0 alone holds the folder and writes it."""
    from mechscope.cli.sae_out import CHECKPOINTS, prepare_out, write_record
    from mechscope.distributed import fit, from_main, init, is_main
    from mechscope.files import folder_lock
    from mechscope.sae import save_sae
    from mechscope.sae.checkpoint import clear_checkpoints

    if init() and not is_main():  # the other ranks follow rank 0's decision and train
        if from_main(None) != "done":
            fit(model, batches, train_cfg, checkpoint_dir=folder / CHECKPOINTS, progress=False)
        return None
    with folder_lock(folder, "mechscope sae train"):
        if from_main(lambda: prepare_out(folder, settings, overwrite)) == "done":
            click.echo(f"{folder} already holds this SAE (same settings); --overwrite trains again")
            return None
        _note_resume(folder / CHECKPOINTS, quiet)
        write_record(folder, settings, None)
        result = fit(
            model, batches, train_cfg, checkpoint_dir=folder / CHECKPOINTS, progress=not quiet
        )
        save_sae(model, folder)
        summary = {"steps": result.steps, "tokens": result.tokens, "fvu": result.fvu}
        summary.update(l0=result.l0, dead_fraction=result.dead_fraction)
        if result.coefficient is not None:  # the sparsity coefficient relu/jumprelu adapted to --k
            summary["sparsity_coefficient"] = result.coefficient
        summary["history"] = result.history
        write_record(folder, settings, summary)
        clear_checkpoints(folder / CHECKPOINTS)
    return result


def _note_resume(checkpoints: Path, quiet: bool) -> None:
    from mechscope.sae.checkpoint import latest_checkpoint

    found = latest_checkpoint(checkpoints)
    if found is not None and not quiet:
        click.echo(f"resuming from {found[0]} (step {found[1]['step']})", err=True)
