"""Train a SAELens SAE with SAELens's own trainer on planted synthetic data; score its recovery.

Runs in the SAELens venv (benchmarks/peers/setup_saelens.sh); it does not import mechscope. It reads
one safetensors file written by ``benchmarks/bench_sae_recovery.py``: ``x [n d_in]`` (inputs, already
at unit mean squared norm) and ``truth [n_true d_in]`` (the planted unit directions), and feeds
SAELens the rows in the order the mechscope run sees them (a permutation per epoch from
``torch.Generator().manual_seed(epoch)``, consecutive batches, the last partial batch dropped).

What runs is SAELens's training stack unchanged: ``TopKTrainingSAE`` / ``BatchTopKTrainingSAE``
(``--arch``) with SAELens's defaults for everything but ``d_in, d_sae, k`` (decoder init norm 0.1,
acts rescaled by the decoder norm, AuxK coefficient 1.0), ``normalize_activations="none"``, and
``SAETrainer(SAETrainerConfig(total_training_samples, train_batch_size_samples, lr, constant
schedule))`` (gradient clipping at 1.0, dead-feature window 1000 steps); wandb logging is off.

Prints one JSON line: the fraction of true directions whose best decoder row has cosine >= 0.9,
the mean best cosine, L0 and FVU of the trained SAE in inference mode on the whole data set, wall
seconds of ``fit()``, steps, versions.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import time
from collections.abc import Iterator

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

torch.set_num_threads(1)


def provider(x: torch.Tensor, batch_size: int, epochs: int) -> Iterator[torch.Tensor]:
    n = x.shape[0]
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
        for b in range(0, n - batch_size + 1, batch_size):
            yield x[perm[b : b + batch_size]]
    raise SystemExit("the provider ran out of batches")


def make_sae(arch: str, d_in: int, d_sae: int, k: int, device: str):
    common = {"d_in": d_in, "d_sae": d_sae, "k": k, "dtype": "float32", "device": device}
    if arch == "topk":
        from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

        return TopKTrainingSAE(TopKTrainingSAEConfig(normalize_activations="none", **common))
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig

    return BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(normalize_activations="none", **common))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="safetensors file with x and truth")
    parser.add_argument("--arch", choices=("topk", "batchtopk"), default="topk")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--d-sae", type=int, default=384)
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the caller's device)")
    args = parser.parse_args()

    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    data = load_file(args.data)
    x, truth = data["x"].float().to(args.device), data["truth"].float().to(args.device)
    steps = args.epochs * (x.shape[0] // args.batch_size)
    torch.manual_seed(args.seed)
    sae = make_sae(args.arch, x.shape[1], args.d_sae, args.k, args.device)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * args.batch_size,
        train_batch_size_samples=args.batch_size,
        lr=args.lr,
        lr_end=args.lr / 10,
        lr_scheduler_name="constant",
        device=args.device,
    )
    trainer = SAETrainer(trainer_cfg, sae, provider(x, args.batch_size, args.epochs + 1))
    wall = time.perf_counter()
    trainer.fit()
    wall = time.perf_counter() - wall

    sae.eval()
    with torch.no_grad():
        if args.arch == "batchtopk":  # inference as SAELens saves it: a JumpReLU at the threshold
            hidden = sae.encode_with_hidden_pre(x)[1]  # pre-activations (x decoder norms)
            acts = hidden * (hidden > float(sae.topk_threshold))
            x_hat = sae.decode(acts)
        else:
            acts = sae.encode(x)
            x_hat = sae.decode(acts)
    dec = sae.W_dec.detach() / sae.W_dec.detach().norm(dim=1, keepdim=True)
    best = (truth @ dec.T).max(dim=1).values
    out = {
        "arch": args.arch,
        "recovered": float((best >= 0.9).float().mean()),
        "mean_max_cos": float(best.mean()),
        "l0": float((acts > 0).sum(-1).float().mean()),
        "fvu": float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()),
        "wall_s": wall,
        "steps": trainer.n_training_steps,
        "versions": {p: md.version(p) for p in ("sae-lens", "torch")},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
