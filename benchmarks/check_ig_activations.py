"""EAP-IG-activations against the reference library (hannamw/EAP-IG), edge by edge.

    python benchmarks/check_ig_activations.py --write-task ioi4.jsonl --n 4
    /work/peers/venv-eapig/bin/python benchmarks/peers/run_eap_ig.py --task ioi4.jsonl \\
        --methods EAP-IG-activations --ig-steps 2 --threads 1 --scores-dir DIR --grid 0.01
    python benchmarks/check_ig_activations.py --task ioi4.jsonl --steps 2 --peer-scores \\
        DIR/EAP-IG-activations-*.safetensors

The first call writes mechscope's IOI prompts (swap corruption) as JSONL for both sides. The
peer script runs ``attribute(..., method="EAP-IG-activations")`` in TransformerLens (BOS
prepended, grouped-query attention ungrouped; ``--hf-folder DIR`` for another model than
SmolLM2-135M-Instruct, e.g. a tiny random one: pass the same folder here as ``--model``) and saves
its ``[forward node, backward node]`` score matrix. This script scores the same prompts with
``attribute(method=--method, ungroup_kv=True)`` (BOS prepended) and compares every edge. The
reference attributes a loss (``-metric``) and divides by the batch size once more than mechscope
(whose metric is the batch mean), so its scores are mechscope's times ``-1 / n``. Reported, after
that factor: the largest difference relative to the largest peer score, the relative residual,
Spearman's rank correlation and the top-100 overlap, over all edges and without the edges from
the input into layer 0's q/k/v ports.

Those edges are the one difference for EAP-IG-activations, and it is the reference's, not
mechscope's: at its input points the reference sets the embedding to an interpolated constant
that does not require grad. In a model without a learned position embedding (Llama, Qwen, ...)
nothing before layer 0's q/k/v inputs then requires grad, so their backward hooks never fire and
those points add 0 to the input -> layer-0 attention edges (the MLP of layer 0 still gets its
gradient: its input includes the attention output, which depends on parameters). With GPT-2's
learned position embedding the hooks fire and the two agree on every edge. mechscope keeps the
gradient (the metric does depend on those ports at those points); ``reference_input_point``
recomputes mechscope's scores with those gradients set to 0, which must equal the peer's.
Both graphs list writers (input, heads, MLP per layer) and readers (q, k, v of each head, the
MLP, per layer; logits last) in the same order.
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


def first_layer_attention_edges(graph: Graph) -> torch.Tensor:
    """[node port] bool: the edges from the input node into layer 0's q, k and v ports."""
    sel = torch.zeros_like(graph.edge_mask)
    sel[
        graph.nodes.index("input"), [j for j, p in enumerate(graph.ports) if p.startswith("a0.")]
    ] = True
    return sel


def fitted_factor(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a @ b) / (a @ a))


def compare(ours: torch.Tensor, theirs: torch.Tensor, mask: torch.Tensor, n: int) -> dict:
    """Edge by edge, after the expected factor ``-1 / n``: the largest difference relative to the
    largest peer score, the relative residual, Spearman's rank correlation of the scores and of
    their magnitudes, and the overlap of the top-100 edges by |score|."""
    from scipy.stats import spearmanr

    a, b = -ours.double()[mask] / n, theirs.double()[mask]
    d = b - a
    k = min(100, len(a))
    top_a, top_b = set(a.abs().topk(k).indices.tolist()), set(b.abs().topk(k).indices.tolist())
    return {
        "edges": len(a),
        "max_abs_diff_rel": float(d.abs().max() / b.abs().max()),
        "relative_residual": float(d.norm() / b.norm()),
        "spearman": float(spearmanr(a.numpy(), b.numpy()).statistic),
        "spearman_abs": float(spearmanr(a.abs().numpy(), b.abs().numpy()).statistic),
        "top100_overlap": len(top_a & top_b) / k,
    }


def ig_activation_scores(model, batch, graph: Graph, steps: int) -> tuple[torch.Tensor, ...]:
    """(mechscope's EAP-IG-activations scores, the same with the reference's input points) from
    one pass over the points: ``attribute``'s own steps (the gradient points of
    ``_activation_points``, ``port_grads`` at each, ``edge_scores`` of their mean); at the
    reference's input points the layer-0 q/k/v port gradients are zero (the interpolated
    embedding is a constant that does not require grad, so without a learned position embedding
    nothing before those ports does and their backward hooks never fire)."""
    from mechscope.circuits.eap import _activation_points, edge_scores, port_grads
    from mechscope.circuits.nodes import qkv_maps, run_nodes
    from mechscope.tasks.metrics import logit_diff

    mask = batch.clean_mask
    _, clean = run_nodes(model, batch.clean_tokens, mask)
    _, corrupt = run_nodes(model, batch.corrupt_tokens, mask)
    maps = [qkv_maps(model, layer) for layer in range(model.dims.n_layers)]
    layer0 = [j for j, p in enumerate(graph.ports) if p.startswith("a0.")]
    total, dropped = 0, 0
    points = _activation_points(model, batch, clean[:, :, 0], corrupt[:, :, 0], steps)
    for embed, replace in points:
        g = port_grads(model, graph, batch, logit_diff, embed, maps, replace)
        total = total + g
        if embed is not None:  # an input point
            dropped = dropped + g[:, :, layer0]
    like = total.clone()
    like[:, :, layer0] -= dropped
    delta = corrupt - clean
    return edge_scores(graph, delta, total / len(points)), edge_scores(
        graph, delta, like / len(points)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", help="JSONL prompts (the same file the peer ran)")
    parser.add_argument("--write-task", help="write mechscope's IOI prompts here and stop")
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--peer-scores", help="the peer's safetensors ([forward, backward])")
    parser.add_argument(
        "--model",
        default="smollm2-135m",
        help="model alias or HF folder (the same folder the peer ran with --hf-folder)",
    )
    parser.add_argument(
        "--method",
        default="eap-ig-activations",
        choices=["eap", "eap-ig", "eap-ig-activations"],
        help="mechscope's method (the peer's EAP, EAP-IG-inputs, EAP-IG-activations)",
    )
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
    model = mechscope.load(args.model, progress=False)
    batch = load_task(args.task, model).tokenize(model, prepend_bos=True)
    graph = Graph.from_dims(model.dims, ungroup_kv=True)
    cpu = time.process_time()
    like = None
    if args.method == "eap-ig-activations":
        ours, like = ig_activation_scores(model, batch, graph, args.steps)
    else:
        ours = attribute(model, batch, method=args.method, steps=args.steps, graph=graph).scores
    cpu = time.process_time() - cpu
    theirs = load_file(args.peer_scores)["scores"].double()
    if tuple(theirs.shape) != tuple(ours.shape):
        raise SystemExit(f"error: peer scores {tuple(theirs.shape)}, ours {tuple(ours.shape)}")
    mask = graph.edge_mask
    n = len(batch)
    first = first_layer_attention_edges(graph)
    out = {
        "machine": machine(device),
        "model": args.model,
        "method": args.method,
        "prompts": n,
        "steps": args.steps,
        "edges": int(mask.sum()),
        "input_to_layer0_attention_edges": int((first & mask).sum()),
        "fitted_factor": fitted_factor(ours.double()[mask], theirs[mask]),
        "expected_factor": -1.0 / n,
        "all_edges": compare(ours, theirs, mask, n),
        "without_input_to_layer0_attention": compare(ours, theirs, mask & ~first, n),
        "mechscope_cpu_seconds": cpu,
    }
    if like is not None:
        # The reference's input points without the gradient of the layer-0 q/k/v ports (see the
        # module docstring): equal to the peer on every edge if that is the only difference.
        out["reference_input_point"] = compare(like, theirs, mask, n)
    for k, v in out.items():
        if k != "machine":
            print(f"{k}: {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
