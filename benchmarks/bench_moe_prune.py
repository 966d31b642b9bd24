"""Expert pruning guides against random pruning, evaluated like ``mechscope compress``.

Two model sets, ``--seeds`` models each:

- planted: the planted MoE (``mechscope.moe.planted``; 4 token classes on 4 experts, top 2, 2
  layers) trained with seeds 0..S-1; the guides read 16 chains (seed 100 + s), the evaluation
  64 other chains (seed 200 + s) and 64 chain prompts (the next-token logit difference against
  another token of the class);
- random: the tiny random-init config of every MoE family (Mixtral, GPT-OSS, Qwen2-MoE, OLMoE;
  4 experts, top 2, 2 layers) with init seeds 0..S-1, on random-token windows (guides 16,
  evaluation 32 other windows).

For each model, ``prune_report`` removes 1 and 2 experts per layer by every guide (reroute and
ablation effect, load, router weight), by 5 random orders, and merges the 1 or 2 most CKA-similar
pairs, and evaluates with ``compress.evaluate.measure``. Printed per set, guide and experts
removed: the mean over models of the held-out loss change, the KL to the full model and (planted)
the task logit difference, each with a 95% bootstrap interval over the models, then the ratio of
each guide's KL to random's (the peer measured in the same run).

    nice -n 5 python benchmarks/bench_moe_prune.py [--seeds 5]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from machine import add_device_option, machine, pick_device  # noqa: E402

torch.set_num_threads(1)

GUIDES = ("reroute_effect", "ablate_effect", "load", "router_weight", "cka_merge", "random")


def planted_report(seed: int) -> dict:
    from mechscope.moe import moe_analysis
    from mechscope.moe.planted import chain_batch, chain_task, train_planted_moe
    from mechscope.moe.prune import prune_report

    p = train_planted_moe(steps=300, seed=seed)
    ids = torch.tensor(sorted(p.classes))

    def chains(s: int, n: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(s)
        return chain_batch(p.successor, ids[torch.randint(len(ids), (n,), generator=g)], 16)

    r = moe_analysis(p.model, chains(100 + seed, 16), classes=p.classes,
                     class_names=p.class_names, cka_windows=8, causal_windows=16)  # fmt: skip
    sets = {"lm": chains(200 + seed, 64), "task": chain_task(p, 64, seed=300 + seed)}
    return prune_report(p.model, r, sets)


def random_report(kind: str, seed: int) -> dict:
    from mechscope import HookedModel
    from mechscope.models.tiny import VOCAB, tiny_model, tiny_tokenizer
    from mechscope.moe import moe_analysis
    from mechscope.moe.prune import prune_report

    torch.manual_seed(seed)
    model = HookedModel(tiny_model(kind), tiny_tokenizer())
    g = torch.Generator().manual_seed(seed)
    guide, held_out = (torch.randint(2, VOCAB, (n, 32), generator=g) for n in (16, 32))
    r = moe_analysis(model, guide, cka_windows=8, causal_windows=16)
    return prune_report(model, r, {"lm": held_out})


def ci(values: list[float], spec: str = "+.3g") -> str:
    """Mean and 95% bootstrap interval over the models."""
    from mechscope.stats import bootstrap_ci

    a = np.asarray(values)
    low, high = bootstrap_ci(a) if len(a) > 1 else (a[0], a[0])
    return f"{a.mean():{spec}} [{low:{spec}}, {high:{spec}}]"


def table(name: str, reports: list[dict], task: bool) -> None:
    print(f"\n### {name} ({len(reports)} models)\n")
    head = ["guide", "removed / layer", "loss change", "KL", "KL / random"]
    head += ["task logit diff change", "loss vs random (paired)"] if task else []
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for guide in GUIDES:
        for i in range(len(reports[0]["curves"][guide])):
            pts = [r["curves"][guide][i] for r in reports]
            rnd = [r["curves"]["random"][i] for r in reports]
            kl = [p["value"]["kl"]["mean"] for p in pts]
            ratio = np.mean(kl) / np.mean([p["value"]["kl"]["mean"] for p in rnd])
            row = [guide, str(pts[0]["n"]), ci([p["delta"]["lm"]["mean"] for p in pts]),
                   ci(kl, ".3g"), f"{ratio:.2f}"]  # fmt: skip
            if task:
                row.append(ci([p["delta"]["task"]["mean"] for p in pts]))
                vs = [p["value"]["lm"]["mean"] - q["value"]["lm"]["mean"] for p, q in zip(pts, rnd)]
                row.append(ci(vs) if guide != "random" else "-")
            print("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    add_device_option(parser)
    args = parser.parse_args()
    device = pick_device(args.device)
    if device.type != "cpu":  # the planted and tiny MoE models are built on the CPU
        raise SystemExit("error: this benchmark runs on the CPU only for now; use --device cpu")
    began, cpu = time.perf_counter(), time.process_time()
    print(" · ".join(f"{k} {v}" for k, v in machine(device).items()))
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    planted = [planted_report(s) for s in range(args.seeds)]
    table("planted MoE (chains; task = next-token logit difference)", planted, task=True)
    for kind in ("mixtral", "gpt_oss", "qwen2_moe", "olmoe"):
        reports = [random_report(kind, s) for s in range(args.seeds)]
        table(f"tiny random {kind}", reports, task=False)
    print(f"\n{time.perf_counter() - began:.0f} s wall, {time.process_time() - cpu:.0f} s CPU; "
          f"load average at end: {os.getloadavg()[0]:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
