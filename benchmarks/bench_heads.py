"""Scoring every head for induction on SmolLM2: against one plain forward, and TransformerLens.

On the built-in SmolLM2-135M (30 layers x 9 heads), for ``--seqs`` sequences ``[bos] + x + x``
of 2 x ``--seq-len`` random word tokens (default 64 x 2 x 50, the goal of issue 4), it times:

- ``forward``: one plain forward of the whole batch (``model(tokens)``, SDPA attention, logits);
- ``induction``: ``head_scores(model, ["induction"])``: all 270 heads, one batched pass with
  eager attention, each layer's pattern reduced in its hook, stopped after the last attention;
- ``4 pattern detectors``: induction, previous-token, duplicate-token and attention sink at once;
- ``TL detect_head``: TransformerLens's ``detect_head(bridge, texts, "induction_head")`` on the
  same sequences as text (they re-tokenise to exactly the same ids; checked), which runs one
  forward per sequence and scores each head in a Python loop.

After one warm-up, each round runs every variant once in a shuffled order; the table gives the
median CPU time (``--threads 1``: CPU time is steady on a shared machine) and the ratio to the
plain forward. TL runs ``--tl-repeats`` rounds (default 1: it is slow). Everything runs on
``--device`` (auto: cuda when available), timed between ``torch.cuda.synchronize`` calls on a GPU
(where wall time is the figure).

    OMP_NUM_THREADS=1 python benchmarks/bench_heads.py --threads 1 [--device cpu|cuda|auto]
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
from collections.abc import Callable
from typing import Any

import torch

import mechscope
from machine import add_device_option, cpu_name, device_label, pick_device, timed
from mechscope.heads import head_scores, repeated_tokens
from mechscope.models.loading import load_hf

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
PATTERN = ["induction", "previous_token", "duplicate_token", "attention_sink"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seqs", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tl-repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-tl", action="store_true", help="skip TransformerLens")
    add_device_option(p)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    device = args.device = pick_device(args.device)
    hf, tokenizer, _ = load_hf("smollm2-135m", device=device, progress=False)
    model = mechscope.HookedModel(copy.deepcopy(hf), tokenizer)
    tokens = repeated_tokens(model, args.seqs, args.seq_len, seed=0).to(device)
    variants: dict[str, Callable[[], Any]] = {
        "forward": lambda: model(tokens),
        "induction": lambda: head_scores(model, ["induction"], tokens=tokens),
        "4 pattern detectors": lambda: head_scores(model, PATTERN, tokens=tokens),
    }
    texts: list[str] = []
    if not args.no_tl:
        from transformer_lens.head_detector import detect_head
        from transformer_lens.model_bridge import TransformerBridge

        bridge = TransformerBridge.boot_transformers(
            HUB_ID, hf_model=copy.deepcopy(hf), tokenizer=tokenizer, device=device
        )
        texts = [tokenizer.decode(row[1:]) for row in tokens.cpu()]
        for row, text in zip(tokens, texts, strict=True):
            if not torch.equal(bridge.to_tokens(text)[0].to(device), row):
                raise SystemExit("a sequence does not re-tokenise to the same ids")
        variants["TL detect_head"] = lambda: detect_head(bridge, texts, "induction_head")
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
    results: dict[str, Any] = {}
    order = list(variants)
    with torch.inference_mode():
        for fn in variants.values():  # warm-up (TL: one sequence)
            if fn is variants.get("TL detect_head"):
                detect_head(bridge, texts[0], "induction_head")
            else:
                fn()
        for r in range(args.repeats):
            random.Random(r).shuffle(order)
            for key in order:
                if key == "TL detect_head" and r >= args.tl_repeats:
                    continue
                out, wall, cpu = timed(variants[key], device)
                times[key].append((wall, cpu))
                results[key] = out
                print(f"round {r + 1} {key}: {wall:.2f} s wall, {cpu:.2f} s cpu", flush=True)
    report(args, times, results)


def report(args: argparse.Namespace, times: dict, results: dict) -> None:
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
           for k, v in times.items()}  # fmt: skip
    base = med["forward"]
    print(f"\nSmolLM2-135M, all 270 heads, {args.seqs} x (bos + 2 x {args.seq_len}) tokens, "
          f"{args.threads} thread(s)")  # fmt: skip
    print(f"{'variant':<22}{'wall s':>8}{'cpu s':>8}{'cpu / forward':>15}")
    for k, (wall, cpu) in med.items():
        print(f"{k:<22}{wall:>8.2f}{cpu:>8.2f}{cpu / base[1]:>15.2f}")
    if "TL detect_head" in med:
        ratio = med["TL detect_head"][1] / med["induction"][1]
        print(f"TL detect_head / mechscope induction (cpu): {ratio:.1f}x")
        ours = results["induction"].scores["induction"].cpu()
        theirs = results["TL detect_head"].cpu() * tokens_per_row(args) / args.seq_len
        print(f"max |ours - TL x pos / seq_len| = {float((ours - theirs).abs().max()):.2e}")
    top = results["induction"].top("induction", 5)
    print("top induction heads: " + ", ".join(f"L{la}H{h} {v:.3f}" for la, h, v in top))
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
          f"torch {torch.__version__}; device {device_label(args.device)}")  # fmt: skip


def tokens_per_row(args: argparse.Namespace) -> int:
    return 1 + 2 * args.seq_len


if __name__ == "__main__":
    main()
