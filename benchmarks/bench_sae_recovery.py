"""Every SAE architecture, on its defaults, against a planted dictionary, beside SAELens's TopK.

The setting of issue 12: 48-d inputs made of 192 random unit directions, each on with probability
4/192 (about 4 per sample) with a coefficient in [0.5, 1.5], plus noise 0.01, 200k samples scaled to
unit mean squared norm (``normalize_scale`` recorded as a harvested store records it); d_sae 384,
target L0 ``k = 4``, lr 4e-3, 8 epochs (a fresh permutation per epoch), everything else at its
default. Each mechscope architecture is trained with ``fit``; SAELens's TopK (and BatchTopK) with
SAELens's own trainer (``benchmarks/peers/run_saelens_synthetic.py`` in its venv, given with
``--peer-python``) on the same rows in the same order. Scores (:mod:`mechscope.sae.truth`):
fraction of true directions recovered at cosine >= 0.9, MCC, F1 of feature detection; L0 and FVU
of the trained SAE in inference mode on all 200k samples.

    python benchmarks/bench_sae_recovery.py --peer-python /work/peers/venv-saelens/bin/python
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from machine import add_device_option, device_label, pick_device, sync
from mechscope.sae import ARCHITECTURES, SAE, SAEConfig, TrainConfig, fit, score_dictionary

PEER = Path(__file__).parent / "peers" / "run_saelens_synthetic.py"


def planted(n: int, n_true: int, d: int, active: float, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """``(x [n d], truth [n_true d])``: sparse non-negative mixes of random unit directions."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.randn(n_true, d, generator=g)
    truth = truth / truth.norm(dim=1, keepdim=True)
    on = torch.rand(n, n_true, generator=g) < active / n_true
    codes = on * (0.5 + torch.rand(n, n_true, generator=g))
    x = codes @ truth + 0.01 * torch.randn(n, d, generator=g)
    return x * x.pow(2).sum(-1).mean().rsqrt(), truth  # unit mean squared norm


def epochs(x: torch.Tensor, batch_size: int, n: int):
    for epoch in range(n):
        perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(epoch))
        for b in range(0, x.shape[0] - batch_size + 1, batch_size):
            yield x[perm[b : b + batch_size]]


def ours(arch: str, x: torch.Tensor, truth: torch.Tensor, args: argparse.Namespace) -> dict:
    scale = float(x.pow(2).sum(-1).mean().rsqrt())
    cfg = SAEConfig(arch=arch, d_in=x.shape[1], d_sae=args.d_sae, k=args.k, normalize_scale=scale)
    sae = SAE(cfg).to(args.device)
    x, truth = x.to(args.device), truth.to(args.device)
    train_cfg = TrainConfig(
        steps=args.epochs * (x.shape[0] // args.batch_size), lr=args.lr, batch_size=args.batch_size
    )
    sync(args.device)
    wall = time.perf_counter()
    result = fit(sae, epochs(x, args.batch_size, args.epochs), train_cfg, progress=False)
    sync(args.device)
    wall = time.perf_counter() - wall
    with torch.no_grad():
        latents = sae.encode(x)
        fvu = (x - sae.decode(latents)).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    scores = score_dictionary(truth, sae.W_dec)
    return {
        "who": "mechscope", "arch": arch, "recovered": scores.recovered, "mcc": scores.mcc,
        "f1": scores.f1, "l0": float((latents > 0).sum(-1).float().mean()), "fvu": float(fvu),
        "coefficient": result.coefficient, "wall_s": wall, "steps": result.steps,
    }  # fmt: skip


def theirs(arch: str, data: Path, truth: torch.Tensor, args: argparse.Namespace) -> dict:
    cmd = [args.peer_python, str(PEER), "--data", str(data), "--arch", arch, "--k", str(args.k),
           "--d-sae", str(args.d_sae), "--lr", str(args.lr), "--batch-size", str(args.batch_size),
           "--epochs", str(args.epochs), "--device", args.device.type]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"SAELens runner failed ({out.returncode}): {out.stderr[-2000:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    return {"who": f"SAELens {row['versions']['sae-lens']}", "coefficient": None, "mcc": None,
            "f1": None, **row}  # fmt: skip


def table(rows: list[dict], args: argparse.Namespace) -> str:
    head = (
        f"{datetime.date.today()}, {device_label(args.device)}, one thread per run; "
        f"{args.n} samples, 48-d, 192 true directions, ~4 active, d_sae {args.d_sae}, k {args.k}, "
        f"lr {args.lr}, batch {args.batch_size}, {args.epochs} epochs"
    )
    lines = [head, "", "| library | arch | recovered (cos >= 0.9) | MCC | F1 | L0 | FVU | final coefficient | steps | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for r in rows:
        lines.append(
            f"| {r['who']} | {r['arch']} | {r['recovered']:.1%} | {fmt(r['mcc'], '.3f')} | "
            f"{fmt(r['f1'], '.3f')} | {r['l0']:.2f} | {r['fvu']:.3f} | "
            f"{fmt(r['coefficient'], '.3g')} | {r['steps']} | {r['wall_s']:.0f} |"
        )
    peer = next((r for r in rows if r["who"].startswith("SAELens") and r["arch"] == "topk"), None)
    if peer is not None:
        lines.append("")
        for r in rows:
            if r["who"] == "mechscope":
                ratio = r["recovered"] / max(peer["recovered"], 1e-9)
                lines.append(
                    f"- mechscope {r['arch']}: recovered / SAELens TopK's = {ratio:.3f}; "
                    f"|L0 - k| / k = {abs(r['l0'] - args.k) / args.k:.1%}"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--d-sae", type=int, default=384)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--archs", default=",".join(sorted(ARCHITECTURES)))
    parser.add_argument("--peer-python", default=None, help="python of the SAELens venv")
    parser.add_argument("--peer-archs", default="topk,batchtopk")
    add_device_option(parser)
    args = parser.parse_args()
    args.device = pick_device(args.device)
    torch.set_num_threads(1)
    x, truth = planted(args.n, 192, 48, 4.0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "planted.safetensors"
        save_file({"x": x.contiguous(), "truth": truth.contiguous()}, str(data))
        if args.peer_python:  # the peer first, then mechscope in this process (never at once)
            rows += [theirs(a, data, truth, args) for a in args.peer_archs.split(",")]
    rows = [ours(a, x, truth, args) for a in args.archs.split(",")] + rows
    print(table(rows, args))


if __name__ == "__main__":
    main()
