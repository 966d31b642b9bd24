"""EAP and EAP-IG on SmolLM2-135M-Instruct, IOI, 8 prompts: attribution time and faithfulness.

Prints, for plain EAP and EAP-IG (5 steps): attribution seconds (and in units of one plain
forward pass of the same batch, which is less sensitive to machine load), faithfulness of the top
0.5% and 1% of edges, and the smallest top-n circuit reaching 80% faithfulness. The reference
library (hannamw/EAP-IG on TransformerLens) runs in its own venv (benchmarks/peers/); pass its
JSON output with ``--peer`` to print it alongside, otherwise the figures quoted in the issue are
printed, labelled "reference (measured earlier, not this run)".

    python benchmarks/bench_eap_ig.py [--n 8] [--steps 5] [--ungroup] [--json out.json]
                                      [--peer peer.json]

``--ungroup`` gives every query head its own k and v ports (123,211 edges, as the reference's
TransformerLens graph); the default has one per key/value head (70,651 edges).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

import mechscope
from mechscope.circuits import Evaluator, Graph, attribute, smallest_faithful
from mechscope.tasks import load_task

REFERENCE = {  # hannamw/EAP-IG, measured earlier (not this run); 123,211 edges (GQA ungrouped)
    "eap": {"seconds": 19.0, "faith@0.5%": 0.54, "faith@1%": None},
    "eap-ig": {"seconds": 61.0, "faith@0.5%": 0.82, "faith@1%": 0.91},
}


def forward_seconds(model: mechscope.HookedModel, batch: object, repeats: int = 3) -> float:
    with torch.no_grad():
        model(batch.clean_tokens, batch.clean_mask)
        start = time.perf_counter()
        for _ in range(repeats):
            model(batch.clean_tokens, batch.clean_mask)
    return (time.perf_counter() - start) / repeats


def run(n: int, steps: int, ungroup: bool, methods: list[str]) -> dict:
    model = mechscope.load("smollm2-135m", progress=False)
    batch = load_task("ioi", model, n=n).tokenize(model)
    graph = Graph.from_dims(model.dims, ungroup_kv=ungroup)
    fwd = forward_seconds(model, batch)
    ev = Evaluator(model, batch, graph=graph)
    out: dict = {"forward_seconds": fwd, "machine": platform.processor() or platform.machine()}
    out["threads"] = torch.get_num_threads()
    out["ungroup_kv"] = ungroup
    for method in methods:
        cpu = time.process_time()
        scored = attribute(model, batch, method=method, steps=steps, graph=graph)
        secs = scored.meta["seconds"]
        row = {"seconds": secs, "cpu_seconds": time.process_time() - cpu, "forwards": secs / fwd}
        row["edges"] = scored.total_edges
        for f in (0.005, 0.01):
            row[f"faith@{f:.1%}"] = ev.faithfulness(scored.top_fraction(f).mask)
        n80, f80 = smallest_faithful(model, batch, scored, 0.8)
        row.update({"n@80%": n80, "fraction@80%": n80 / scored.total_edges, "faith@n80": f80})
        out[method] = row
        print(method, json.dumps(row), flush=True)
    return out


def report(out: dict, peer: dict | None) -> None:
    print(f"\none plain forward of the batch: {out['forward_seconds']:.2f} s")
    print("| run | attribution s (CPU s) | faith @0.5% | faith @1% | smallest >= 80% |")
    print("|---|---|---|---|---|")
    for method in ("eap", "eap-ig"):
        if method not in out:
            continue
        r = out[method]
        print(
            f"| mechscope {method} | {r['seconds']:.1f} ({r['cpu_seconds']:.1f}) "
            f"| {r['faith@0.5%']:.2f} | {r['faith@1.0%']:.2f} "
            f"| {r['n@80%']} edges ({r['fraction@80%']:.2%} of {r['edges']}) |"
        )
    if peer is None:
        for method, r in REFERENCE.items():
            f1 = "n/a" if r["faith@1%"] is None else f"{r['faith@1%']:.2f}"
            print(
                f"| reference {method} (measured earlier, not this run) | {r['seconds']:.0f} "
                f"| {r['faith@0.5%']:.2f} | {f1} | n/a |"
            )
        return
    for method, key in (("eap", "eap"), ("eap-ig", "eap_ig")):
        f = peer.get("faithfulness", {}).get(key, {})
        secs = peer.get(f"{key}_seconds")
        m80 = peer.get("min_fraction_80" if key == "eap_ig" else "min_fraction_80_eap")
        print(
            f"| peer {method} (hannamw/EAP-IG, {peer.get('edges')} edges) | {secs} "
            f"| {f.get('0.005')} | {f.get('0.01')} | grid fraction {m80} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--json", default=None)
    parser.add_argument("--ungroup", action="store_true", help="one k/v port per query head")
    parser.add_argument("--methods", default="eap,eap-ig")
    parser.add_argument("--peer", default=None, help="JSON written by peers/run_eap_ig.py")
    args = parser.parse_args()
    out = run(args.n, args.steps, args.ungroup, args.methods.split(","))
    peer = None
    if args.peer:
        with open(args.peer) as f:
            peer = json.load(f)
    report(out, peer)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
