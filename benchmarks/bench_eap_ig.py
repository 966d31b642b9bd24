"""EAP and EAP-IG on SmolLM2-135M-Instruct, IOI, 8 prompts: attribution time and faithfulness.

Prints, for plain EAP and EAP-IG (5 steps): attribution seconds (and in units of one plain
forward pass of the same batch, which is less sensitive to machine load), and for each circuit
selection (``top_n``: the n edges of largest |score|; ``greedy``: grown from the logits, as the
reference's ``apply_greedy``): faithfulness of 0.5% and 1% of the edges, the smallest size on
the reference script's grid (0.1% ... 5%) reaching 80%, and the crossing found by bisecting
inside the first grid interval that brackets 80% (faithfulness is not monotone in the size; see
``smallest_faithful``). The reference library (hannamw/EAP-IG on TransformerLens) runs in its
own venv (benchmarks/peers/); pass its JSON output with ``--peer`` to print it alongside,
otherwise the figures quoted in the issue are printed, labelled "reference (quoted in the issue,
not this run)".

    python benchmarks/bench_eap_ig.py [--task ioi|FILE.jsonl] [--n 8] [--corruption abc|swap]
        [--bos] [--steps 5]
        [--ungroup] [--methods eap,eap-ig] [--select top_n,greedy] [--json out.json]
        [--peer peer.json]

``--ungroup`` gives every query head its own k and v ports (123,211 edges, as the reference's
TransformerLens graph); the default has one per key/value head (70,651 edges). ``--bos``
prepends BOS to every prompt, as the reference library always does. ``--task FILE.jsonl`` runs
the prompts the peer script wrote with ``--write-task`` (the same prompts on both sides).
``--device cpu|cuda|auto`` (auto: cuda when available) places the model; attribution and the
forward pass are timed between ``torch.cuda.synchronize`` calls on a GPU; the device is printed
and written to the JSON, and a ``--peer`` JSON measured on another device is refused (run the peer
with the same ``--device``).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import mechscope
from machine import add_device_option, device_label, pick_device, sync, timed
from mechscope.circuits import Evaluator, Graph, attribute, curve_sizes
from mechscope.circuits.faithfulness import first_reaching
from mechscope.tasks import load_task

REFERENCE = {  # hannamw/EAP-IG as quoted in issue 3 (not this run); 123,211 edges (GQA ungrouped)
    "eap": {"seconds": 19.0, "faith@0.5%": 0.54, "faith@1%": None},
    "eap-ig": {"seconds": 61.0, "faith@0.5%": 0.82, "faith@1%": 0.91},
}
GRID = (0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05)
PEER_KEYS = {"eap": "eap", "eap-ig": "eap_ig"}
PEER_SELECT = {"top_n": "topn", "greedy": "greedy"}


def forward_seconds(
    model: mechscope.HookedModel, batch: object, device: torch.device, repeats: int = 3
) -> float:
    with torch.no_grad():
        model(batch.clean_tokens, batch.clean_mask)
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            model(batch.clean_tokens, batch.clean_mask)
        sync(device)
    return (time.perf_counter() - start) / repeats


def selection_row(ev: Evaluator, scored: object, select: str) -> dict:
    """Faithfulness at 0.5% / 1%, the smallest grid size reaching 0.8 and the refined crossing."""
    pick = scored.top_n if select == "top_n" else scored.greedy
    total = scored.total_edges
    row = {f"faith@{f:.1%}": ev.faithfulness(pick(round(f * total)).mask) for f in (0.005, 0.01)}
    found = first_reaching(
        lambda n: ev.faithfulness(pick(n).mask), curve_sizes(total, GRID), 0.8, refine=True
    )
    row["grid_n@80%"] = found.grid_n
    row["n@80%"] = found.n
    row["faith@n80"] = found.faithfulness
    row["pruned_edges@1%"] = pick(round(0.01 * total)).pruned().n_edges
    row["curve"] = found.curve
    return row


def run(args: argparse.Namespace) -> dict:
    model = mechscope.load("smollm2-135m", device=args.device, progress=False)
    options = {"corruption": args.corruption} if args.corruption else {}
    task = load_task(args.task, model, n=args.n, **options)
    batch = task.tokenize(model, prepend_bos=args.bos).to(args.device)
    graph = Graph.from_dims(model.dims, ungroup_kv=args.ungroup)
    fwd = forward_seconds(model, batch, args.device)
    ev = Evaluator(model, batch, graph=graph)
    out: dict = {"forward_seconds": fwd, "device": args.device.type}
    out["machine"] = device_label(args.device)
    out.update(threads=torch.get_num_threads(), ungroup_kv=args.ungroup, bos=args.bos)
    out.update(
        task=args.task,
        corruption=args.corruption,
        prompts=len(batch),
        clean=ev.clean_value,
        corrupt=ev.corrupt_value,
    )
    print(f"logit diff: clean {ev.clean_value:.4f}, corrupt {ev.corrupt_value:.4f}", flush=True)
    for method in args.methods.split(","):
        scored, secs, cpu = timed(
            lambda m=method: attribute(model, batch, method=m, steps=args.steps, graph=graph),
            args.device,
        )
        row = {"seconds": secs, "cpu_seconds": cpu, "forwards": secs / fwd}
        row["edges"] = scored.total_edges
        for select in args.select.split(","):
            row[select] = selection_row(ev, scored, select)
        out[method] = row
        print(method, json.dumps(row), flush=True)
    return out


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _size(n: int | None, total: int) -> str:
    return "none up to 5%" if n is None else f"{n} ({n / total:.2%})"


def report(out: dict, peer: dict | None, selects: list[str]) -> None:
    print(
        f"\ndevice {out['machine']}; one plain forward of the batch: {out['forward_seconds']:.2f} s"
    )
    print(
        "| run | attribution s (CPU s) | faith @0.5% | faith @1% "
        "| smallest grid size >= 0.8 | crossing |"
    )
    print("|---|---|---|---|---|---|")
    for method in ("eap", "eap-ig"):
        if method not in out:
            continue
        r = out[method]
        for select in selects:
            s = r[select]
            print(
                f"| mechscope {method}, {select} | {r['seconds']:.1f} ({r['cpu_seconds']:.1f}) "
                f"| {_f(s['faith@0.5%'])} | {_f(s['faith@1.0%'])} "
                f"| {_size(s['grid_n@80%'], r['edges'])} | {_size(s['n@80%'], r['edges'])} |"
            )
    if peer is None:
        for method, r in REFERENCE.items():
            print(
                f"| reference {method} (quoted in the issue, not this run) | {r['seconds']:.0f} "
                f"| {_f(r['faith@0.5%'])} | {_f(r['faith@1%'])} | n/a | n/a |"
            )
        return
    for method in ("eap", "eap-ig"):
        key = PEER_KEYS[method]
        secs = peer.get("seconds", {}).get(key, peer.get(f"{key}_seconds"))
        for select in selects:
            r = peer.get("selections", {}).get(PEER_SELECT[select], {}).get(key)
            if r is None:
                continue
            m80, top = r["min80"], max(float(f) for f in r["faith"])
            print(
                f"| peer {method}, {PEER_SELECT[select]} (hannamw/EAP-IG) | {secs} "
                f"| {_f(r['faith'].get('0.005'))} | {_f(r['faith'].get('0.01'))} "
                f"| {f'none up to {top:.1%}' if m80 is None else f'{m80:.2%}'} | - |"
            )
        if secs and method in out:
            print(f"speed-up {method}: {secs / out[method]['seconds']:.1f}x (peer / mechscope)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="ioi", help="ioi, or a JSONL file")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--corruption", help="IOI corruption: abc (default) or swap")
    parser.add_argument("--bos", action="store_true", help="prepend BOS, as the reference does")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--json", default=None)
    parser.add_argument("--ungroup", action="store_true", help="one k/v port per query head")
    parser.add_argument("--methods", default="eap,eap-ig")
    parser.add_argument("--select", default="top_n,greedy", help="top_n and/or greedy")
    parser.add_argument("--peer", default=None, help="JSON written by peers/run_eap_ig.py")
    add_device_option(parser)
    args = parser.parse_args()
    args.device = pick_device(args.device)
    peer = None
    if args.peer:
        with open(args.peer) as f:
            peer = json.load(f)
        if peer.get("device", "cpu") != args.device.type:
            raise SystemExit(
                f"error: the peer ran on {peer.get('device', 'cpu')}, this run is on "
                f"{args.device.type}; run both with the same --device"
            )
    out = run(args)
    report(out, peer, args.select.split(","))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
