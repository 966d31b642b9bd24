"""How long ``mechscope audit`` takes on the built-in model with default budgets, step by step,
against its closest peer, ``mechscope report`` (the same section builders), run in the same process.

    nice -n 5 python benchmarks/bench_audit.py [--no-report] [--compress] [--out DIR]

Prints the load average before and after, each audit step's wall seconds (from ``audit.json``),
the total wall and process CPU seconds, and the ratio audit / report when the report is timed.
The tuned lens and the report's SAE are cached in ``~/.cache/mechscope`` by whichever runs
first; run once beforehand (or read the first run as a cold one).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import mechscope
from machine import add_device_option, cpu_name, device_label, pick_device
from mechscope.audit import AuditConfig, build_audit


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(fn) -> tuple[float, float]:  # noqa: ANN001
    wall, cpu = time.perf_counter(), _cpu()
    fn()
    return time.perf_counter() - wall, _cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="audit folder (default: a temporary one)")
    parser.add_argument("--no-report", action="store_true", help="skip timing the report")
    parser.add_argument("--compress", action="store_true", help="audit with --compress")
    add_device_option(parser)
    args = parser.parse_args()
    device = pick_device(args.device)
    if device.type != "cpu":  # the audit runs the model where mechscope.load puts it: the CPU
        raise SystemExit("error: this benchmark runs on the CPU only for now; use --device cpu")
    print(f"device {device_label(device)}")
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; load before {os.getloadavg()}")
    model = mechscope.load(mechscope.DEFAULT_MODEL, progress=False)
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-audit-"))
    config = AuditConfig(compress_bits=(4.5, 3.5) if args.compress else ())
    wall, cpu = timed(lambda: build_audit(model, out, config, quiet=False))
    record = json.loads((out / "audit.json").read_text())
    print("| step | wall s |\n|---|---|")
    for name, seconds in record["timings"].items():
        print(f"| {name} | {seconds:.1f} |")
    print(f"audit: {wall:.0f} s wall ({wall / 60:.1f} min), {cpu:.0f} s CPU (PDF included)")
    print(f"completeness {record['compliance']['present']}/{record['compliance']['required']}")
    if not args.no_report:
        from mechscope.report import build_report

        with tempfile.TemporaryDirectory() as tmp:
            r_wall, r_cpu = timed(lambda: build_report(model, tmp, quiet=False))
        print(f"report: {r_wall:.0f} s wall, {r_cpu:.0f} s CPU; "
              f"audit / report: {wall / r_wall:.2f} wall, {cpu / r_cpu:.2f} CPU")  # fmt: skip
    print(f"load after {os.getloadavg()}")


if __name__ == "__main__":
    main()
