"""Attribution graphs on the built-in SmolLM2-135M: a 16-token IOI prompt and a long prompt (time,
peak memory, scores, what the pruned IOI graph shows, checked by ``graph verify``), and the same
graph built by circuit-tracer (its nnsight backend, in its own venv) with the same transcoders.

Transcoders: a folder written by ``mechscope graph train`` for all 30 layers (``--transcoders``).
Each graph is built in a fresh child process, so its peak RSS (``ru_maxrss``) is the graph's own
(model and transcoders included). The peer comparison needs JumpReLU or ReLU transcoders
(circuit-tracer's per-layer loader reads no TopK): a TopK set is turned into JumpReLU with one
threshold per layer (the pre-activation quantile that gives L0 = k on the prompt), saved in
circuit-tracer's layout, and both tools attribute the same token ids with it. Edge weights are
compared over the nodes both graphs have; mechscope runs with ``zero_first`` (circuit-tracer's
default: no features at position 0, their part in the error nodes there).

    OMP_NUM_THREADS=1 python benchmarks/bench_graphs.py --transcoders DIR [--peer VENV]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from machine import add_device_option, machine, pick_device  # noqa: E402

IOI = "When Mary and John went to the store, John gave a bottle of milk to"
HERE = Path(__file__).parent


def _child(job: dict[str, Any], queue: Any) -> None:
    torch.set_num_threads(1)
    import mechscope
    from mechscope.graphs import GraphConfig, attribute
    from mechscope.graphs.tcfiles import load_transcoders

    model = mechscope.load("smollm2-135m", progress=False, device=job.get("device", "cpu"))
    tcs = load_transcoders(job["transcoders"], model)
    tokens = torch.tensor(job["tokens"])
    cfg = GraphConfig(max_feature_nodes=job["max_feature_nodes"], max_memory=job["budget"],
                      batch_size=job.get("batch_size"), zero_first=job.get("zero_first", False))  # fmt: skip
    start, cpu = time.perf_counter(), time.process_time()
    g = attribute(model, tcs, tokens, cfg, quiet=True, prompt=job.get("prompt", ""))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    replacement, completeness = g.scores()
    out = {"seconds": seconds, "cpu_seconds": cpu, "n_pos": len(job["tokens"]), "n_active": g.n_active,
           "n_features": g.n_features, "replacement": replacement, "completeness": completeness,
           "logits": list(zip(g.logit_strs, g.logit_probs.tolist()))}  # fmt: skip
    if job.get("analyse"):
        out.update(_analyse(model, tcs, g))
    if job.get("fvu_tokens"):
        out["heldout_fvu"] = _fvu(model, tcs, job["fvu_tokens"])
    if job.get("save"):
        torch.save({"adjacency": g.adjacency, "features": g.features, "logits": g.logit_tokens},
                   job["save"])  # fmt: skip
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    queue.put(out)


def _analyse(model: Any, tcs: Any, g: Any) -> dict[str, Any]:
    """Which kept features write most to the top logit, and graph verify on the top three."""
    from mechscope.graphs.verify import verify

    payload = g.to_dict()
    top = g.logit_index(0)
    ids = g.node_ids()
    kept = {n["node_id"] for n in payload["nodes"]}
    feats = [i for i in range(g.n_features) if ids[i] in kept]
    feats.sort(key=lambda i: -abs(g.edge(top, i)))
    rows = []
    for i in feats[:8]:
        layer, pos, f = g.features[i].tolist()
        rows.append({"node": ids[i], "token": g.str_tokens[pos], "edge_to_top_logit":
                     g.edge(top, i), "activation": float(g.activations[i])})  # fmt: skip
    checks = verify(model, tcs, g, [r["node"] for r in rows[:3]], mode="ablate")
    target = ids[top]
    ver = []
    for c in checks:
        j = c.targets.index(target)
        ver.append({"node": c.node, "predicted": c.predicted[j], "measured": c.measured[j]})
    return {"top_logit": g.logit_strs[0], "carriers": rows, "verify": ver,
            "kept_nodes": len(payload["nodes"]), "kept_links": len(payload["links"])}  # fmt: skip


def _fvu(model: Any, tcs: Any, docs: list[list[int]]) -> float:
    """Fraction of the MLP outputs' variance the transcoders leave unexplained on held-out
    windows (all layers pooled, position 0 left out)."""
    from mechscope.graphs.attribute import encode_prompt
    from mechscope.graphs.freeze import snapshot

    err = var = 0.0
    for tokens in docs:
        snap = snapshot(model, torch.tensor(tokens))
        feats = encode_prompt(tcs.to(snap.mlp_out.dtype), snap)
        out = snap.mlp_out[:, 1:]
        err += float((feats.error[:, 1:] ** 2).sum())
        var += float(((out - out.mean(1, keepdim=True)) ** 2).sum())
    return err / var


def run(job: dict[str, Any]) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(job, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def _jumprelu_copy(src: str, tokens: list[int], dst: Path) -> None:
    """The TopK set as JumpReLU, one threshold per layer giving L0 = k on ``tokens``."""
    import mechscope
    from mechscope.graphs.freeze import snapshot
    from mechscope.graphs.tcfiles import load_transcoders, save_transcoders

    model = mechscope.load("smollm2-135m", progress=False)
    tcs = load_transcoders(src, model)
    if tcs.activation == "topk":
        snap = snapshot(model, torch.tensor(tokens))
        q = 1 - (tcs.k or 1) / tcs.d_sae
        thr = [tcs.pre_activations(i, snap.mlp_in[i]).flatten().quantile(q).clamp_min(1e-3)
               for i in range(tcs.n_layers)]  # fmt: skip
        tcs.threshold = [t.expand(tcs.d_sae).clone() for t in thr]
        tcs.activation, tcs.k = "jumprelu", None
    save_transcoders(tcs, dst, "circuit_tracer")


def _compare(ours: dict, theirs: dict, n_layers: int, n_pos: int) -> dict[str, float]:
    """Max relative difference of edge weights over the nodes both graphs have."""
    ours_f = {tuple(f): i for i, f in enumerate(ours["features"].tolist())}
    act = theirs["active_features"][theirs["selected_features"]].tolist()
    common = [(ours_f[tuple(f)], j) for j, f in enumerate(act) if tuple(f) in ours_f]
    n_o, n_t = ours["features"].shape[0], len(act)
    errs = list(range(n_layers * n_pos))
    tok = list(range(n_layers * n_pos, n_layers * n_pos + n_pos))
    n_logit = len(ours["logits"])
    idx_o = [i for i, _ in common] + [n_o + e for e in errs + tok]
    idx_t = [j for _, j in common] + [n_t + e for e in errs + tok]
    rows_o = [i for i, _ in common] + list(
        range(ours["adjacency"].shape[0] - n_logit, ours["adjacency"].shape[0])
    )
    rows_t = [j for _, j in common] + list(
        range(theirs["adjacency"].shape[0] - n_logit, theirs["adjacency"].shape[0])
    )
    a = ours["adjacency"][rows_o][:, idx_o].double()
    b = theirs["adjacency"][rows_t][:, idx_t].double()
    return {"common_features": len(common), "ours_features": n_o, "theirs_features": n_t,
            "max_abs_diff_over_max": float((a - b).abs().max() / b.abs().max())}  # fmt: skip


def _hf4_copy(src: Path, dst: Path) -> Path:
    """The model folder as transformers 4.x reads it (circuit-tracer's pin): weights linked, the
    tokenizer class and ``rope_theta`` written the 4.x way."""
    dst.mkdir(parents=True)
    for name in ("model.safetensors", "tokenizer.json", "generation_config.json"):
        if (src / name).exists():
            (dst / name).symlink_to(src / name)
    config = json.loads((src / "config.json").read_text())
    config.update(config.get("rope_parameters") or {})
    config["torch_dtype"] = config.get("dtype", "float32")
    (dst / "config.json").write_text(json.dumps(config))
    tok = json.loads((src / "tokenizer_config.json").read_text())
    tok["tokenizer_class"] = "PreTrainedTokenizerFast"
    (dst / "tokenizer_config.json").write_text(json.dumps(tok))
    return dst


def peer(args: argparse.Namespace, tokens: list[int]) -> dict[str, Any]:
    from mechscope.models.loading import load_hf

    tmp = Path(tempfile.mkdtemp(prefix="bench-graphs-"))
    _jumprelu_copy(args.transcoders, tokens, tmp / "tc")
    (tmp / "tokens.json").write_text(json.dumps(tokens))
    mine = run({"transcoders": str(tmp / "tc"), "tokens": tokens, "budget": args.budget,
                "max_feature_nodes": args.peer_features, "batch_size": args.batch_size,
                "save": str(tmp / "ours.pt"), "zero_first": True})  # fmt: skip
    from mechscope.files import cache_root, sha256_file

    _, _, prov = load_hf("smollm2-135m", progress=False)  # the HF folder converted from the GGUF
    converted = cache_root() / "gguf" / sha256_file(prov["path"])[:16]
    folder = _hf4_copy(converted, tmp / "model")
    cmd = [f"{args.peer}/bin/python", str(HERE / "peers" / "run_circuit_tracer.py"), str(folder),
           str(tmp / "tc"), str(tmp / "tokens.json"), str(tmp / "theirs.safetensors"),
           "--max-feature-nodes", str(args.peer_features), "--batch-size", str(args.batch_size)]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {
            "mechscope_seconds": mine["seconds"],
            "error": done.stderr.strip().splitlines()[-1:],
        }
    from safetensors import safe_open
    from safetensors.torch import load_file

    theirs = load_file(str(tmp / "theirs.safetensors"))
    with safe_open(str(tmp / "theirs.safetensors"), "pt") as f:
        seconds, cpu = float(f.metadata()["seconds"]), float(f.metadata()["cpu_seconds"])
    ours = torch.load(tmp / "ours.pt", weights_only=True)
    cmp = _compare(ours, theirs, 30, len(tokens))
    return {"mechscope_seconds": mine["seconds"], "mechscope_cpu_seconds": mine["cpu_seconds"],
            "circuit_tracer_seconds": seconds, "circuit_tracer_cpu_seconds": cpu,
            "circuit_tracer_process_seconds": wall, "cpu_ratio": cpu / mine["cpu_seconds"],
            "same_logits": ours["logits"] == theirs["logit_tokens"].tolist(), **cmp}  # fmt: skip


def peer_tiny(args: argparse.Namespace) -> dict[str, Any]:
    """The same comparison on a random tiny Llama (3 layers) with random JumpReLU transcoders."""
    sys.path.insert(0, str(HERE.parent / "tests" / "graphs"))
    from graphkit import random_set

    from mechscope.graphs import GraphConfig, attribute
    from mechscope.graphs.tcfiles import save_transcoders
    from mechscope.models.hooked import HookedModel
    from mechscope.models.tiny import tiny_model, tiny_tokenizer

    tmp = Path(tempfile.mkdtemp(prefix="bench-graphs-tiny-"))
    words = [
        "When",
        "Mary",
        "and",
        "John",
        "went",
        "to",
        "the",
        "store",
        ",",
        "gave",
        "a",
        "drink",
        "to",
    ]
    tiny_model("llama").save_pretrained(tmp / "model")
    tiny_tokenizer(words).save_pretrained(tmp / "model")
    conf = tmp / "model" / "tokenizer_config.json"  # transformers 4.x cannot read the 5.x name
    conf.write_text(
        json.dumps({**json.loads(conf.read_text()), "tokenizer_class": "PreTrainedTokenizerFast"})
    )
    model = HookedModel(tiny_model("llama"), tiny_tokenizer(words))
    tcs = random_set(model, activation="jumprelu").to(torch.float32)
    save_transcoders(tcs, tmp / "tc", "circuit_tracer")
    tokens = [1] + model.to_tokens(" ".join(words))[0].tolist()  # a special token first
    (tmp / "tokens.json").write_text(json.dumps(tokens))
    start = time.process_time()
    g = attribute(model, tcs, torch.tensor(tokens), GraphConfig(batch_size=args.batch_size or 32,
                  zero_first=True), quiet=True)  # fmt: skip
    mine = time.process_time() - start
    cmd = [f"{args.peer}/bin/python", str(HERE / "peers" / "run_circuit_tracer.py"), str(tmp / "model"),
           str(tmp / "tc"), str(tmp / "tokens.json"), str(tmp / "theirs.safetensors"),
           "--batch-size", str(args.batch_size or 32)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    from safetensors import safe_open
    from safetensors.torch import load_file

    theirs = load_file(str(tmp / "theirs.safetensors"))
    with safe_open(str(tmp / "theirs.safetensors"), "pt") as f:
        seconds = float(f.metadata()["cpu_seconds"])
    ours = {"adjacency": g.adjacency, "features": g.features, "logits": g.logit_tokens}
    return {"mechscope_cpu_seconds": mine, "circuit_tracer_cpu_seconds": seconds,
            "same_logits": ours["logits"] == theirs["logit_tokens"].tolist(),
            **_compare(ours, theirs, model.dims.n_layers, len(tokens))}  # fmt: skip


def compare_clt(args: argparse.Namespace, model: Any, tokens: list[int], device: Any) -> dict:
    """The IOI graph (``--ioi-features`` nodes) and the held-out FVU of the CLT ``--clt`` and of
    the per-layer set ``--transcoders``, same prompt and budget."""
    from mechscope.corpus import load_corpus
    from mechscope.corpus.windows import tokenize_corpus

    docs = tokenize_corpus(load_corpus(None), model.tokenizer, split="test")
    held = [d[:128].tolist() for d in docs if len(d) >= 128][:4]
    out = {}
    for name, folder in (("per_layer", args.transcoders), ("clt", args.clt)):
        out[name] = run({"transcoders": folder, "tokens": tokens, "prompt": IOI,
                         "budget": args.budget, "max_feature_nodes": args.ioi_features,
                         "batch_size": args.batch_size, "fvu_tokens": held,
                         "device": str(device)})  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transcoders", required=True)
    parser.add_argument("--budget", type=float, default=8e9)
    parser.add_argument("--ioi-features", type=int, default=1024)
    parser.add_argument("--long", type=int, default=1024)
    parser.add_argument("--long-features", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--peer", help="circuit-tracer venv (setup_circuit_tracer.sh)")
    parser.add_argument("--peer-features", type=int, default=256)
    parser.add_argument(
        "--clt", help="a CLT folder: its IOI graph and held-out FVU beside --transcoders'"
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=["ioi", "long", "peer", "tiny"])
    add_device_option(parser)  # where mechscope's graphs run (circuit-tracer runs on the CPU)
    args = parser.parse_args()
    device = pick_device(args.device)
    import mechscope

    model = mechscope.load("smollm2-135m", progress=False)
    tokens = model.to_tokens(IOI, prepend_bos=True)[0].tolist()
    results: dict[str, Any] = {"machine": machine(device), "ioi_tokens": len(tokens)}
    if "ioi" not in args.skip:
        results["ioi"] = run({"transcoders": args.transcoders, "tokens": tokens, "prompt": IOI,
                              "budget": args.budget, "max_feature_nodes": args.ioi_features,
                              "batch_size": args.batch_size, "analyse": True, "device": str(device)})  # fmt: skip
        print(json.dumps({"ioi": results["ioi"]}, indent=1), flush=True)
    if "long" not in args.skip:
        from mechscope.corpus import load_corpus
        from mechscope.corpus.windows import tokenize_corpus

        docs = tokenize_corpus(load_corpus(None), model.tokenizer, split="test")
        long = next(d for d in docs if len(d) >= args.long)[: args.long].tolist()
        results["long"] = run({"transcoders": args.transcoders, "tokens": long, "budget": args.budget,
                               "max_feature_nodes": args.long_features, "batch_size": args.batch_size,
                               "device": str(device)})  # fmt: skip
        print(json.dumps({"long": results["long"]}, indent=1), flush=True)
    if args.clt:
        results["clt"] = compare_clt(args, model, tokens, device)
        print(json.dumps({"clt": results["clt"]}, indent=1), flush=True)
    if args.peer and "tiny" not in args.skip:
        results["peer_tiny"] = peer_tiny(args)
        print(json.dumps({"peer_tiny": results["peer_tiny"]}, indent=1), flush=True)
    if args.peer and "peer" not in args.skip:
        results["peer"] = peer(args, tokens)
        print(json.dumps({"peer": results["peer"]}, indent=1), flush=True)
    results["load_average_end"] = os.getloadavg()
    json.dump(results, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
