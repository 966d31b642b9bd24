"""DAS on the built-in model: the IOI name-mover variable (which of the two names is the
indirect object) at the last position, against a random subspace and a site that cannot hold it.

    python benchmarks/bench_das_ioi.py [--n 128] [--k 1] [--steps 100] [--json OUT]

Pairs: ``ioi-swap`` prompts (base "A and B ... B gave it to" -> A; source "... A gave it to" ->
B): the two prompts hold the same names and differ only in which one is repeated, so the
high-level variable "the indirect object is the first / second name" is all that differs, and an
interchange of it must make the base say the source's answer (B). The base never says B on its
own, so an intervention that does nothing scores IIA 0.

1. the full-vector swap of the last position's residual entering each of ``--scan`` layers: the
   ceiling of any subspace there, and where the variable has reached the last position;
2. DAS (``k`` dimensions) at ``--site-layer`` (default: the first scanned layer whose full swap
   reaches 0.8) and at ``--control-layer`` (a layer whose full swap is near 0: the variable has
   not arrived, so no subspace should hold it), the same steps and pairs (``--control-layer -1``
   skips it: the full swap there already bounds every subspace);
3. a random ``k``-dimensional subspace at the DAS site.

IIA on the held-out pairs with 95% bootstrap intervals; trained bases are cached under
``--cache`` (keyed by layer, k, steps, n, seed) and reused.
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


def trained(model, train, test, layer: int, args) -> dict:
    """DAS at the residual entering ``layer``, last position; the basis cached."""
    site = f"blocks.{layer}.hook_resid_pre"
    key = f"das_ioi_L{layer}_k{args.k}_s{args.steps}_b{args.batch}_n{args.n}_seed{args.seed}.pt"
    path = Path(args.cache) / key
    if path.is_file():
        basis = torch.load(path)
        s = summary(iia(model, test, site, "last", basis))
        return {**s, "site": site, "cached": str(path)}
    config = DASConfig(k=args.k, steps=args.steps, batch_size=args.batch, lr=args.lr,
                       seed=args.seed)  # fmt: skip
    res = train_das(model, train, test, site, "last", config)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(res.basis, path)
    return {**summary(res.test_correct), "site": site, "train_iia": res.train_iia,
            "loss_first": res.losses[0], "loss_last": res.losses[-1],
            "fit_cpu_seconds": res.fit_cpu_seconds, "cached": str(path)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=1)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--scan", default="12,16,20,22,24,26,28")
    parser.add_argument("--site-layer", type=int, default=None)
    parser.add_argument("--control-layer", type=int, default=None)
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
    out: dict = {"machine": machine(device), "n_train": len(train), "n_test": len(test),
                 "k": args.k, "steps": args.steps, "full_swap": {}}  # fmt: skip
    print(f"{len(train)} training, {len(test)} held-out pairs; unintervened IIA "
          f"{float((test.base_label == test.label).float().mean()):.3f}")  # fmt: skip
    cpu = time.process_time()
    for layer in [int(v) for v in args.scan.split(",")]:
        s = summary(iia(model, test, f"blocks.{layer}.hook_resid_pre", "last", None))
        out["full_swap"][layer] = s
        show(f"full swap, residual entering layer {layer}, last position", s)
    out["scan_cpu_seconds"] = time.process_time() - cpu
    full = out["full_swap"]
    site = args.site_layer
    if site is None:
        site = next((lay for lay, s in full.items() if s["iia"] >= 0.8), max(full))
    control = args.control_layer
    if control is None:
        control = min(full, key=lambda lay: (full[lay]["iia"], lay))
    runs = [("das", site)] + ([("das_control", control)] if control >= 0 else [])
    for name, layer in runs:
        start = time.process_time()
        out[name] = trained(model, train, test, layer, args)
        out[name]["cpu_seconds"] = time.process_time() - start
        show(f"DAS k={args.k}, residual entering layer {layer} ({name})", out[name])
        if args.json:  # a stopped run keeps what it measured
            Path(args.json).write_text(json.dumps(out, indent=1))
    d = model.dims.d_model
    out["random"] = summary(
        iia(model, test, f"blocks.{site}.hook_resid_pre", "last", random_basis(d, args.k, 1))
    )
    show(f"random {args.k}-d subspace, residual entering layer {site}", out["random"])
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
