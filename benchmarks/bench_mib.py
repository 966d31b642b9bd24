"""MIB circuit-localisation scores of mechscope's circuit methods on the built-in model.

    python benchmarks/bench_mib.py [--n 16] [--tasks ioi,arithmetic,mcqa] [--boot 5] [--json OUT]

For each task (MIB's form: ``ioi``, ``arithmetic`` (two-digit addition), ``arithmetic-sub``,
``mcqa``) and each method (EAP, EAP-IG with ``--steps`` on the inputs, EAP-IG-activations with
``--act-steps`` per component, node attribution patching ``node-ap`` and MIB's random baseline),
prints CPR and CMD with 95% bootstrap intervals over the prompts
(:func:`mechscope.circuits.mib.mib_score`), the model's clean and corrupted logit differences
and its top-1 accuracy on the task (a method cannot find a circuit for a behaviour the model
lacks; a task whose clean logit difference is not above max(0, corrupted) is reported and
skipped), the wall and CPU seconds of each method, and the stability (mean bootstrap Jaccard
with a 95% interval over ``--boot`` resamples of the prompts) of the IOI circuits of
``--stability-fractions`` of the edges (default 1%) found by each ``--stability-method``
(default EAP-IG).
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
from mechscope.circuits.graph import Graph  # noqa: E402
from mechscope.circuits.mib import mib_score, stability_sizes  # noqa: E402
from mechscope.stats import bootstrap_ci  # noqa: E402
from mechscope.tasks import load_task  # noqa: E402
from mechscope.tasks.metrics import logit_diff  # noqa: E402


def behaviour(model, batch) -> dict[str, float]:
    with torch.no_grad():
        clean = model(batch.clean_tokens, batch.clean_mask)
        corrupt = model(batch.corrupt_tokens, batch.corrupt_mask)
    ld = logit_diff(clean, batch)
    rows = torch.arange(len(batch))
    top1 = (clean[rows, batch.last_pos].argmax(-1) == batch.answer_ids).float()
    return {
        "clean_logit_diff": float(ld.mean()),
        "clean_logit_diff_ci": list(bootstrap_ci(ld)),
        "corrupt_logit_diff": float(logit_diff(corrupt, batch).mean()),
        "top1": float(top1.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--tasks", default="ioi,arithmetic,mcqa")
    parser.add_argument("--methods", default="eap,eap-ig,eap-ig-activations,node-ap,random")
    parser.add_argument("--steps", type=int, default=5, help="EAP-IG steps (inputs)")
    parser.add_argument(
        "--act-steps",
        type=int,
        default=2,
        help="EAP-IG-activations steps per component (1: alpha = 1 only)",
    )
    parser.add_argument("--boot", type=int, default=5, help="resamples for IOI stability (0: skip)")
    parser.add_argument(
        "--stability-method", default="eap-ig", help="comma list of methods for the IOI stability"
    )
    parser.add_argument(
        "--stability-fractions",
        default="0.01",
        help="comma list of circuit sizes (fractions of the edges) for the IOI stability",
    )
    parser.add_argument("--json")
    add_device_option(parser)
    args = parser.parse_args()
    device = pick_device(args.device)
    if device.type != "cpu":  # the DAS and MIB code keep their index tensors on the CPU
        raise SystemExit("error: this benchmark runs on the CPU only for now; use --device cpu")
    torch.set_num_threads(1)
    print(f"device {device_label(device)}", machine(device))
    model = mechscope.load("smollm2-135m", progress=False)
    out: dict = {"machine": machine(device), "n": args.n, "tasks": {}}
    for task in filter(None, args.tasks.split(",")):
        batch = load_task(task, model, n=args.n, seed=0).tokenize(model)
        info = behaviour(model, batch)
        out["tasks"][task] = info
        print(f"{task}: clean logit diff {info['clean_logit_diff']:.2f}, corrupted "
              f"{info['corrupt_logit_diff']:.2f}, top-1 {info['top1']:.2f}")  # fmt: skip
        if info["clean_logit_diff"] <= max(0.0, info["corrupt_logit_diff"]):
            # no behaviour to explain: faithfulness divides by clean - corrupted
            info["skipped"] = "clean logit difference <= max(0, corrupted): no behaviour"
            print(f"  skipped: {info['skipped']}", flush=True)
            save(args.json, out)
            continue
        info["methods"] = {}
        for method in args.methods.split(","):
            steps = args.act_steps if method == "eap-ig-activations" else args.steps
            start, cpu = time.perf_counter(), time.process_time()
            s = mib_score(model, batch, method=method, steps=steps, n_boot=1000)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            info["methods"][method] = {**s.to_dict(), "steps": steps, "seconds": wall,
                                       "cpu_seconds": cpu}  # fmt: skip
            print(f"  {method:18s} CPR {s.cpr:6.3f} [{s.cpr_ci[0]:6.3f}, {s.cpr_ci[1]:6.3f}]  "
                  f"CMD {s.cmd:6.3f} [{s.cmd_ci[0]:6.3f}, {s.cmd_ci[1]:6.3f}]  "
                  f"({wall:.0f} s wall, {cpu:.0f} CPU-s)", flush=True)  # fmt: skip
            save(args.json, out)
    if args.boot:
        batch = load_task("ioi", model, n=args.n, seed=0).tokenize(model)
        total = Graph.from_dims(model.dims).n_edges
        fractions = [float(f) for f in args.stability_fractions.split(",")]
        sizes = [round(f * total) for f in fractions]
        out["ioi_stability"] = {}
        for method in args.stability_method.split(","):
            cpu = time.process_time()
            found = stability_sizes(model, batch, method=method, sizes=sizes, n_boot=args.boot)
            cpu = time.process_time() - cpu
            out["ioi_stability"][method] = {"cpu_seconds": cpu, "sizes": found}
            for f, st in zip(fractions, found):
                lo, hi = st["mean_jaccard_ci"]
                print(f"IOI stability ({method}, top {st['n_edges']} edges = {f:.1%}, "
                      f"{args.boot} resamples of {args.n} prompts): mean Jaccard "
                      f"{st['mean_jaccard']:.3f} [{lo:.3f}, {hi:.3f}] (min {st['min_jaccard']:.3f}, "
                      f"max {st['max_jaccard']:.3f}); {cpu:.0f} CPU-s", flush=True)  # fmt: skip
            save(args.json, out)
    save(args.json, out)


def save(path: str | None, out: dict) -> None:
    """Write what is measured so far (the runs are long; a stopped run keeps its results)."""
    if path:
        Path(path).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
