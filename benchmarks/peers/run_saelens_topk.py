"""Train SAELens's TopK SAE with SAELens's own trainer on a mechscope activation store.

Runs in the SAELens venv (benchmarks/peers/setup_saelens.sh); it does not import mechscope. It reads
the store's ``manifest.json`` and safetensors shards itself, and feeds SAELens exactly the rows
``benchmarks/bench_harvest.py sae`` feeds mechscope: the first site, multiplied by the store's norm
scale (unit mean squared norm; SAELens's ``normalize_activations="none"``, so both SAEs see the same
numbers), shards in manifest order without the last one (held out), consecutive rows in batches.

What runs is SAELens's training stack unchanged: ``TopKTrainingSAE(TopKTrainingSAEConfig(d_in,
d_sae, k, ...))`` with SAELens's defaults for everything else (decoder init norm 0.1, acts rescaled
by the decoder norm, AuxK coefficient 1.0, dense activations), and ``SAETrainer(SAETrainerConfig(
total_training_samples, train_batch_size_samples, lr, constant schedule, Adam betas 0.9/0.999),
sae, data_provider)``. ``SAETrainer.fit()`` does the dead-latent bookkeeping, gradient-norm clipping
at 1.0, the Adam step and the schedulers, as in a SAELens training run; wandb logging is off.

Prints one JSON line: wall and CPU seconds of ``fit()``, steps, final FVU on the held-out shard
(``sum ||x - x_hat||^2 / sum ||x - mean x||^2``), the device (``--device cpu|cuda``: the SAE and
the trainer run there, and ``fit()`` is timed between ``torch.cuda.synchronize`` calls on a GPU)
and the versions used.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

torch.set_num_threads(1)


def rows(folder: Path, shard: dict, site: str, scale: float) -> torch.Tensor:
    return load_file(str(folder / shard["file"]))[site].float() * scale


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def provider(folder: Path, manifest: dict, batch_size: int) -> Iterator[torch.Tensor]:
    site = manifest["config"]["sites"][0]
    scale = manifest["norm_scales"][site]
    for shard in manifest["shards"][:-1]:
        x = rows(folder, shard, site, scale)
        for b in range(0, x.shape[0] - batch_size + 1, batch_size):
            yield x[b : b + batch_size]
    raise SystemExit("the store has fewer training rows than --steps x --batch-size")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--acts", required=True, help="mechscope activation store folder")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--expansion", type=int, default=16)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--sparse", action="store_true", help="use_sparse_activations=True")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--sqrt-d-in",
        action="store_true",
        help="scale inputs to mean squared norm d_in (SAELens's expected_average_only_in "
        "convention) instead of 1; FVU is scale-free, so the figures stay comparable",
    )
    args = parser.parse_args()

    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    folder = Path(args.acts)
    manifest = json.loads((folder / "manifest.json").read_text())
    d_in = manifest["d_in"]
    if args.sqrt_d_in:
        manifest["norm_scales"] = {k: v * d_in**0.5 for k, v in manifest["norm_scales"].items()}
    cfg = TopKTrainingSAEConfig(
        d_in=d_in,
        d_sae=args.expansion * d_in,
        k=args.k,
        dtype="float32",
        device=args.device,
        normalize_activations="none",
        use_sparse_activations=args.sparse,
    )
    torch.manual_seed(0)
    sae = TopKTrainingSAE(cfg)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=args.steps * args.batch_size,
        train_batch_size_samples=args.batch_size,
        lr=args.lr,
        lr_end=args.lr / 10,  # what LanguageModelSAERunnerConfig sets (unused by "constant")
        lr_scheduler_name="constant",
        device=args.device,
    )
    batches = (x.to(args.device) for x in provider(folder, manifest, args.batch_size))
    trainer = SAETrainer(trainer_cfg, sae, batches)
    sync(args.device)
    wall, cpu = time.perf_counter(), time.process_time()
    trainer.fit()
    sync(args.device)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu

    site = manifest["config"]["sites"][0]
    x = rows(folder, manifest["shards"][-1], site, manifest["norm_scales"][site]).to(args.device)
    sae.eval()
    with torch.no_grad():
        x_hat = sae(x)
    fvu = float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    versions = {p: md.version(p) for p in ("sae-lens", "torch")}
    out = {"wall_s": wall, "cpu_s": cpu, "fvu": fvu, "steps": trainer.n_training_steps}
    out["device"] = args.device
    print(
        json.dumps(
            {**out, "sparse": args.sparse, "sqrt_d_in": args.sqrt_d_in, "versions": versions}
        )
    )


if __name__ == "__main__":
    main()
