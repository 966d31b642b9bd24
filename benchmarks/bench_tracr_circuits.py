"""Circuit methods against Tracr-compiled circuits (a planted ground truth, issue 17).

    python benchmarks/bench_tracr_circuits.py [--data tests/data/tracr] [--device cpu]

For each program exported by ``benchmarks/peers/tracr_export.py`` (Tracr's own environment):

1. Parity with the peer: the largest |logit - Tracr's logit| of the hooked GPT-2 conversion on
   Tracr's 64 reference inputs (Tracr's forward ran in its jax environment; its logits are in the
   export).
2. The compiled circuit (weight read/write overlap) and the edges the task exercises
   (:mod:`mechscope.circuits.tracr`), and every circuit method on the program's 16 clean /
   corrupted pairs (logit difference): EAP, EAP-IG (5 and 50 steps), EAP-IG on activations,
   exact edge patching (top n = exercised edges, zero scores never selected), node attribution
   patching and exact node patching (top nodes = exercised components + the input, zero scores
   never selected), and ACDC
   (threshold 1% of the clean - corrupted gap). Edge precision is against the compiled edges,
   recall against the exercised ones; nodes are heads and MLPs; AUROC of |score| separates
   exercised edges from edges outside the compiled circuit. CPU seconds per method.
3. With ``--mib``: MIB's CPR and CMD (:func:`mechscope.circuits.mib.mib_score`, 95% bootstrap
   intervals over the pairs) of every edge method's scores and of MIB's random baseline, on a
   graph whose circuit is known.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import add_device_option, machine, pick_device, timed  # noqa: E402
from mechscope.circuits import Graph, acdc, attribute, attribute_nodes  # noqa: E402
from mechscope.circuits.mib import acdc_ranking, mib_score, score_edges  # noqa: E402
from mechscope.circuits.tracr import (  # noqa: E402
    compiled_edges,
    components,
    exact_edge_scores,
    exact_node_scores,
    exercised_edges,
    node_recovery,
    recovery,
    separation,
    top_nonzero,
)
from mechscope.tasks.metrics import logit_diff  # noqa: E402
from mechscope.toys.tracr import load_tracr  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = ("frac_prevs", "detect_abc", "count_less_freq", "pointer")


def methods(t, n_edges: int, n_nodes: int, gap: float):
    """(name, function returning (scored or None, circuit)) for every method."""

    def edge(fn):
        def run():
            scored = fn()
            return scored, top_nonzero(scored, n_edges)

        return run

    def node(fn):
        def run():
            return fn(), None

        return run

    m, b = t.model, t.batch
    return [
        ("eap", edge(lambda: attribute(m, b, method="eap"))),
        ("eap-ig (5)", edge(lambda: attribute(m, b, method="eap-ig", steps=5))),
        ("eap-ig (50)", edge(lambda: attribute(m, b, method="eap-ig", steps=50))),
        ("eap-ig-activations", edge(lambda: attribute(m, b, method="eap-ig-activations"))),
        ("exact edge patching", edge(lambda: exact_edge_scores(m, b))),
        ("node-ap", node(lambda: attribute_nodes(m, b))),
        ("exact node patching", node(lambda: exact_node_scores(m, b))),
        ("acdc", lambda: (None, acdc(m, b, threshold=0.01 * gap, metric=logit_diff))),
    ]


def run(name: str, data: Path, device: torch.device, mib: bool) -> None:
    t = load_tracr(data / name)
    t.model.hf.to(device)
    t = replace(t, batch=t.batch.to(device))
    with torch.no_grad():
        logits = t.model(t.ref_tokens.to(device))[..., : t.n_out].cpu()
        clean = float(logit_diff(t.model(t.batch.clean_tokens), t.batch).mean())
        corrupt = float(logit_diff(t.model(t.batch.corrupt_tokens), t.batch).mean())
    err = float((logits - t.ref_logits).abs().max())
    g = Graph.from_dims(t.model.dims)
    compiled, exercised = compiled_edges(t, g), exercised_edges(t, g)
    n_edges = int(exercised.sum())
    n_nodes = len(components(g, exercised)) + 1  # + the input
    print(f"\n## {name}: {t.model}")
    print(f"max |logit - Tracr| on {len(t.ref_tokens)} inputs: {err:.2e}")
    print(f"logit diff clean {clean:.3f} corrupted {corrupt:.3f}; graph {g.n_edges} edges,")
    print(f"compiled {int(compiled.sum())}: {g.edge_names(compiled)}")
    print(f"exercised {n_edges}: {g.edge_names(exercised)}")
    print("| method | edges | edge precision | edge recall | node precision | node recall |"
          " AUROC | CPU s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    edge_scores = {}
    for label, fn in methods(t, n_edges, n_nodes, clean - corrupt):
        (scored, circuit), _, cpu = timed(fn, device)
        if circuit is not None and scored is not None:
            edge_scores[label] = scored
        if label == "acdc":  # MIB ranks every edge by what ACDC measured when it tried it
            edge_scores[label] = acdc_ranking(circuit)
        if circuit is None:  # a node method: nodes only
            r = node_recovery(scored, n_nodes, compiled, exercised)
            print(
                f"| {label} | - | - | - | {r['node_precision']:.2f} | {r['node_recall']:.2f} | - "
                f"| {cpu:.2f} |"
            )
            continue
        r = recovery(circuit, compiled, exercised)
        auroc = f"{separation(scored, compiled, exercised):.3f}" if scored is not None else "-"
        if r["edge_recall"] < 1:
            print(f"  {label} misses {g.edge_names(exercised & ~circuit.mask)}")
        print(
            f"| {label} | {r['n_edges']} | {r['edge_precision']:.2f} | {r['edge_recall']:.2f} | "
            f"{r['node_precision']:.2f} | {r['node_recall']:.2f} | {auroc} | {cpu:.2f} |"
        )
    if mib:
        mib_table(t, edge_scores)


def mib_table(t, scored: dict) -> None:
    """MIB's CPR (higher is better) and CMD (lower is better) of each method's edge scores."""
    g = Graph.from_dims(t.model.dims)
    rows = {**scored, "random": score_edges(t.model, t.batch, logit_diff, "random", 1, g)}
    print("| method | CPR | CMD |")
    print("|---|---|---|")
    for label, s in rows.items():
        r = mib_score(t.model, t.batch, logit_diff, scored=s)
        print(
            f"| {label} | {r.cpr:.3f} [{r.cpr_ci[0]:.3f}, {r.cpr_ci[1]:.3f}] | "
            f"{r.cmd:.3f} [{r.cmd_ci[0]:.3f}, {r.cmd_ci[1]:.3f}] |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "tests" / "data" / "tracr")
    ap.add_argument("--programs", default=",".join(PROGRAMS))
    ap.add_argument("--mib", action="store_true", help="also MIB's CPR and CMD per method")
    add_device_option(ap)
    args = ap.parse_args()
    device = pick_device(args.device)
    torch.set_num_threads(1)
    print(machine(device))
    for name in args.programs.split(","):
        run(name, args.data, device, args.mib)


if __name__ == "__main__":
    main()
