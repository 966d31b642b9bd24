"""Peak resident memory of `mechscope compress`, stage by stage (issue 18).

Runs what ``mechscope compress -m smollm2-135m --bits 3.5 --protect ioi,induction --importance
gradient --prune-neurons 0.4 --out DIR`` runs (``mechscope.compress.compress`` on the loaded
model) with each stage of the pipeline wrapped: before a stage the kernel's high-water mark is
reset (``/proc/self/clear_refs`` 5), after it ``VmHWM`` (the stage's peak resident set) and
``VmRSS`` (what the stage leaves behind) are read from ``/proc/self/status``, with the stage's CPU
seconds. The peer in the same run is the fp32 model's parameter bytes (the ratio printed is the
peak over them). tracemalloc is not used: torch's tensors are allocated outside Python's
allocator, so only the resident set sees them. Linux only.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_compress_memory.py --out DIR [--json F]
        [--calib-tokens 8192] [--prompts 16] [--device cpu]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import mechscope
import mechscope.compress.api as api
from compress_report import cpu_seconds
from machine import add_device_option, device_label, pick_device

STAGES = ("calibration", "protected_batches", "input_stats", "loss_grads", "task_terms",
          "error_tables", "neuron_mask", "quantize_model", "recount", "export")  # fmt: skip


def status() -> dict[str, int]:
    """VmRSS and VmHWM of this process in bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS


def wrap(name: str, fn, log: list[dict]):  # type: ignore[no-untyped-def]
    @functools.wraps(fn)
    def run(*args, **kwargs):  # type: ignore[no-untyped-def]
        before, cpu = status()["VmRSS"], cpu_seconds()
        reset_peak()
        try:
            return fn(*args, **kwargs)
        finally:
            s = status()
            log.append({"stage": name, "rss_before": before, "peak": s["VmHWM"],
                        "rss_after": s["VmRSS"], "cpu_seconds": round(cpu_seconds() - cpu, 1)})  # fmt: skip

    return run


def gb(n: float) -> str:
    return f"{n / 1e9:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="new export folder")
    p.add_argument("--json", default=None)
    p.add_argument("--bits", type=float, default=3.5)
    p.add_argument("--calib-tokens", type=int, default=8192)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--prune-neurons", type=float, default=0.4)
    add_device_option(p)
    args = p.parse_args()
    device = pick_device(args.device)
    if Path(args.out).exists():
        raise SystemExit(f"output folder {args.out} exists; pass a new --out folder")
    log: list[dict] = []
    for name in STAGES:
        setattr(api, name, wrap(name, getattr(api, name), log))
    api.METHODS["circuit"] = wrap("allocate", api.METHODS["circuit"], log)
    start, cpu0 = time.perf_counter(), cpu_seconds()
    reset_peak()
    model = mechscope.load("smollm2-135m", device=device, progress=False)
    s = status()
    log.append({"stage": "load", "rss_before": 0, "peak": s["VmHWM"], "rss_after": s["VmRSS"],
                "cpu_seconds": round(cpu_seconds() - cpu0, 1)})  # fmt: skip
    params = sum(t.numel() * t.element_size() for t in model.hf.parameters())
    config = api.CompressConfig(bits=args.bits, protect=("ioi", "induction"),
                                importance="gradient", prune_neurons=args.prune_neurons,
                                calib_tokens=args.calib_tokens, n_prompts=args.prompts)  # fmt: skip
    result = api.compress(model, config, out=args.out)
    peak = max(r["peak"] for r in log)
    print(f"device {device_label(device)}; fp32 parameters {gb(params)} GB (the peer)")
    print("| stage | RSS before (GB) | peak during (GB) | RSS after (GB) | CPU s |")
    print("|---|---|---|---|---|")
    for r in log:
        print(f"| {r['stage']} | {gb(r['rss_before'])} | {gb(r['peak'])} | {gb(r['rss_after'])} "
              f"| {r['cpu_seconds']} |")  # fmt: skip
    print(f"peak {gb(peak)} GB = {peak / params:.1f}x the parameters; "
          f"{result.effective_bits:.3f} effective bits; {cpu_seconds() - cpu0:.0f} CPU-s, "
          f"{time.perf_counter() - start:.0f} s wall")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"stages": log, "peak": peak, "params": params,
            "effective_bits": result.effective_bits, "recount": result.recount.to_dict(),  # type: ignore[union-attr]
            "cpu_seconds": cpu_seconds() - cpu0, "args": vars(args)}, indent=1))  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
