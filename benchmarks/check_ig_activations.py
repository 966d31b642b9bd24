"""EAP-IG-activations against the reference library (hannamw/EAP-IG), edge by edge.

    python benchmarks/check_ig_activations.py --write-task ioi4.jsonl --n 4
    /work/peers/venv-eapig/bin/python benchmarks/peers/run_eap_ig.py --task ioi4.jsonl \\
        --methods EAP-IG-activations --ig-steps 2 --threads 1 --scores-dir DIR --grid 0.01
    python benchmarks/check_ig_activations.py --task ioi4.jsonl --steps 2 --peer-scores \\
        DIR/EAP-IG-activations-*.safetensors

The first call writes mechscope's IOI prompts (swap corruption) as JSONL for both sides. The
peer script runs ``attribute(..., method="EAP-IG-activations")`` on SmolLM2-135M-Instruct in
TransformerLens (BOS prepended, grouped-query attention ungrouped) and saves its
``[forward node, backward node]`` score matrix. This script scores the same prompts with
``attribute(method="eap-ig-activations", ungroup_kv=True)`` (BOS prepended) and compares every
edge. The reference attributes a loss (``-metric``) and divides by the batch size once more than
mechscope (whose metric is the batch mean), so its scores are mechscope's times ``-1 / n``;
the check fits that factor by least squares and reports the residual, the largest difference
and whether the two rankings pick the same top edges. Both graphs list writers (input, heads,
MLP per layer) and readers (q, k, v of each head, the MLP, per layer; logits last) in the same
order.
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
from mechscope.circuits import Graph, attribute  # noqa: E402
from mechscope.tasks import load_task  # noqa: E402


def write_task(path: str, n: int) -> None:
    model = mechscope.load("smollm2-135m", progress=False)
    task = load_task("ioi-swap", model, n=n, seed=0)
    rows = [
        {"clean": c, "corrupt": k, "answer": a, "wrong": w}
        for c, k, a, w in zip(task.clean, task.corrupt, task.answer, task.wrong)
    ]
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} prompts to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", help="JSONL prompts (the same file the peer ran)")
    parser.add_argument("--write-task", help="write mechscope's IOI prompts here and stop")
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--peer-scores", help="the peer's safetensors ([forward, backward])")
    parser.add_argument("--json")
    add_device_option(parser)
    args = parser.parse_args()
    device = pick_device(args.device)
    if device.type != "cpu":
        raise SystemExit("error: this check runs on the CPU only for now; use --device cpu")
    if args.write_task:
        write_task(args.write_task, args.n)
        return
    if not (args.task and args.peer_scores):
        raise SystemExit("error: give --task FILE.jsonl and --peer-scores FILE.safetensors")
    from safetensors.torch import load_file

    torch.set_num_threads(1)
    print(f"device {device_label(device)}", machine(device))
    model = mechscope.load("smollm2-135m", progress=False)
    batch = load_task(args.task, model).tokenize(model, prepend_bos=True)
    graph = Graph.from_dims(model.dims, ungroup_kv=True)
    cpu = time.process_time()
    ours = attribute(model, batch, method="eap-ig-activations", steps=args.steps, graph=graph)
    cpu = time.process_time() - cpu
    theirs = load_file(args.peer_scores)["scores"].double()
    if tuple(theirs.shape) != tuple(ours.scores.shape):
        raise SystemExit(
            f"error: peer scores {tuple(theirs.shape)}, ours {tuple(ours.scores.shape)}"
        )
    mask = graph.edge_mask
    a, b = ours.scores.double()[mask], theirs[mask]
    factor = float((a @ b) / (a @ a))
    resid = b - factor * a
    out = {
        "machine": machine(device),
        "prompts": len(batch),
        "steps": args.steps,
        "edges": int(mask.sum()),
        "fitted_factor": factor,
        "expected_factor": -1.0 / len(batch),
        "relative_residual": float(resid.norm() / b.norm()),
        "max_abs_diff": float(resid.abs().max()),
        "max_abs_score": float(b.abs().max()),
        "top100_same": bool(
            set(a.abs().topk(100).indices.tolist()) == set(b.abs().topk(100).indices.tolist())
        ),
        "mechscope_cpu_seconds": cpu,
    }
    for k, v in out.items():
        if k != "machine":
            print(f"{k}: {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
