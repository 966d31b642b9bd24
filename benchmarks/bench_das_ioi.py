"""DAS on the built-in model: the IOI name-mover variable (which of the two names is the
indirect object) at the last position, against a random subspace and a site that cannot hold it.

    python benchmarks/bench_das_ioi.py [--n 256] [--k 1,4,16,64] [--steps 200] [--json OUT]

Pairs: ``ioi-swap`` prompts (base "A and B ... B gave it to" -> A; source "... A gave it to" ->
B): the two prompts hold the same names and differ only in which one is repeated, so the
high-level variable "the indirect object is the first / second name" is all that differs, and an
interchange of it must make the base say the source's answer (B). The base never says B on its
own, so an intervention that does nothing scores IIA 0.

1. the full-vector swap of the last position's residual entering each of ``--scan`` layers: the
   ceiling of any subspace there, and where the variable has reached the last position;
2. for each ``k`` of ``--k``: DAS at ``--site-layer`` (default: the first scanned layer whose full
   swap reaches 0.8), a random ``k``-dimensional subspace there, and the fixed ``k``-dimensional
   basis of the top principal directions of the training pairs' source - base differences at the
   site (``--pca``; no training: how much of the variable the largest directions of change hold);
3. DAS at ``--control-layer`` (a layer whose full swap is near 0: the variable has not arrived,
   so no subspace should hold it), for each k (``--control-layer -1`` skips it).

IIA on the held-out pairs with 95% bootstrap intervals; trained bases are cached under
``--cache`` (keyed by layer, k, steps, batch, lr, n, seed) and reused.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mechscope  # noqa: E402
from machine import add_device_option, device_label, machine, pick_device  # noqa: E402
from mechscope.causal import DASConfig, from_task, train_das  # noqa: E402
from mechscope.causal.das import iia  # noqa: E402
from mechscope.causal.subspace import random_basis  # noqa: E402
from mechscope.stats import bootstrap_ci  # noqa: E402
from mechscope.tasks import load_task  # noqa: E402


def summary(correct: torch.Tensor) -> dict:
    lo, hi = bootstrap_ci(correct.float())
    return {"iia": float(correct.float().mean()), "ci": [float(lo), float(hi)], "n": len(correct)}


def show(name: str, s: dict) -> None:
    print(f"  {name:52s} IIA {s['iia']:.3f} [{s['ci'][0]:.3f}, {s['ci'][1]:.3f}]", flush=True)


def diff_pca(model, train, layer: int, k: int) -> torch.Tensor:
    """``[d k]``: top principal directions (uncentred) of the training pairs' source - base
    residual differences at the last position entering ``layer``."""
    site = f"blocks.{layer}.hook_resid_pre"
    pos = train.read_pos[:, None]
    with torch.no_grad():
        _, base = model.run_with_cache(train.base, [site], stop_at_layer=layer + 1)
        _, source = model.run_with_cache(train.source, [site], stop_at_layer=layer + 1)
    rows = torch.arange(len(train))[:, None]
    diff = (source[site][rows, pos] - base[site][rows, pos]).reshape(len(train), -1)
    _, _, v = torch.linalg.svd(diff.double(), full_matrices=False)
    return v[:k].T.float().contiguous()


def trained(model, train, test, layer: int, k: int, args) -> dict:
    """DAS at the residual entering ``layer``, last position; the basis cached."""
    site = f"blocks.{layer}.hook_resid_pre"
    key = (f"das_ioi_L{layer}_k{k}_s{args.steps}_b{args.batch}_lr{args.lr:g}_n{args.n}"
           f"_seed{args.seed}.pt")  # fmt: skip
    path = Path(args.cache) / key
    if path.is_file():
        basis = torch.load(path)
        s = summary(iia(model, test, site, "last", basis))
        return {**s, "site": site, "k": k, "cached": str(path)}
    config = DASConfig(k=k, steps=args.steps, batch_size=args.batch, lr=args.lr, seed=args.seed)
    res = train_das(model, train, test, site, "last", config)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(res.basis, path)
    every = max(1, len(res.losses) // 10)
    curve = [sum(res.losses[i : i + every]) / len(res.losses[i : i + every])
             for i in range(0, len(res.losses), every)]  # fmt: skip
    return {**summary(res.test_correct), "site": site, "k": k, "train_iia": res.train_iia,
            "loss_curve": curve, "fit_cpu_seconds": res.fit_cpu_seconds,
            "cached": str(path)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", default="1,4,16,64", help="subspace sizes, comma-separated")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-2)
    parser.add_argument("--pca", action="store_true", help="also the fixed top-k difference PCA")
    parser.add_argument("--scan", default="12,16,20,22,24,26,28")
    parser.add_argument("--site-layer", type=int, default=None)
    parser.add_argument("--control-layer", type=int, default=None)
    parser.add_argument("--control-k", default=None, help="k values to train at the control layer "
                        "(default: every --k)")  # fmt: skip
    parser.add_argument("--cache", default="/work/cache/causal")
    parser.add_argument("--json")
    add_device_option(parser)
    args = parser.parse_args()
    device = pick_device(args.device)
    if device.type != "cpu":
        raise SystemExit("error: this benchmark runs on the CPU only for now; use --device cpu")
    torch.set_num_threads(1)
    print(f"device {device_label(device)}", machine(device))
    model = mechscope.load("smollm2-135m", progress=False)
    pairs = from_task(load_task("ioi-swap", model, n=args.n, seed=args.seed), model)
    train, test = pairs.split(0.25, args.seed)
    ks = [int(v) for v in args.k.split(",")]
    out: dict = {"machine": machine(device), "n_train": len(train), "n_test": len(test),
                 "k": ks, "steps": args.steps, "lr": args.lr, "batch": args.batch,
                 "full_swap": {}}  # fmt: skip
    print(f"{len(train)} training, {len(test)} held-out pairs; unintervened IIA "
          f"{float((test.base_label == test.label).float().mean()):.3f}")  # fmt: skip
    cpu = time.process_time()
    for layer in [int(v) for v in args.scan.split(",")] if args.scan else []:
        s = summary(iia(model, test, f"blocks.{layer}.hook_resid_pre", "last", None))
        out["full_swap"][layer] = s
        show(f"full swap, residual entering layer {layer}, last position", s)
    out["scan_cpu_seconds"] = time.process_time() - cpu
    full = out["full_swap"]
    site = args.site_layer
    if site is None and not full:
        raise SystemExit("error: give --scan layers or --site-layer")
    if site is None:
        site = next((lay for lay, s in full.items() if s["iia"] >= 0.8), max(full))
    control = args.control_layer
    if control is None and not full:
        control = -1
    if control is None:
        control = min(full, key=lambda lay: (full[lay]["iia"], lay))
    out["site_layer"], out["control_layer"] = site, control
    d = model.dims.d_model

    def save() -> None:  # a stopped run keeps what it measured
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1))

    for k in ks:
        row: dict = {}
        out[f"k{k}"] = row
        row["random"] = summary(iia(model, test, f"blocks.{site}.hook_resid_pre", "last",
                                    random_basis(d, k, 1)))  # fmt: skip
        show(f"random {k}-d subspace, residual entering layer {site}", row["random"])
        if args.pca:
            row["pca"] = summary(iia(model, test, f"blocks.{site}.hook_resid_pre", "last",
                                     diff_pca(model, train, site, k)))  # fmt: skip
            show(f"top-{k} difference PCA (fixed), entering layer {site}", row["pca"])
        at_control = control >= 0 and (
            args.control_k is None or str(k) in args.control_k.split(",")
        )
        runs = [("das", site)] + ([("das_control", control)] if at_control else [])
        for name, layer in runs:
            start = time.process_time()
            row[name] = trained(model, train, test, layer, k, args)
            row[name]["cpu_seconds"] = time.process_time() - start
            show(f"DAS k={k}, residual entering layer {layer} ({name})", row[name])
            save()
        save()


if __name__ == "__main__":
    main()
