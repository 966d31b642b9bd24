"""What caching the residual stream costs: mechscope against bare HF and TransformerLens.

On the built-in SmolLM2-135M, for one batch of random token ids (fixed seed), it times under
``torch.inference_mode()``:

- ``bare HF``: a plain HF copy of the model with its default (SDPA) attention;
- ``mechscope forward``: the wrapped model with no hooks;
- ``mechscope cache``: ``run_with_cache`` of every residual and attention/MLP-output site
  (``blocks.*.hook_resid_pre|resid_mid|resid_post|attn_out|mlp_out``, 150 sites);
- ``bridge cache``: TransformerLens's ``TransformerBridge.run_with_cache`` of the same names.

Each model is its own deep copy of one load. After warm-up, every round runs each variant once,
in a shuffled order, so that load from other processes falls on all of them alike; the table
gives medians over rounds of the wall-clock time and of the process CPU time, and ratios of
medians. On a shared machine, CPU time with ``--threads 1`` is the steady figure: it does not count
time spent waiting for a core (with 2+ threads it does count OpenMP's spin-waiting). Every
variant runs on ``--device`` (auto: cuda when available), timed between
``torch.cuda.synchronize`` calls on a GPU (where wall time is the figure).

    python benchmarks/bench_cache_overhead.py --batch 8 --seq 128 --repeats 7 --markdown
"""

from __future__ import annotations

import argparse
import copy
import datetime
import fnmatch
import importlib.metadata
import os
import platform
import random
import statistics
import sys
from collections.abc import Callable
from typing import Any

import torch

import mechscope
from machine import add_device_option, cpu_name, device_label, pick_device, timed
from mechscope.models.loading import load_hf

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
PATTERNS = [
    "blocks.*.hook_resid_pre",
    "blocks.*.hook_resid_mid",
    "blocks.*.hook_resid_post",
    "blocks.*.hook_attn_out",
    "blocks.*.hook_mlp_out",
]
GOAL = 1.15  # mechscope cache / bare HF


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--repeats", type=int, default=7, help="timed rounds (default 7)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--no-bridge", action="store_true", help="skip TransformerLens")
    p.add_argument("--quiet", action="store_true", help="print only the results")
    p.add_argument("--markdown", action="store_true", help="also print a block for the docs")
    add_device_option(p)
    args = p.parse_args(argv)
    args.device = pick_device(args.device)
    return args


def machine(device: torch.device) -> dict[str, str]:
    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {
        "device": device_label(device),
        "cpu": cpu_name(),
        "cores": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": version("transformers"),
        "transformer-lens": version("transformer-lens"),
        "mechscope": mechscope.__version__,
        "load average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def build(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Callable[[], Any]]:
    """The variants to time, each a no-argument callable running one forward."""
    loaded, tokenizer, _ = load_hf("smollm2-135m", device=args.device, progress=False)
    # every variant gets a deep copy, so all weights live in the same kind of memory
    hf = copy.deepcopy(loaded)
    hooked = mechscope.HookedModel(copy.deepcopy(loaded), tokenizer)
    names = [n for n in hooked.sites if any(fnmatch.fnmatch(n, p) for p in PATTERNS)]
    log(f"{len(names)} sites to cache")
    gen = torch.Generator().manual_seed(args.seed)
    tokens = torch.randint(0, hooked.dims.d_vocab, (args.batch, args.seq), generator=gen)
    tokens = tokens.to(args.device)
    variants: dict[str, Callable[[], Any]] = {
        "bare HF": lambda: hf(input_ids=tokens, use_cache=False).logits,
        "mechscope forward": lambda: hooked(tokens),
        "mechscope cache": lambda: hooked.run_with_cache(tokens, names=names),
    }
    if not args.no_bridge:
        from transformer_lens.model_bridge import TransformerBridge

        bridge = TransformerBridge.boot_transformers(
            HUB_ID, hf_model=copy.deepcopy(loaded), tokenizer=tokenizer, device=args.device
        )
        variants["bridge cache"] = lambda: bridge.run_with_cache(tokens, names_filter=names)
        with torch.inference_mode():
            _, cache = variants["bridge cache"]()
        missing = set(names) - set(cache)
        if missing:
            raise SystemExit(f"the bridge did not cache {sorted(missing)[:3]}")
    return variants


def measure(
    variants: dict[str, Callable[[], Any]], args: argparse.Namespace, log: Callable[[str], None]
) -> dict[str, dict[str, list[float]]]:
    """Wall-clock and process CPU seconds per forward for each variant, one per timed round."""
    times: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": []} for k in variants}
    order = list(variants)
    rng = random.Random(args.seed)
    with torch.inference_mode():
        for r in range(args.warmup + args.repeats):
            rng.shuffle(order)
            for key in order:
                out, wall, cpu = timed(variants[key], args.device)
                del out  # free the cache before the next variant runs
                if r >= args.warmup:
                    times[key]["wall"].append(wall)
                    times[key]["cpu"].append(cpu)
            if r >= args.warmup:
                done = ", ".join(f"{k} {times[k]['wall'][-1] * 1e3:.0f} ms" for k in order)
                log(f"round {r - args.warmup + 1}/{args.repeats} (wall): {done}")
    return times


RATIOS = [
    ("mechscope cache / bare HF", "mechscope cache", "bare HF"),
    ("mechscope forward / bare HF", "mechscope forward", "bare HF"),
    ("bridge cache / bare HF", "bridge cache", "bare HF"),
    ("bridge cache / mechscope cache (speed-up)", "bridge cache", "mechscope cache"),
]


def summarise(times: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    """Median wall and CPU milliseconds per variant."""
    return {
        k: {clock: 1e3 * statistics.median(v[clock]) for clock in ("wall", "cpu")}
        for k, v in times.items()
    }


def report(times: dict[str, dict[str, list[float]]], args: argparse.Namespace) -> None:
    med = summarise(times)
    bare = med["bare HF"]
    print(f"\nSmolLM2-135M, batch {args.batch} x {args.seq} tokens, median of {args.repeats}")
    print(f"{'variant':<20}{'wall ms':>10}{'x bare':>8}{'cpu ms':>10}{'x bare':>8}{'wall min':>10}")
    for k, m in med.items():
        wall_min = 1e3 * min(times[k]["wall"])
        print(
            f"{k:<20}{m['wall']:>10.0f}{m['wall'] / bare['wall']:>8.3f}"
            f"{m['cpu']:>10.0f}{m['cpu'] / bare['cpu']:>8.3f}{wall_min:>10.0f}"
        )
    print(f"\n{'ratio of medians':<42}{'wall':>7}{'cpu':>7}")
    for label, a, b in RATIOS:
        if a in med and b in med:
            wall, cpu = med[a]["wall"] / med[b]["wall"], med[a]["cpu"] / med[b]["cpu"]
            print(f"{label:<42}{wall:>7.3f}{cpu:>7.3f}")
    for clock in ("wall", "cpu"):
        overhead = med["mechscope cache"][clock] / bare[clock]
        verdict = "meets" if overhead <= GOAL else "MISSES"
        print(f"mechscope cache overhead ({clock}) {100 * (overhead - 1):+.1f}%: {verdict} <= 15%")
    print("\n" + "\n".join(f"{k}: {v}" for k, v in machine(args.device).items()))
    if args.markdown:
        print(markdown(med, args))


def markdown(med: dict[str, dict[str, float]], args: argparse.Namespace) -> str:
    m = machine(args.device)
    cmd = " ".join(["python benchmarks/bench_cache_overhead.py", *sys.argv[1:]])
    bare = med["bare HF"]
    rows = [
        f"| {k} | {v['wall']:.0f} | {v['wall'] / bare['wall']:.3f} | {v['cpu']:.0f} "
        f"| {v['cpu'] / bare['cpu']:.3f} |"
        for k, v in med.items()
    ]
    ratio_rows = [
        f"| {label} | {med[a]['wall'] / med[b]['wall']:.3f} | {med[a]['cpu'] / med[b]['cpu']:.3f} |"
        for label, a, b in RATIOS
        if a in med and b in med
    ]
    return "\n".join(
        [
            "",
            f"Date: {datetime.date.today().isoformat()}. Command: `{cmd}`",
            "",
            f"Device: {m['device']}. Machine: {m['cpu']}, {m['cores']} cores, {m['torch threads']} torch threads "
            f"(load average at the end {m['load average']}); Python {m['python']}, "
            f"torch {m['torch']}, transformers {m['transformers']}, "
            f"transformer-lens {m['transformer-lens']}.",
            "",
            f"SmolLM2-135M, batch {args.batch} x {args.seq} random tokens, medians of "
            f"{args.repeats} interleaved rounds after {args.warmup} warm-up:",
            "",
            "| variant | wall ms | x bare HF | CPU ms | x bare HF |",
            "|---|---:|---:|---:|---:|",
            *rows,
            "",
            "| ratio of medians | wall | CPU |",
            "|---|---:|---:|",
            *ratio_rows,
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    variants = build(args, log)
    times = measure(variants, args, log)
    report(times, args)


if __name__ == "__main__":
    main()
