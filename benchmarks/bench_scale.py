"""Scaling of `mechscope harvest`, `sae train` and `features build` from one process to two.

Builds a random Llama (``--d-model``, ``--layers``) with a word-level tokenizer and a corpus of
random words in a temporary folder, then runs each command as a user would: once as one process,
once as ``torchrun --standalone --nproc-per-node 2 --no-python mechscope ...`` (gloo, one torch
thread per process). Prints wall and CPU seconds (the children's), tokens/s, the speed-up of two
processes over one (the peer is the one-process run), and checks that the two stores are
identical, the two SAEs agree to float tolerance and the two feature databases (MLP neurons of the
last layer and the one-process SAE's latents, ``--feature-tokens`` tokens) are identical row for
row. Read the speed-up with the load average it
prints: on a 2-core machine shared with other jobs, two processes only help when a core is free.

    python benchmarks/bench_scale.py --tokens 65536
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from machine import add_device_option, machine, pick_device  # noqa: E402

SITE = "blocks.3.hook_resid_post"


def setup(root: Path, args: argparse.Namespace) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from mechscope.models.tiny import tiny_tokenizer

    words = [f"w{i:04d}" for i in range(1000)]
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=1002, hidden_size=args.d_model, intermediate_size=4 * args.d_model,
                      num_hidden_layers=args.layers, num_attention_heads=8, num_key_value_heads=4,
                      max_position_embeddings=256)  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(root / "model")
    tiny_tokenizer(words, n_vocab=1002).save_pretrained(root / "model")
    rng = random.Random(0)
    docs = [
        " ".join(rng.choice(words) for _ in range(2000)) for _ in range(args.tokens // 1500 + 8)
    ]
    (root / "text.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))


def run(cmd: list[str]) -> tuple[float, float]:
    """Wall and children's CPU seconds of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                   stdout=subprocess.DEVNULL)  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return time.perf_counter() - start, cpu


def launcher(procs: int) -> list[str]:
    if procs == 1:
        return ["mechscope"]
    return ["torchrun", "--standalone", f"--nproc-per-node={procs}", "--no-python", "mechscope"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=65536)
    parser.add_argument("--shard-tokens", type=int, default=8192)
    parser.add_argument("--sae-batch", type=int, default=1024)
    parser.add_argument("--feature-tokens", type=int, default=32768)
    add_device_option(parser)
    args = parser.parse_args()
    device = pick_device(args.device)
    if device.type != "cpu":
        raise SystemExit("error: bench_scale measures CPU processes over gloo; use --device cpu")
    print(" · ".join(f"{k} {v}" for k, v in machine(device).items()))
    print("load average before:", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        setup(root, args)
        times = {}
        for procs in (1, 2):
            harvest = [*launcher(procs), "harvest", "-m", str(root / "model"), "-s", SITE,
                       "-c", str(root / "text.jsonl"), "-n", str(args.tokens),
                       "--shard-tokens", str(args.shard_tokens), "-o", str(root / f"acts{procs}"),
                       "--quiet"]  # fmt: skip
            train = [*launcher(procs), "sae", "train", "--acts", str(root / f"acts{procs}"),
                     "--arch", "topk", "--k", "32", "--expansion", "8", "--batch-size",
                     str(args.sae_batch), "--out", str(root / f"sae{procs}"), "--quiet"]  # fmt: skip
            features = [*launcher(procs), "features", "build", "-m", str(root / "model"),
                        "-s", f"mlp:{args.layers - 1}", "-s", f"sae:{root / 'sae1'}",
                        "--corpus", str(root / "text.jsonl"), "-n", str(args.feature_tokens),
                        "--out", str(root / f"features{procs}.db"), "--quiet"]  # fmt: skip
            times[procs] = (run(harvest), run(train), run(features))
        report(root, args, times)


def report(root: Path, args: argparse.Namespace, times: dict) -> None:
    from safetensors.torch import load_file

    from mechscope.activations import ActivationStore

    one, two = ActivationStore.open(root / "acts1"), ActivationStore.open(root / "acts2")
    same = torch.equal(one.tensor(SITE), two.tensor(SITE))
    a = load_file(root / "sae1" / "sae_weights.safetensors")
    b = load_file(root / "sae2" / "sae_weights.safetensors")
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"random Llama d_model {args.d_model}, {args.layers} layers; harvest {one.n_tokens:,} "
          f"tokens of {SITE}; TopK SAE 8x, k 32, batch {args.sae_batch}")  # fmt: skip
    for i, name in enumerate(("harvest", "sae train", "features build")):
        (w1, c1), (w2, c2) = times[1][i], times[2][i]
        n = args.feature_tokens if i == 2 else one.n_tokens
        print(f"{name}: 1 process {w1:.1f} s wall ({c1:.1f} s CPU), 2 processes {w2:.1f} s wall "
              f"({c2:.1f} s CPU); speed-up {w1 / w2:.2f}x, "
              f"{n / w1:,.0f} -> {n / w2:,.0f} tokens/s")  # fmt: skip
    from mechscope.features.db import sqlite_rows

    dbs = [sqlite_rows(root / f"features{p}.db") for p in (1, 2)]
    print(f"stores identical: {same}; SAE weights max |diff| {diff:.2e}; feature databases "
          f"identical: {dbs[0] == dbs[1]} ({sum(len(v) for v in dbs[0].values()):,} rows)")  # fmt: skip
    print("load average after:", " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
